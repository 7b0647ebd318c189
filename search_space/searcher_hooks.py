"""The Ray Tune hooks every genotype searcher shares (:class:`~search_space.searcher.PredictorEvolutionSearcher`,
:class:`~search_space.baseline_searchers.GenotypeSearcher` and its subclasses), as one mixin,
:class:`GenotypeSearcherHooks`, listed before ``ray.tune.search.Searcher`` among a searcher's bases.

The mixin owns the conversation with Tune: metric and mode (from the constructor, ``set_search_properties`` or the
enclosing ``tune.run``: :func:`search_space.tune_properties.tune_run_metric_and_mode`), the param_space's
hyperparameter dimensions, the concurrency limit, pending trials and their rows, and the sorting of finished
trials into full results, trials stopped early and errored trials (dropped). What a searcher learns and how it
proposes stays its own, behind small hooks:

- :meth:`~GenotypeSearcherHooks._choose`: the next genotype and its hyperparameter row, drawn in that order;
- :meth:`~GenotypeSearcherHooks.add_result` and :meth:`~GenotypeSearcherHooks.add_pruned`: record a full result
  and a trial stopped early;
- :meth:`~GenotypeSearcherHooks._has_hp_rows`: whether any hyperparameter row is recorded (then a param_space
  over other dimensions is refused);
- :meth:`~GenotypeSearcherHooks._adopted` (optional): runs after metric and mode were taken from Tune.

A searcher using it sets, in its constructor, the attributes ``pending`` (trial_id -> genotype), ``hp_pending``
(trial_id -> row), ``dimensions`` (None until a param_space is given), ``hp_description``, ``max_concurrent``,
``full_budget`` and ``budget_attr``; ``Searcher`` sets ``_metric`` and ``_mode``. Importing this module imports
Ray (through :mod:`search_space.hyperparameters`).
"""
from __future__ import annotations

from typing import Any

from .genotype import Genotype
from .hyperparameters import (
    Dimension,
    check_row,
    dimensions_differ,
    key_name,
    nest,
    parse_param_space,
    read_row,
    same_json,
)
from .searcher_state import check_mode, finite
from .tune_properties import stopped_early, tune_run_metric_and_mode


class GenotypeSearcherHooks:
    """Ray Tune's searcher hooks (``suggest``, ``on_trial_complete``, ``add_evaluated_point``,
    ``set_search_properties``, ``set_max_concurrency``) for a searcher of genotypes and, optionally, the
    hyperparameters of Tune's ``param_space``; see the module docstring for the hooks a searcher implements."""

    _metric: str | None
    _mode: str | None
    pending: dict[str, Genotype]
    hp_pending: dict[str, list]
    dimensions: list[Dimension] | None
    hp_description: list[dict]
    max_concurrent: int | None
    full_budget: float | None
    budget_attr: str

    # --- what a searcher implements ---------------------------------------------------------------
    def _choose(self) -> tuple[Genotype, list]:
        """The next proposal: an architecture not evaluated, stopped early or pending, then its row of stored
        hyperparameter values over :attr:`dimensions` (empty without dimensions), drawn in that order."""
        raise NotImplementedError

    def add_result(self, genotype: Genotype, value: float, hyperparameters: list | None = None) -> None:
        """Record one full (architecture, metric value) result with its hyperparameter row (None: not known)."""
        raise NotImplementedError

    def add_pruned(self, genotype: Genotype, value: float) -> None:
        """Record a trial stopped early with its last metric value."""
        raise NotImplementedError

    def _has_hp_rows(self) -> bool:
        """Whether a hyperparameter row (of a result or of a pending trial) is recorded."""
        raise NotImplementedError

    def _adopted(self) -> None:
        """Called once :meth:`_adopt` has taken metric and mode from Tune (nothing by default)."""

    # --- Tune hooks --------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict | None, **spec) -> bool:
        """Tune's hook (called by ``tune.run`` only when ``param_space`` is non-empty): metric and mode from
        ``TuneConfig``, and ``config``, the param_space whose dimensions are sampled beside the genotype. A
        metric or mode differing from the constructor's, or an unsupported dimension, is a one-line
        ``ValueError`` that changes nothing."""
        check_mode(mode)
        dimensions = None if config is None else parse_param_space(config)
        if dimensions is not None:
            self._check_dimensions(dimensions)
        self._adopt(metric, mode)
        if dimensions is not None:
            self.dimensions = dimensions
            self.hp_description = [d.describe() for d in dimensions]
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict | None:
        """``{"genotype": <JSON>, **hyperparameters}`` (nested like the param_space), or None at the concurrency
        limit."""
        self._require_metric_and_mode()
        if self.dimensions is None and self.hp_description:
            names = ", ".join(key_name(d["path"]) for d in self.hp_description)
            raise ValueError(f"{type(self).__name__}: the restored state samples {names}: give the same "
                             "param_space (set_search_properties) before suggesting")
        if self.max_concurrent is not None and len(self.pending) >= self.max_concurrent:
            return None
        genotype, row = self._choose()
        self.pending[trial_id] = genotype
        if self.dimensions:
            self.hp_pending[trial_id] = row
        return {"genotype": genotype.to_json(), **nest(self.dimensions or [], row)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Record a finished trial: a full result, or with ``full_budget`` set and ``result[budget_attr]`` below it,
        a trial stopped early (:meth:`add_pruned`). Errored trials and results without a finite metric are
        dropped; the pending entry is cleared either way."""
        genotype = self.pending.pop(trial_id, None)
        row = self.hp_pending.pop(trial_id, None)
        if genotype is None or error or not result or not finite(result.get(self._metric)):
            return
        value = float(result[self._metric])
        if self._stopped_early(result):
            self.add_pruned(genotype, value)
        else:
            self.add_result(genotype, value, row)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values=None) -> None:
        """Tune's hook for results evaluated elsewhere: ``parameters`` holds ``genotype`` (JSON) and, for joint
        search, the hyperparameters (nested, or flat ``a/b`` keys; a point lacking one, or holding a value outside
        its domain, is recorded without them: only its architecture is learnt from). ``pruned=True`` (stopped
        early) goes to :meth:`add_pruned`; ``intermediate_values`` are not used."""
        if error or not finite(value):
            return
        if not isinstance(parameters, dict) or "genotype" not in parameters:
            raise ValueError("add_evaluated_point: parameters must hold 'genotype' (a genotype JSON string)")
        genotype = Genotype.from_json(parameters["genotype"])
        if pruned:
            self.add_pruned(genotype, float(value))
        else:
            self.add_result(genotype, float(value), read_row(self.dimensions or [], parameters) or None)

    # --- metric, mode, budget and dimensions ---------------------------------------------------------
    def _adopt(self, metric: str | None, mode: str | None) -> None:
        """Take metric and mode from Tune where this searcher has none, then call :meth:`_adopted`; a value
        differing from this searcher's is a one-line ``ValueError``."""
        check_mode(mode)
        for name, given, current in (("metric", metric, self._metric), ("mode", mode, self._mode)):
            if given and current and given != current:
                raise ValueError(f"{type(self).__name__}: {name} {given!r} from Tune differs from the searcher's "
                                 f"{current!r}; give it in one place")
        if metric and self._metric is None:
            self._metric = metric
        if mode and self._mode is None:
            self._mode = mode
        self._adopted()

    def _require_metric_and_mode(self) -> None:
        """Metric and mode, from the constructor, ``set_search_properties`` or else the enclosing ``tune.run``
        (:func:`~search_space.tune_properties.tune_run_metric_and_mode`); neither is a one-line ``ValueError``."""
        if self._metric is None or self._mode is None:
            found = tune_run_metric_and_mode()
            if found is not None:
                self._adopt(*found)
        if self._metric is None or self._mode is None:
            raise ValueError(f"{type(self).__name__}: no metric and mode (metric={self._metric!r}, "
                             f"mode={self._mode!r}): give them to the searcher or to "
                             "tune.TuneConfig(metric=..., mode=...)")

    def _stopped_early(self, result: dict) -> bool:
        """Whether a completed trial's last result is below the full budget (a scheduler stopped it early). Tune
        sets ``done`` on such a result too, so only the budget tells."""
        return stopped_early(result, self.full_budget, self.budget_attr)

    def _check_dimensions(self, dimensions: list[Dimension]) -> None:
        """Refuse a param_space whose dimensions differ from those this searcher's rows were recorded with."""
        _refuse_other_dimensions(self.hp_description, [d.describe() for d in dimensions], self._has_hp_rows())

    # --- state parsing -----------------------------------------------------------------------------
    def _restored_description(self, description: list[dict], has_rows: bool) -> list[dict]:
        """The dimensions' description a restored state keeps: the state's, or once this searcher has a
        param_space its own (a state holding rows, ``has_rows``, for other dimensions is refused)."""
        if self.dimensions is None:
            return description
        current = [d.describe() for d in self.dimensions]
        _refuse_other_dimensions(description, current, has_rows)
        return current

    @staticmethod
    def _parse_hp_pending(value: Any, description: list[dict], pending: dict[str, Genotype]) -> dict[str, list]:
        """A state's ``hyperparameters.pending``: trial_id -> row over ``description``, of ``pending`` trials."""
        if not isinstance(value, dict):
            raise ValueError("hyperparameters.pending: expected a JSON object")
        hp_pending = {trial_id: check_row(description, row) for trial_id, row in value.items()}
        if not set(hp_pending) <= set(pending):
            raise ValueError("hyperparameters.pending: rows of trials that are not pending")
        return hp_pending


def _refuse_other_dimensions(recorded: list[dict], current: list[dict], has_rows: bool) -> None:
    """A one-line ``ValueError`` when rows were recorded (``has_rows``) over dimensions ``recorded`` that differ from
    ``current``."""
    if has_rows and not same_json(current, recorded):
        raise ValueError(dimensions_differ(recorded, current))
