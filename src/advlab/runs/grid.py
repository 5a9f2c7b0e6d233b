"""``advlab run SPEC.toml``: a spec's cells through an executor, into the results store.

* ``local`` (default): one cell after another in this process, a progress bar over the grid.
* ``torchrun``: the command started by ``torchrun --nproc-per-node K -m advlab run SPEC``; the
  ranks go through the cells together: a robust-accuracy cell's attack calls are sharded over
  the K ranks and its per-point records merged into one cell (equal to the local executor's
  rows); a train cell trains data-parallel on the K ranks (its weights then differ from a
  one-process training, as any data-parallel run's do); any other cell runs on rank 0 while the
  others wait. Rank 0 alone opens and writes the store.
* ``ray``: one Ray task per cell (Ray's local cluster unless ``address`` names one), resources
  declared per task (``cpus_per_cell`` CPUs, ``gpus_per_cell`` GPUs); models a later cell needs are
  trained in a first wave. The driver is the only writer to the store: tasks return their rows.
  Rows equal the local executor's with the same seeds (each cell seeds itself from its config).

A finished cell is skipped on the next run; a failed cell is stored with its error and retried on
the next run, and the rest of the grid goes on (a cell whose model failed to train is failed too,
naming that cell).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from advlab.runs.cells import run_cell
from advlab.runs.spec import Cell, Spec
from advlab.runs.store import Store

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray", "torchrun")
#: the kinds every torchrun rank runs together: a robust cell's attack calls are dealt out over
#: the ranks; a train cell trains data-parallel (advlab.defenses.train under a process group)
SHARDED_KINDS = ("robust", "train")


@dataclass
class RunSummary:
    run_id: int
    done: list[str] = field(default_factory=list)       # finished in this run
    skipped: list[str] = field(default_factory=list)    # already done before
    failed: dict[str, str] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)   # left to another run that holds it
    seconds: float = 0.0
    #: an :class:`~advlab.runs.tracking.MlflowTracker` each stored cell is also logged to
    tracker: Any = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return "failed" if self.failed else "done"

    def text(self) -> str:
        parts = [f"{len(self.done)} cell(s) done", f"{len(self.skipped)} already done"]
        if self.taken:
            parts.append(f"{len(self.taken)} left to run(s) {', '.join(map(str, sorted(set(self.taken.values()))))} "
                         "running them on this store")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (stored with their errors; the next run retries them)")
        return f"run {self.run_id}: " + ", ".join(parts) + f" in {self.seconds:.1f} s"


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_spec(spec: Spec, store: Store | None, *, executor: str = "local", address: str | None = None,
             data_dir: str | None = None, device: str = "cpu", progress: bool = True,
             cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0, threads: int | None = None,
             on_cell: Callable[[Cell, str], None] | None = None, tracker: Any = None) -> RunSummary:
    """Run every cell of ``spec`` not already done in ``store``; return what happened.

    ``threads``: torch threads per cell (default: torch's own locally, ``cpus_per_cell`` in a Ray
    task). Floating-point sums depend on it, so the executors store bit-identical rows when it
    is the same (``threads=1`` locally equals Ray with one CPU per cell).

    ``tracker``: an :class:`~advlab.runs.tracking.MlflowTracker`; each cell stored is also logged there.

    ``store`` is ``None`` on the ranks other than 0 of a ``torchrun`` executor (only rank 0 writes)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'advlab[ray]' (or pip install ray)") from None
    from advlab.models.user import resolve_device

    resolve_device(device)  # a device that is not there fails before anything runs
    if executor == "torchrun":
        return _torchrun(spec, store, data_dir=data_dir, device=device, progress=progress, on_cell=on_cell,
                         threads=threads, tracker=tracker)
    t0 = time.perf_counter()
    run_id = store.start_run(spec_name=spec.name, spec_path=str(spec.path) if spec.path else None,
                             spec_text=spec.text, executor=executor)
    summary = RunSummary(run_id=run_id, tracker=tracker)
    done = store.done()
    todo = [c for c in spec.cells if c.hash not in done]
    summary.skipped = [c.hash for c in spec.cells if c.hash in done]
    status = "failed"
    try:
        if executor == "local":
            import torch

            before = torch.get_num_threads()
            if threads is not None:
                torch.set_num_threads(threads)
            try:
                _local(todo, store, summary, data_dir=data_dir, device=device, progress=progress, on_cell=on_cell)
            finally:
                torch.set_num_threads(before)
        else:
            _ray(todo, store, summary, address=address, data_dir=data_dir, device=device, progress=progress,
                 cpus=cpus_per_cell, gpus=gpus_per_cell, threads=threads or max(1, int(cpus_per_cell)),
                 on_cell=on_cell)
        status = summary.status
    finally:
        summary.seconds = time.perf_counter() - t0
        store.finish_run(run_id, status if status else "interrupted")
    return summary


def _claim(store: Store, summary: RunSummary, cell: Cell) -> bool:
    """Whether this run should run ``cell`` now (it took the claim); otherwise noted in ``summary``."""
    verdict, other = store.claim(cell.hash, summary.run_id)
    if verdict == "done":
        summary.skipped.append(cell.hash)
    elif verdict == "taken":
        summary.taken[cell.hash] = int(other or 0)
    return verdict == "run"


def _await_needs(store: Store, summary: RunSummary, cell: Cell, *, poll_s: float = 0.5) -> str | None:
    """Wait until the model cells ``cell`` needs that another run holds are done; the reason it
    cannot run if one failed or was abandoned (its run killed before finishing it)."""
    for h in cell.needs:
        other = summary.taken.get(h)
        if other is None:
            continue
        while True:
            status = store.status([h]).get(h)
            if status == "done":
                break
            if status == "failed":
                return f"needs model cell {h}, which failed in run {other}"
            if store.holder(h) is None:
                return (f"needs model cell {h}, which run {other} took and did not finish (killed?); run again "
                        "to train it")
            time.sleep(poll_s)
    return None


def _waits_on_others(cell: Cell, summary: RunSummary) -> bool:
    return any(h in summary.taken for h in cell.needs)


def _others_finished(store: Store, summary: RunSummary, cell: Cell) -> bool:
    """Whether every model cell ``cell`` needs that another run took is finished by now (done or
    failed, or its run gone): nothing left to wait for."""
    held = [h for h in cell.needs if h in summary.taken]
    if not held:
        return True
    status = store.status(held)
    return all(status.get(h) in ("done", "failed") or store.holder(h) is None for h in held)


def _blocked(cell: Cell, failed: dict[str, str]) -> str | None:
    bad = [h for h in cell.needs if h in failed]
    return f"needs model cell {bad[0]}, which failed: {failed[bad[0]]}" if bad else None


def _store_result(store: Store, summary: RunSummary, cell: Cell, result: Any, error: str | None,
                  seconds: float, on_cell: Callable[[Cell, str], None] | None) -> None:
    if error is None:
        store.record(cell, result, run_id=summary.run_id)
        summary.done.append(cell.hash)
    else:
        store.record_failure(cell, error, seconds=seconds, run_id=summary.run_id)
        summary.failed[cell.hash] = error
        log.warning("cell %s (%s) failed: %s", cell.hash, cell.label, error)
    if summary.tracker is not None:   # after the store: the store is the record, MLflow a view
        summary.tracker.log_cell(cell, result if error is None else None, error, run_id=summary.run_id,
                                 files=store.cell_dir(cell.hash))
    if on_cell is not None:
        on_cell(cell, "failed" if error else "done")


def _local(todo: Sequence[Cell], store: Store, summary: RunSummary, *, data_dir: str | None, device: str,
           progress: bool, on_cell: Callable[[Cell, str], None] | None) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="grid", unit="cell", disable=not progress, leave=True)
    # a cell whose model another run on this store is still training is set aside, and taken up
    # again (in its place in the order) as soon as that model is finished; what is left waits at the
    # end (only model cells are needed, and they need nothing, so one deferral pass suffices)
    deferred: list[Cell] = []
    for cell in todo:
        for ready in [d for d in deferred if _others_finished(store, summary, d)]:
            deferred.remove(ready)
            _local_one(ready, store, summary, bar=bar, data_dir=data_dir, device=device, on_cell=on_cell)
        if not _others_finished(store, summary, cell):
            deferred.append(cell)
        else:
            _local_one(cell, store, summary, bar=bar, data_dir=data_dir, device=device, on_cell=on_cell)
    for cell in deferred:
        _local_one(cell, store, summary, bar=bar, data_dir=data_dir, device=device, on_cell=on_cell)
    bar.close()


def _local_one(cell: Cell, store: Store, summary: RunSummary, *, bar: Any, data_dir: str | None, device: str,
               on_cell: Callable[[Cell, str], None] | None) -> None:
    """One cell in this process: claimed, run, stored (its error stored if it raises)."""
    bar.update(1)
    bar.set_postfix_str(f"{cell.kind} {cell.label}")
    blocked = _blocked(cell, summary.failed) or _await_needs(store, summary, cell)
    if blocked:
        _store_result(store, summary, cell, None, blocked, 0.0, on_cell)
        return
    if not _claim(store, summary, cell):
        return
    t = time.perf_counter()
    try:
        result = run_cell(cell.kind, cell.config, cell.hash, files=store.files, data_dir=data_dir,
                          device=device, progress=False)
    except Exception as exc:  # the rest of the grid goes on; the error is stored
        _store_result(store, summary, cell, None, _error_text(exc), time.perf_counter() - t, on_cell)
        return
    _store_result(store, summary, cell, result, None, result.seconds, on_cell)


def _ray_task(kind: str, config: dict, cell_hash: str, files: str, data_dir: str | None, device: str,
              threads: int) -> tuple[Any, str | None, float]:
    """What a Ray worker runs: one cell, errors returned (not raised) so the driver stores them."""
    import torch

    torch.set_num_threads(max(1, threads))
    t = time.perf_counter()
    try:
        return run_cell(kind, config, cell_hash, files=files, data_dir=data_dir, device=device), None, 0.0
    except Exception as exc:
        return None, _error_text(exc), time.perf_counter() - t


def _ray(todo: Sequence[Cell], store: Store, summary: RunSummary, *, address: str | None, data_dir: str | None,
         device: str, progress: bool, cpus: float, gpus: float, threads: int,
         on_cell: Callable[[Cell, str], None] | None) -> None:
    import ray
    from tqdm.auto import tqdm

    started_here = not ray.is_initialized()
    if started_here:
        env = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
                   os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")) if p)}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": env})
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ray_task)
        bar = tqdm(total=len(todo), desc="grid (ray)", unit="cell", disable=not progress, leave=True)
        waves = [[c for c in todo if c.kind == "train"], [c for c in todo if c.kind != "train"]]
        for wave in waves:
            pending: dict[Any, Cell] = {}
            # cells whose model another run is training go last (their submission waits for it)
            wave = sorted(wave, key=lambda c: _waits_on_others(c, summary))
            for cell in wave:
                blocked = _blocked(cell, summary.failed) or _await_needs(store, summary, cell)
                if blocked:
                    _store_result(store, summary, cell, None, blocked, 0.0, on_cell)
                    bar.update(1)
                    continue
                if not _claim(store, summary, cell):
                    bar.update(1)
                    continue
                ref = task.remote(cell.kind, dict(cell.config), cell.hash, str(store.files), data_dir, device,
                                  threads)
                pending[ref] = cell
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    result, error, seconds = ray.get(ref)
                    _store_result(store, summary, cell, result, error,
                                  result.seconds if result is not None else seconds, on_cell)
                    bar.update(1)
        bar.close()
    finally:
        if started_here:
            ray.shutdown()


def _torchrun(spec: Spec, store: Store | None, *, data_dir: str | None, device: str, progress: bool,
              on_cell: Callable[[Cell, str], None] | None, threads: int | None, tracker: Any) -> RunSummary:
    import torch
    from tqdm.auto import tqdm

    from advlab.runs.distributed import broadcast, gather, join

    ranks = join(device)
    if not ranks.sharded:
        raise ValueError("--executor torchrun: start the command with torchrun, e.g. "
                         "torchrun --nproc-per-node 2 -m advlab run SPEC.toml --store runs.db")
    if ranks.writer != (store is not None):
        raise ValueError("torchrun executor: rank 0, and only rank 0, opens the store")
    t0 = time.perf_counter()
    head = None
    if store is not None:
        run_id = store.start_run(spec_name=spec.name, spec_path=str(spec.path) if spec.path else None,
                                 spec_text=spec.text, executor=f"torchrun ({ranks.world} ranks)")
        head = (run_id, sorted(store.done()), str(store.files))
    got = broadcast(head)
    run_id, done_list, files = got
    done = set(done_list)
    summary = RunSummary(run_id=run_id, tracker=tracker if ranks.writer else None)
    summary.skipped = [c.hash for c in spec.cells if c.hash in done]
    todo = [c for c in spec.cells if c.hash not in done]
    status = "failed"
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        bar = tqdm(todo, desc=f"grid (torchrun, {ranks.world} ranks)", unit="cell",
                   disable=not (progress and ranks.writer), leave=True)
        for cell in bar:
            blocked = _blocked(cell, summary.failed)
            if blocked:
                if store is not None:
                    _store_result(store, summary, cell, None, blocked, 0.0, on_cell)
                else:
                    summary.failed[cell.hash] = blocked
                continue
            if not broadcast(_claim(store, summary, cell) if store is not None else None):
                continue
            result, error = None, None
            t = time.perf_counter()
            if cell.kind in SHARDED_KINDS or ranks.writer:   # sharded kinds on every rank; the rest on rank 0
                try:
                    result = run_cell(cell.kind, cell.config, cell.hash, files=files, data_dir=data_dir,
                                      device=ranks.device, progress=False)
                except Exception as exc:
                    error = _error_text(exc)
            errors = gather(error)     # every rank learns of any failure (and waits here for rank 0)
            bad = [(r, e) for r, e in enumerate(errors) if e]
            error = None if not bad else (bad[0][1] if len(bad) == len(errors) or bad[0][0] == 0
                                          else f"rank {bad[0][0]}: {bad[0][1]}")
            if store is not None:
                _store_result(store, summary, cell, result if error is None else None, error,
                              result.seconds if result is not None and error is None else time.perf_counter() - t,
                              on_cell)
            elif error:
                summary.failed[cell.hash] = error
            else:
                summary.done.append(cell.hash)
        bar.close()
        status = summary.status
    finally:
        torch.set_num_threads(before)
        summary.seconds = time.perf_counter() - t0
        if store is not None:
            store.finish_run(run_id, status)
    return summary
