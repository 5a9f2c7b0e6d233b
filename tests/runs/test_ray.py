"""#12: the Ray executor (a local Ray cluster, 2 CPUs) stores the same rows as the local executor,
the driver being the only writer; without Ray, --executor ray names the extra to install."""

from __future__ import annotations

import sys

import pytest

from _helpers import require_peer
from advlab.runs.grid import run_spec
from advlab.runs.spec import load_spec
from advlab.runs.store import Store
from test_store_grid import _rows


def test_ray_and_local_executors_store_identical_rows(tmp_path, tiny_spec):
    require_peer("ray")
    spec = load_spec(tiny_spec)
    with Store(tmp_path / "local.db") as store:
        assert run_spec(spec, store, progress=False, threads=1).status == "done"   # as a 1-CPU Ray task
    with Store(tmp_path / "ray.db") as store:
        summary = run_spec(spec, store, executor="ray", progress=False, cpus_per_cell=1)
    assert summary.status == "done" and len(summary.done) == len(spec.cells), summary.failed
    assert _rows(tmp_path / "ray.db") == _rows(tmp_path / "local.db")
    with Store(tmp_path / "ray.db") as store:
        assert store.query("SELECT executor FROM runs")[0]["executor"] == "ray"


def test_without_ray_the_executor_names_the_extra(tmp_path, tiny_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    with Store(tmp_path / "r.db") as store:
        with pytest.raises(ValueError, match=r"pip install 'advlab\[ray\]'"):
            run_spec(load_spec(tiny_spec), store, executor="ray", progress=False)
        assert store.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0   # nothing started, nothing stored
