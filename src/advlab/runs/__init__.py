"""Jobs: train, attack, evaluate, measure, audit, geometry and the demo, as functions the CLI and tests call."""

from __future__ import annotations

from advlab.runs.jobs import (DEMO_EPS, attack_job, audit_job, bounds_job, demo_job, evaluate_job,
                              geometry_job, measure_job, train_job)

__all__ = ["DEMO_EPS", "attack_job", "audit_job", "bounds_job", "demo_job", "evaluate_job", "geometry_job", "measure_job", "train_job"]
