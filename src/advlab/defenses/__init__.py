"""Defenses: adversarial training recipes, distillation, detectors, virtual adversarial training."""

from __future__ import annotations

from advlab.defenses.recipe import Recipe, Standard, recipe_card

__all__ = ["Recipe", "Standard", "recipe_card"]
