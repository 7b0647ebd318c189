"""What Ray Tune tells a genotype searcher besides the suggestions it asks for, shared by every searcher
(:mod:`search_space.searcher`, :mod:`search_space.baseline_searchers`): the ``metric`` and ``mode`` of the
enclosing ``tune.run`` (which Tune 2.60 hands over only with a non-empty ``param_space``), and whether a completed
trial ran its full budget or was stopped early by a scheduler.

Conventions: a *budget* is a number in a result under ``budget_attr`` (e.g. ``training_iteration``); a trial
whose last result has it below ``full_budget`` was stopped early (Tune marks a scheduler-stopped result ``done``
too, so the budget is the only signal). ``full_budget=None`` means every completed trial is a full result.
Importing this module imports Ray only when :func:`tune_run_metric_and_mode` is called.
"""
from __future__ import annotations

import math
import sys
from typing import Any

from .genotype import Genotype


def tune_run_metric_and_mode() -> tuple[str | None, str | None] | None:
    """The ``metric`` and ``mode`` arguments of the ``ray.tune.run`` call the caller runs inside (``Tuner.fit``
    passes ``TuneConfig``'s), or None outside one.

    Ray Tune 2.60 hands ``TuneConfig``'s metric and mode to a searcher only through ``set_search_properties``,
    which ``tune.run`` calls only for a non-empty ``param_space`` (``if config and not
    searcher_set_search_props(...)`` in ``ray/tune/tune.py``). A genotype searcher needs no param_space, so it
    reads them from the frame of the ``run`` call whose ``TuneController.step`` asks it for a suggestion."""
    from ray.tune.tune import run

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is run.__code__:
            return frame.f_locals.get("metric"), frame.f_locals.get("mode")
        frame = frame.f_back
    return None


def check_budget(full_budget: Any, budget_attr: Any) -> None:
    """A one-line ``ValueError`` unless ``full_budget`` is None or a finite number > 0 and ``budget_attr`` a
    non-empty string."""
    if full_budget is not None and not (_is_number(full_budget) and math.isfinite(full_budget) and full_budget > 0):
        raise ValueError(f"full_budget: expected None or a number > 0, got {full_budget!r}")
    if not isinstance(budget_attr, str) or not budget_attr:
        raise ValueError(f"budget_attr: expected a result key (a non-empty string), got {budget_attr!r}")


def stopped_early(result: dict, full_budget: float | None, budget_attr: str) -> bool:
    """Whether a completed trial's last ``result`` is below ``full_budget`` in ``budget_attr`` (a scheduler stopped
    it early). False without a ``full_budget`` or when the result lacks a numeric ``budget_attr``."""
    if full_budget is None:
        return False
    used = result.get(budget_attr)
    return _is_number(used) and used < full_budget


def parse_pruned(value: Any) -> list[tuple[Genotype, float]]:
    """A state's ``pruned`` entry: ``[[genotype JSON, finite value], ...]``."""
    if not isinstance(value, list) or not all(isinstance(item, list) and len(item) == 2 for item in value):
        raise ValueError("pruned: expected [genotype, value] pairs")
    if not all(_is_number(v) and math.isfinite(v) for _, v in value):
        raise ValueError("pruned: expected finite metric values")
    return [(Genotype.from_json(g), float(v)) for g, v in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
