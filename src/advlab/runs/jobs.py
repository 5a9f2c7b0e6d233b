"""The jobs behind the CLI, one module per family (train, attack, evaluate, measure, demo, studies);
this module keeps the old import path ``advlab.runs.jobs``."""

from __future__ import annotations

from advlab.runs._common import DEMO_EPS, checkpoint_data, load_data, say
from advlab.runs.attack import AttackOutput, attack_job
from advlab.runs.demo import DemoOutput, demo_job
from advlab.runs.evaluate import DEFAULT_ATTACKS, EvaluateOutput, evaluate_job, evaluation_attacks
from advlab.runs.measure import MEASURE_EPS, MeasureOutput, measure_job
from advlab.runs.studies import BoundsOutput, audit_job, bounds_job, geometry_job
from advlab.runs.train import TrainOutput, train_job

__all__ = ["DEFAULT_ATTACKS", "DEMO_EPS", "MEASURE_EPS", "AttackOutput", "BoundsOutput", "DemoOutput",
           "EvaluateOutput", "MeasureOutput", "TrainOutput", "attack_job", "audit_job", "bounds_job",
           "checkpoint_data", "demo_job", "evaluate_job", "evaluation_attacks", "geometry_job", "load_data",
           "measure_job", "say", "train_job"]
