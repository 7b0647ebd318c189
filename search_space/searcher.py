"""Ray Tune ``Searcher`` that proposes DCSOD genotypes: random until it has enough results, then a neural
predictor fit on every (architecture, metric) pair so far, explored by Metropolis evolution.

Importing this module imports Ray; the rest of ``search_space`` stays Ray-free.

Example (runs as is on a laptop; the trainable here is a stand-in for ``trainables.train_candidate``)::

    from ray import tune
    from search_space import Genotype, encode
    from search_space.searcher import PredictorEvolutionSearcher

    def trainable(config):
        g = Genotype.from_json(config["genotype"])
        return {"auroc_msp": float(encode(g)[:15].mean())}  # any metric, higher = better here

    searcher = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=8, seed=0)
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=searcher, num_samples=16, max_concurrent_trials=2, reuse_actors=True))
    best = tuner.fit().get_best_result(metric="auroc_msp", mode="max")
    print(best.config["genotype"], best.metrics["auroc_msp"])

``suggest`` returns ``{"genotype": <JSON string>}``. Errored trials (``result`` None or without the metric,
or a non-finite value) are ignored. The predictor is refit lazily, at the first ``suggest`` after every
``refit_every`` new results; each refit runs one evolution whose ``batch`` best unseen architectures are
handed out in order. All randomness comes from one seeded ``numpy`` Generator held in the state, so
``save``/``restore`` (used by ``Tuner.restore``) continue with exactly the suggestions an uninterrupted
searcher would have made.
"""
from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from .encoding import encode_many
from .evolution import REFERENCES, evolve
from .genotype import Genotype
from .predictor import make_predictor
from .space import SearchSpace


def load_pairs(source: str | os.PathLike | Iterable, metric: str) -> list[tuple[Genotype, float]]:
    """(genotype, value) pairs from a ``history.parquet`` path (columns ``genotype`` and ``metric``) or an
    iterable of ``(genotype or JSON, value)``. Rows with a missing/non-finite value are dropped."""
    if isinstance(source, (str, os.PathLike)):
        import pandas as pd

        table = pd.read_parquet(source)
        if "genotype" not in table or metric not in table:
            raise ValueError(f"warm_start: {os.fspath(source)!r} needs columns 'genotype' and {metric!r}")
        source = zip(table["genotype"], table[metric])
    pairs = []
    for g, value in source:
        if value is None or not math.isfinite(float(value)):
            continue
        pairs.append((g if isinstance(g, Genotype) else Genotype.from_json(g), float(value)))
    return pairs


class PredictorEvolutionSearcher(Searcher):
    """Predictor-guided evolutionary search over :class:`SearchSpace` genotypes (DCSOD §4.3).

    Args:
        metric, mode: the result key to optimise and ``"max"``/``"min"`` (may come from ``TuneConfig``).
        space: the search space (default ``SearchSpace()``, k = 6, fixed operators).
        predictor, predictor_args: a name in ``search_space.predictor.PREDICTORS`` and its keyword arguments.
        min_results: random proposals until this many results exist (warm-start pairs count).
        refit_every: refit the predictor after this many new results.
        batch: proposals taken from one evolution run (default ``refit_every``).
        population, generations, temperature, final_temperature, reference: evolution settings
            (:func:`search_space.evolution.run_evolution`). The temperature is in units of the metric (the
            predictor predicts on the metric's own scale): a proposal predicted ``d`` worse than the reference
            is accepted with probability ``exp(-d/T)`` — with AUROC as a fraction and T = 0.05, d = 0.05 gives
            e^-1 ≈ 0.37 and d = 0.01 gives 0.82. ``reference="best"`` (the thesis's EA, default) compares a
            proposal with the best predicted architecture so far, ``"chain"`` with the chain's own state.
        warm_start: a ``history.parquet`` path or ``(genotype, value)`` pairs, known before the first trial.
        max_concurrent: at most this many pending suggestions (``None``: no limit; ``ConcurrencyLimiter``
            sets it through :meth:`set_max_concurrency`).
        seed: seeds every random choice.
    """

    def __init__(self, metric: str | None = None, mode: str | None = None, *, space: SearchSpace | None = None,
                 predictor: str = "mlp", predictor_args: dict | None = None, min_results: int = 10,
                 refit_every: int = 5, batch: int | None = None, population: int = 32, generations: int = 30,
                 temperature: float = 0.05, final_temperature: float | None = None, reference: str = "best",
                 warm_start: str | os.PathLike | Sequence | None = None, max_concurrent: int | None = None,
                 seed: int = 0):
        if mode not in (None, "max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        if min_results < 2 or refit_every < 1:
            raise ValueError("min_results >= 2 and refit_every >= 1 are required")
        if reference not in REFERENCES:
            raise ValueError(f"reference: expected one of {', '.join(REFERENCES)}, got {reference!r}")
        super().__init__(metric=metric, mode=mode)
        self.space = space or SearchSpace()
        self.predictor_name, self.predictor_args = predictor, dict(predictor_args or {})
        make_predictor(predictor, **self.predictor_args)  # fail fast on a bad name or argument
        self.min_results, self.refit_every = min_results, refit_every
        self.batch = batch or refit_every
        self.evolution_args = dict(population=population, generations=generations, temperature=temperature,
                                   final_temperature=final_temperature, reference=reference)
        self.max_concurrent = max_concurrent
        self.rng = np.random.default_rng(seed)
        self.results: dict[str, list[float]] = {}  # arch_hash -> metric values (several seeds possible)
        self.genotypes: dict[str, Genotype] = {}
        self.pending: dict[str, Genotype] = {}  # trial_id -> genotype
        self.queue: list[Genotype] = []
        self.predictor = None
        self.new_since_fit = 0
        self.n_fits = 0
        self._warm_start = warm_start
        if warm_start is not None and metric is not None:
            self._load_warm_start()

    # --- Tune hooks --------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        if metric and self._metric is None:
            self._metric = metric
        if mode and self._mode is None:
            self._mode = mode
        if self._warm_start is not None and not self.results:
            self._load_warm_start()
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self._metric is None or self._mode is None:
            raise ValueError("PredictorEvolutionSearcher: set metric and mode (here or in TuneConfig)")
        if self.max_concurrent is not None and len(self.pending) >= self.max_concurrent:
            return None
        genotype = self._next()
        self.pending[trial_id] = genotype
        return {"genotype": genotype.to_json()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        genotype = self.pending.pop(trial_id, None)
        if genotype is None or error or not result or self._metric not in result:
            return
        value = result[self._metric]
        if value is None or not math.isfinite(float(value)):
            return
        self.add_result(genotype, float(value))

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values=None) -> None:
        """Tune's hook for results evaluated elsewhere: ``parameters`` holds ``genotype`` (JSON)."""
        if not error and value is not None and math.isfinite(float(value)):
            self.add_result(Genotype.from_json(parameters["genotype"]), float(value))

    # --- state -------------------------------------------------------------------------------------
    def add_result(self, genotype: Genotype, value: float) -> None:
        """Record one (architecture, metric) pair; repeated architectures are averaged for the predictor."""
        h = genotype.arch_hash
        self.genotypes.setdefault(h, genotype.pruned())
        self.results.setdefault(h, []).append(value)
        self.new_since_fit += 1

    def get_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    # --- proposals ---------------------------------------------------------------------------------
    def _load_warm_start(self) -> None:
        for genotype, value in load_pairs(self._warm_start, self._metric):
            self.add_result(genotype, value)
        self._warm_start = None

    def _seen(self) -> set[str]:
        return set(self.results) | {g.arch_hash for g in self.pending.values()}

    def _next(self) -> Genotype:
        if len(self.results) < self.min_results:
            return self._random()
        if self.predictor is None or self.new_since_fit >= self.refit_every or not self.queue:
            self._refit_and_evolve()
        seen = self._seen()
        while self.queue:
            g = self.queue.pop(0)
            if g.arch_hash not in seen:
                return g
        return self._random()  # evolution found nothing unseen: keep exploring

    def _random(self) -> Genotype:
        seen = self._seen()
        for _ in range(10_000):
            g = self.space.sample(self.rng)
            if g.arch_hash not in seen:
                return g
        raise RuntimeError("search space exhausted: no unseen architecture in 10,000 draws")

    def _refit_and_evolve(self) -> None:
        hashes = sorted(self.results)
        sign = 1.0 if self._mode == "max" else -1.0
        X = encode_many([self.genotypes[h] for h in hashes])
        y = sign * np.array([np.mean(self.results[h]) for h in hashes])
        self.predictor = make_predictor(self.predictor_name, **self.predictor_args)
        self.predictor.fit(X, y, seed=int(self.rng.integers(2**31)))
        self.new_since_fit = 0
        self.n_fits += 1
        best_first = [self.genotypes[h] for h in np.array(hashes)[np.argsort(-y)]]
        top = evolve(self.space, lambda gs: self.predictor.predict(encode_many(gs)), top_k=self.batch,
                     exclude=self._seen(), init=best_first[: self.evolution_args["population"]],
                     seed=self.rng, **self.evolution_args)
        self.queue = [g for g, _ in top]
