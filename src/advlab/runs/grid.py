"""``advlab run SPEC.toml``: a spec's cells through an executor, into the results store.

* ``local`` (default): one cell after another in this process, a progress bar over the grid.
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

EXECUTORS = ("local", "ray")


@dataclass
class RunSummary:
    run_id: int
    done: list[str] = field(default_factory=list)       # finished in this run
    skipped: list[str] = field(default_factory=list)    # already done before
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "failed" if self.failed else "done"

    def text(self) -> str:
        parts = [f"{len(self.done)} cell(s) done", f"{len(self.skipped)} already done"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed (stored with their errors; the next run retries them)")
        return f"run {self.run_id}: " + ", ".join(parts) + f" in {self.seconds:.1f} s"


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_spec(spec: Spec, store: Store, *, executor: str = "local", address: str | None = None,
             data_dir: str | None = None, device: str = "cpu", progress: bool = True,
             cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0, threads: int | None = None,
             on_cell: Callable[[Cell, str], None] | None = None) -> RunSummary:
    """Run every cell of ``spec`` not already done in ``store``; return what happened.

    ``threads``: torch threads per cell (default: torch's own locally, ``cpus_per_cell`` in a Ray
    task). Floating-point sums depend on it, so the executors store bit-identical rows when it
    is the same (``threads=1`` locally equals Ray with one CPU per cell)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'advlab[ray]' (or pip install ray)") from None
    from advlab.models.user import resolve_device

    resolve_device(device)  # a device that is not there fails before anything runs
    t0 = time.perf_counter()
    run_id = store.start_run(spec_name=spec.name, spec_path=str(spec.path) if spec.path else None,
                             spec_text=spec.text, executor=executor)
    summary = RunSummary(run_id=run_id)
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
    if on_cell is not None:
        on_cell(cell, "failed" if error else "done")


def _local(todo: Sequence[Cell], store: Store, summary: RunSummary, *, data_dir: str | None, device: str,
           progress: bool, on_cell: Callable[[Cell, str], None] | None) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="grid", unit="cell", disable=not progress, leave=True)
    for cell in bar:
        bar.set_postfix_str(f"{cell.kind} {cell.label}")
        blocked = _blocked(cell, summary.failed)
        if blocked:
            _store_result(store, summary, cell, None, blocked, 0.0, on_cell)
            continue
        t = time.perf_counter()
        try:
            result = run_cell(cell.kind, cell.config, cell.hash, files=store.files, data_dir=data_dir,
                              device=device, progress=False)
        except Exception as exc:  # the rest of the grid goes on; the error is stored
            _store_result(store, summary, cell, None, _error_text(exc), time.perf_counter() - t, on_cell)
            continue
        _store_result(store, summary, cell, result, None, result.seconds, on_cell)
    bar.close()


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
            for cell in wave:
                blocked = _blocked(cell, summary.failed)
                if blocked:
                    _store_result(store, summary, cell, None, blocked, 0.0, on_cell)
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
