"""Baseline Ray Tune searchers over DCSOD genotypes (the thesis's Table 4.1): uniform random search and
regularized (aging) evolution, run at the same budget — the number of candidate trainings — as DCSOD.

Importing this module imports Ray; the rest of ``search_space`` stays Ray-free.

Conventions shared by every :class:`GenotypeSearcher`:

- ``suggest`` returns ``{"genotype": <JSON string>}``; mode ``"max"``: higher metric = better, ``"min"``: lower.
- Results are kept in completion order (:attr:`GenotypeSearcher.history`). Errored trials (``error=True``,
  ``result`` None or without the metric, a non-finite value) are ignored; their pending entry is cleared.
- No architecture (by ``arch_hash``) already evaluated or pending is proposed again while unseen ones can be found.
- All randomness comes from one seeded ``numpy`` Generator. ``save``/``restore`` (used by ``Tuner.restore``)
  write and read plain JSON — never pickle, so reading a checkpoint back cannot run code — and a restored
  searcher continues with exactly the suggestions the uninterrupted one would have made.

:data:`SEARCHER_CLASSES` maps the names the experiments use to the searcher classes.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from ray.tune.search import Searcher

from .genotype import Genotype
from .searcher import PredictorEvolutionSearcher
from .searcher_state import STATE_FORMAT, read_json_state, state_header, write_json_atomic
from .searcher_state import check_mode as _check_mode
from .searcher_state import finite as _finite
from .searcher_state import one_line as _one_line
from .space import SearchSpace


class GenotypeSearcher(Searcher):
    """What every genotype searcher shares: metric and mode, pending trials, the concurrency limit, ignoring
    errored results, distinct proposals, one seeded Generator and JSON save/restore.

    A subclass implements :meth:`_propose` (one candidate, which may repeat a seen architecture: the base class
    redraws) and reads :attr:`history` for what it has learnt, so its whole state is the base class's. Constructor
    settings that change its behaviour are named in ``SETTINGS``; they are saved and restored with the state and
    checked by :meth:`_check_settings`.

    Args:
        metric, mode: the result key to optimise and ``"max"``/``"min"`` (may come from ``TuneConfig``).
        space: the search space (default ``SearchSpace()``).
        max_concurrent: at most this many pending suggestions (``None``: no limit; ``TuneConfig``'s
            ``max_concurrent_trials`` sets it through :meth:`set_max_concurrency`).
        seed: seeds every random choice.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"
    SETTINGS: ClassVar[tuple[str, ...]] = ()
    #: ``_propose`` calls before falling back to uniform samples, then uniform samples before giving up.
    MAX_PROPOSALS, MAX_SAMPLES = 100, 10_000

    def __init__(self, metric: str | None = None, mode: str | None = None, *, space: SearchSpace | None = None,
                 max_concurrent: int | None = None, seed: int = 0):
        _check_mode(mode)
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent: expected None or an integer >= 1, got {max_concurrent!r}")
        super().__init__(metric=metric, mode=mode)
        self.space = space or SearchSpace()
        self.max_concurrent = max_concurrent
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[Genotype, float]] = []  # completed (genotype, metric value), completion order
        self.pending: dict[str, Genotype] = {}  # trial_id -> genotype
        self._evaluated: set[str] = set()

    # --- what subclasses implement ----------------------------------------------------------------
    def _propose(self) -> Genotype:
        """One candidate architecture, drawn with ``self.rng``."""
        raise NotImplementedError

    def _check_settings(self) -> None:
        """Raise ``ValueError`` for an invalid value of a ``SETTINGS`` attribute (none by default)."""

    # --- Tune hooks --------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        _check_mode(mode)
        if metric and self._metric is None:
            self._metric = metric
        if mode and self._mode is None:
            self._mode = mode
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self._metric is None or self._mode is None:
            raise ValueError(f"{type(self).__name__}: set metric and mode (here or in TuneConfig)")
        if self.max_concurrent is not None and len(self.pending) >= self.max_concurrent:
            return None
        genotype = self._next_unseen()
        self.pending[trial_id] = genotype
        return {"genotype": genotype.to_json()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        genotype = self.pending.pop(trial_id, None)
        if genotype is None or error or not result or not _finite(result.get(self._metric)):
            return
        self.add_result(genotype, float(result[self._metric]))

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values=None) -> None:
        """Tune's hook for results evaluated elsewhere: ``parameters`` holds ``genotype`` (JSON)."""
        if not error and _finite(value):
            self.add_result(Genotype.from_json(parameters["genotype"]), float(value))

    # --- results -----------------------------------------------------------------------------------
    def add_result(self, genotype: Genotype, value: float) -> None:
        """Record one completed (architecture, metric value) pair at the end of :attr:`history`."""
        genotype = genotype.pruned()
        self.history.append((genotype, value))
        self._evaluated.add(genotype.arch_hash)

    @property
    def results(self) -> dict[str, list[float]]:
        """arch_hash -> metric values (several if an architecture was evaluated more than once)."""
        out: dict[str, list[float]] = {}
        for genotype, value in self.history:
            out.setdefault(genotype.arch_hash, []).append(value)
        return out

    def score(self, value: float) -> float:
        """``value`` on a higher-is-better scale (negated for mode ``"min"``)."""
        return value if self._mode == "max" else -value

    def _next_unseen(self) -> Genotype:
        seen = self._evaluated | {g.arch_hash for g in self.pending.values()}
        for _ in range(self.MAX_PROPOSALS):
            genotype = self._propose()
            if genotype.arch_hash not in seen:
                return genotype
        for _ in range(self.MAX_SAMPLES):  # the proposal keeps hitting seen architectures: explore uniformly
            genotype = self.space.sample(self.rng)
            if genotype.arch_hash not in seen:
                return genotype
        raise RuntimeError(f"search space exhausted: no unseen architecture in {self.MAX_SAMPLES:,} draws")

    # --- state (JSON only) -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The whole state as JSON-able values: genotypes as their JSON strings, the Generator's state dict."""
        return {
            **state_header(self, {name: getattr(self, name) for name in self.SETTINGS}),
            "history": [[g.to_json(), value] for g, value in self.history],
            "pending": {trial_id: g.to_json() for trial_id, g in self.pending.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`get_state`'s dict; a state of another class or a malformed one raises a one-line
        ``ValueError`` and leaves this searcher unchanged."""
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{type(self).__name__} state: {_one_line(err)}") from None

    def save(self, checkpoint_path: str) -> None:
        """Write the state as JSON, atomically (a temporary file in the same directory, then ``os.replace``)."""
        write_json_atomic(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Read a state written by :meth:`save` of the same class; anything else raises a one-line ``ValueError``."""
        state = read_json_state(checkpoint_path)
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{checkpoint_path}: {_one_line(err)}") from None

    def _load_state(self, state: dict[str, Any]) -> None:
        # Everything is parsed and validated before anything is assigned, so a bad state changes nothing.
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a genotype-searcher state (expected format {STATE_FORMAT})")
        if state["searcher"] != type(self).__name__:
            raise ValueError(f"state written by {state['searcher']}, cannot restore a {type(self).__name__}")
        _check_mode(state["mode"])
        space = SearchSpace(**state["space"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        history = [(Genotype.from_json(g), float(value)) for g, value in state["history"]]
        if not all(math.isfinite(value) for _, value in history):
            raise ValueError("history: non-finite metric value")
        pending = {str(trial_id): Genotype.from_json(g) for trial_id, g in state["pending"].items()}
        settings = state["settings"]
        if set(settings) != set(self.SETTINGS):
            raise ValueError(f"settings: expected {sorted(self.SETTINGS)}, got {sorted(settings)}")
        previous = {name: getattr(self, name) for name in self.SETTINGS}
        self.__dict__.update(settings)
        try:
            self._check_settings()
        except ValueError:
            self.__dict__.update(previous)
            raise
        self._metric, self._mode, self.space = state["metric"], state["mode"], space
        self.max_concurrent, self.rng = state["max_concurrent"], rng
        self.history, self.pending = history, pending
        self._evaluated = {g.arch_hash for g, _ in history}


class RandomSearcher(GenotypeSearcher):
    """Uniform random search: each proposal is ``space.sample(rng)``, redrawn until unseen (distinct architectures).

    Args: as :class:`GenotypeSearcher`.

    Example (runs as is on a laptop; the trainable here is a stand-in for ``trainables.train_candidate``)::

        from ray import tune
        from search_space import Genotype, encode
        from search_space.baseline_searchers import RandomSearcher

        def trainable(config):
            g = Genotype.from_json(config["genotype"])
            return {"auroc_msp": float(encode(g)[:15].mean())}  # any metric, higher = better here

        searcher = RandomSearcher(metric="auroc_msp", mode="max", seed=0)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=16, max_concurrent_trials=2, reuse_actors=True))
        best = tuner.fit().get_best_result(metric="auroc_msp", mode="max")
        print(best.config["genotype"], best.metrics["auroc_msp"])
    """

    def _propose(self) -> Genotype:
        return self.space.sample(self.rng)


class RegularizedEvolutionSearcher(GenotypeSearcher):
    """Regularized (aging) evolution, Real et al. 2019 (Algorithm 1), asynchronous as Tune runs it.

    Until ``population`` results exist every proposal is a uniform sample. Afterwards the population is the last
    ``population`` completed results, ordered by completion (aging: each new result pushes out the *oldest*
    member, however good). A proposal draws ``sample_size`` members uniformly *with replacement*, as in the
    paper's pseudocode, takes the best of them by the metric (mode ``"max"``: highest; ties: the first drawn) as
    the parent and returns ``space.mutate(parent, rng)``; a child already evaluated or pending is redrawn (a new
    tournament and mutation). Errored children never join the population.

    Args:
        population: the population size P (>= 2).
        sample_size: the tournament size S (1 <= S <= P).
        metric, mode, space, max_concurrent, seed: as :class:`GenotypeSearcher`.

    Example (runs as is on a laptop; the trainable here is a stand-in for ``trainables.train_candidate``)::

        from ray import tune
        from search_space import Genotype, encode
        from search_space.baseline_searchers import RegularizedEvolutionSearcher

        def trainable(config):
            g = Genotype.from_json(config["genotype"])
            return {"auroc_msp": float(encode(g)[:15].mean())}  # any metric, higher = better here

        searcher = RegularizedEvolutionSearcher(metric="auroc_msp", mode="max", population=8, sample_size=3)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=16, max_concurrent_trials=2, reuse_actors=True))
        best = tuner.fit().get_best_result(metric="auroc_msp", mode="max")
        print(best.config["genotype"], best.metrics["auroc_msp"])
    """

    SETTINGS = ("population", "sample_size")

    def __init__(self, metric: str | None = None, mode: str | None = None, *, space: SearchSpace | None = None,
                 population: int = 20, sample_size: int = 5, max_concurrent: int | None = None, seed: int = 0):
        super().__init__(metric, mode, space=space, max_concurrent=max_concurrent, seed=seed)
        self.population, self.sample_size = population, sample_size
        self._check_settings()

    def _check_settings(self) -> None:
        if not isinstance(self.population, int) or self.population < 2:
            raise ValueError(f"population: expected an integer >= 2, got {self.population!r}")
        if not isinstance(self.sample_size, int) or not 1 <= self.sample_size <= self.population:
            raise ValueError(f"sample_size: expected an integer in [1, population={self.population}], "
                             f"got {self.sample_size!r}")

    @property
    def members(self) -> list[tuple[Genotype, float]]:
        """The current population, oldest first: the last ``population`` completed results."""
        return self.history[-self.population:]

    def _propose(self) -> Genotype:
        if len(self.history) < self.population:
            return self.space.sample(self.rng)
        members = self.members
        drawn = self.rng.integers(len(members), size=self.sample_size)
        parent = max(drawn, key=lambda i: self.score(members[i][1]))  # max keeps the first of equal scores
        return self.space.mutate(members[parent][0], self.rng)


#: The searcher names the experiments use (Table 4.1's baselines and DCSOD's own searcher).
SEARCHER_CLASSES: dict[str, type[Searcher]] = {
    "random": RandomSearcher,
    "regularized-evolution": RegularizedEvolutionSearcher,
    "predictor-evolution": PredictorEvolutionSearcher,
}
