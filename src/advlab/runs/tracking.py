"""Optional MLflow tracking of a grid: one MLflow run per stored cell (``advlab run --mlflow URI``).

The results store stays the record advlab reads back; MLflow is a view of it for teams that
already track experiments there. Per cell: the resolved configuration as parameters (flattened,
``model.source`` = ``zoo``, ...), tags (``advlab.cell`` = the content hash, ``advlab.kind``,
``advlab.run`` = the store's run id, ``advlab.status``), every metric row as an MLflow metric
keyed ``<attack>/eps_<ε>/<name>``, the error text of a failed cell, and the cell's files
(``<store>.files/<hash>/``: a trained model's safetensors and card) as artifacts.

URIs: a folder (``file:///path/mlruns`` or a path: MLflow's file store, which MLflow 3 keeps in
maintenance mode; advlab sets ``MLFLOW_ALLOW_FILE_STORE=true`` for it unless you set it) or a
tracking server (``http://host:5000``).

MLflow is imported only when a tracker is made; without the extra (``pip install
'advlab[mlflow]'``) nothing imports it. A tracking call that fails (a server gone away) is
logged as a warning and the grid goes on: the store already holds the cell.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
_PARAM_MAX = 500        # the smallest limit MLflow servers have had on a parameter's value


def _key(text: str) -> str:
    """An MLflow metric/param key: letters, digits, ``_ - . /`` and spaces (others become ``_``)."""
    return _KEY_BAD.sub("_", text.replace("→", "->").replace("ε", "eps")).strip() or "_"


def _is_file_store(uri: str) -> bool:
    """A local folder: ``file:`` URIs and plain paths (no other scheme)."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and scheme.isalpha())   # C:\... on Windows


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model.source": "zoo", "attack.name": "pgd", "eps": "[0.05, 0.2]", ...}``."""
    out: dict[str, str] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix=name + "."))
        else:
            text = str(list(v)) if isinstance(v, (list, tuple)) else str(v)
            out[_key(name)] = text if len(text) <= _PARAM_MAX else text[:_PARAM_MAX - 1] + "…"
    return out


class MlflowTracker:
    """Logs each stored cell of a grid to MLflow, under one experiment."""

    def __init__(self, uri: str, *, experiment: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ValueError("--mlflow needs MLflow: pip install 'advlab[mlflow]' (or pip install mlflow-skinny)") \
                from None
        if not uri or not isinstance(uri, str):
            raise ValueError("--mlflow needs a tracking URI: a folder (file:///path/mlruns) or a server "
                             "(http://host:5000)")
        self.uri = uri
        if _is_file_store(uri):
            # MLflow 3 keeps its file store "in maintenance mode" and refuses it unless opted in;
            # naming a folder with --mlflow is that choice (set MLFLOW_ALLOW_FILE_STORE=false to refuse)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(experiment))
        except Exception as err:  # MLflow's own exception types vary by version and store
            raise ValueError(f"--mlflow {uri}: cannot open or create experiment {experiment!r}: {err}") from None
        self.failures = 0

    def log_cell(self, cell: Any, result: Any, error: str | None, *, run_id: int, files: Path | None) -> None:
        """One MLflow run for ``cell``: parameters, tags, metrics (or the error), artifacts."""
        try:
            self._log(cell, result, error, run_id=run_id, files=files)
        except Exception as err:
            self.failures += 1
            log.warning("mlflow: could not log cell %s (%s); the store holds it: %s", cell.hash, cell.label, err)

    def _log(self, cell: Any, result: Any, error: str | None, *, run_id: int, files: Path | None) -> None:
        from mlflow.entities import Metric, Param

        tags = {"advlab.cell": cell.hash, "advlab.kind": cell.kind, "advlab.run": str(run_id),
                "advlab.status": "failed" if error else "done", "mlflow.runName": f"{cell.kind} {cell.label}"[:250]}
        if error:
            tags["advlab.error"] = error[:5000]
        run = self.client.create_run(self.experiment_id, tags=tags)
        rid = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in flatten(cell.config).items()]
        metrics = []
        if result is not None:
            for m in result.metrics:
                value = m.get("value")
                if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                    continue
                parts = [p for p in (m.get("attack") or "", "" if m.get("eps") is None else f"eps_{m['eps']:g}",
                                     m["name"]) if p]
                metrics.append(Metric(_key("/".join(parts)), float(value), now, 0))
            metrics.append(Metric("seconds", float(result.seconds), now, 0))
        for i in range(0, max(len(params), len(metrics)), 100):   # MLflow's batch limit is 100 params
            self.client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100])
        if files is not None and files.is_dir() and any(files.iterdir()):
            self.client.log_artifacts(rid, str(files))
        self.client.set_terminated(rid, status="FAILED" if error else "FINISHED")
