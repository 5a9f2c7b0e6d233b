"""Measuring robustness: clean/robust accuracy over ε for several attacks, worst case per point."""

from __future__ import annotations

from advlab.evaluation.audit import AuditReport, Check, audit
from advlab.evaluation.robustness import EvalRow, Evaluation, clean_predictions, evaluate, provenance

__all__ = ["AuditReport", "Check", "EvalRow", "Evaluation", "audit", "clean_predictions", "evaluate",
           "provenance"]
