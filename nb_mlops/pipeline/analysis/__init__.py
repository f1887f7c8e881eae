"""Scope-aware def-use analysis of a notebook: the facts of each statement (`effects`), what the
analysis knows of library code (`knowledge`), and the plan of steps, values and order (`plan`)."""

from __future__ import annotations

from nb_mlops.pipeline.analysis.effects import Effects, Summary, analyze_source, python_of
from nb_mlops.pipeline.analysis.plan import Plan, StepPlan, plan_steps, rng_name

__all__ = [
    "Effects",
    "Plan",
    "StepPlan",
    "Summary",
    "analyze_source",
    "plan_steps",
    "python_of",
    "rng_name",
]
