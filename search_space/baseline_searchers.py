"""Baseline Ray Tune searchers over DCSOD genotypes (the thesis's Table 4.1): uniform random search and
regularized (aging) evolution, run at the same budget — the number of candidate trainings — as DCSOD; optionally
jointly with the hyperparameters of Tune's ``param_space``, like :class:`~search_space.searcher.
PredictorEvolutionSearcher`.

Importing this module imports Ray; the rest of ``search_space`` stays Ray-free (but for ``searcher``,
``searcher_hooks`` and ``hyperparameters``).

Conventions shared by every :class:`GenotypeSearcher`:

- ``suggest`` returns ``{"genotype": <JSON string>}`` plus a value for every search-space object of
  ``param_space`` (nested as there; the supported dimensions are listed in :mod:`search_space.hyperparameters`,
  an unsupported one is a one-line ``ValueError`` naming the key); mode ``"max"``: higher metric = better,
  ``"min"``: lower.
- Metric and mode come from the constructor or from ``tune.TuneConfig``, with or without a ``param_space``
  (without one Tune never calls ``set_search_properties``: see
  :func:`search_space.tune_properties.tune_run_metric_and_mode`); given in both places they must agree; lacking
  both at the first ``suggest`` is a one-line ``ValueError``.
- Results are kept in completion order (:attr:`GenotypeSearcher.history`). Errored trials (``error=True``,
  ``result`` None or without the metric, a non-finite value) are ignored; their pending entry is cleared.
- Trials stopped early (``add_evaluated_point(..., pruned=True)``, or with ``full_budget`` set a completed trial
  whose ``budget_attr`` is below it) are kept apart in :attr:`GenotypeSearcher.pruned`: never proposed again, never
  learnt from (their metric is partial).
- No architecture (by ``arch_hash``) already evaluated, stopped early or pending is proposed again while unseen
  ones can be found.
- All randomness comes from one seeded ``numpy`` Generator; each suggestion draws its genotype, then its
  hyperparameters (nothing without a sampled dimension), so every searcher's random phase — and
  PredictorEvolutionSearcher's — suggests the same configurations for the same seed (common random numbers).
- ``save``/``restore`` (used by ``Tuner.restore``) write and read plain JSON — never pickle, so reading a checkpoint
  back cannot run code — and a restored searcher continues with exactly the suggestions the uninterrupted one
  would have made. A state written before hyperparameters and stopped-early trials existed (same format 1) reads
  as having none; one whose hyperparameter rows were sampled over other dimensions than the restoring run's
  param_space is refused with a one-line ``ValueError``.

:data:`search_space.searchers.SEARCHERS` names these searchers and DCSOD's own (the registry presets use).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from ray.tune.search import Searcher

from .genotype import Genotype
from .hyperparameters import Dimension, check_descriptions, check_row, mutate
from .searcher_hooks import GenotypeSearcherHooks
from .searcher_state import STATE_FORMAT, read_json_state, state_header, write_json_atomic
from .searcher_state import check_mode as _check_mode
from .searcher_state import one_line as _one_line
from .space import SearchSpace
from .tune_properties import check_budget, parse_pruned

#: Settings every genotype searcher has, added after states were first written, with the value a state without
#: them means.
BASE_SETTINGS = {"full_budget": None, "budget_attr": "training_iteration"}


class GenotypeSearcher(GenotypeSearcherHooks, Searcher):
    """What every genotype searcher shares: metric and mode, pending trials, the concurrency limit, ignoring
    errored results, keeping trials stopped early apart, distinct proposals, the param_space's hyperparameters,
    one seeded Generator and JSON save/restore. Its Ray Tune hooks (``suggest``, ``on_trial_complete``,
    ``add_evaluated_point``, ``set_search_properties``) are :class:`~search_space.searcher_hooks.
    GenotypeSearcherHooks`'s, as :class:`~search_space.searcher.PredictorEvolutionSearcher`'s are.

    A subclass implements :meth:`_propose` (one candidate and the index in :attr:`history` of its parent, which may
    repeat a seen architecture: the base class redraws) and may override :meth:`_propose_hyperparameters`
    (default: every dimension from its distribution); it reads :attr:`history` and :attr:`rows` for what it has
    learnt, so its whole state is the base class's. Constructor settings that change its behaviour are named in
    ``SETTINGS``; they are saved and restored with the state and checked by :meth:`_check_settings`.

    Args:
        metric, mode: the result key to optimise and ``"max"``/``"min"``; or give them to ``tune.TuneConfig``
            (with or without a ``param_space``). Given in both places, they must agree.
        space: the search space (default ``SearchSpace()``).
        max_concurrent: at most this many pending suggestions (``None``: no limit; ``TuneConfig``'s
            ``max_concurrent_trials`` sets it through :meth:`set_max_concurrency`).
        full_budget, budget_attr: with an early-stopping scheduler, the budget of a full trial (e.g.
            ``ASHAScheduler(max_t=...)``'s ``max_t``) and the result key counting it. A completed trial whose last
            result has ``budget_attr`` below ``full_budget`` was stopped early: it is kept in :attr:`pruned`.
            ``None`` (default): every completed trial is a full result.
        seed: seeds every random choice.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"
    SETTINGS: ClassVar[tuple[str, ...]] = ()
    #: ``_propose`` calls before falling back to uniform samples, then uniform samples before giving up.
    MAX_PROPOSALS, MAX_SAMPLES = 100, 10_000

    def __init__(self, metric: str | None = None, mode: str | None = None, *, space: SearchSpace | None = None,
                 max_concurrent: int | None = None, full_budget: float | None = None,
                 budget_attr: str = "training_iteration", seed: int = 0):
        _check_mode(mode)
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent: expected None or an integer >= 1, got {max_concurrent!r}")
        check_budget(full_budget, budget_attr)
        super().__init__(metric=metric, mode=mode)
        self.space = space or SearchSpace()
        self.max_concurrent = max_concurrent
        self.full_budget, self.budget_attr = full_budget, budget_attr
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[Genotype, float]] = []  # completed (genotype, metric value), completion order
        self.rows: list[list | None] = []  # each history entry's hyperparameter row (None: not known)
        self.pending: dict[str, Genotype] = {}  # trial_id -> genotype
        self.pruned: list[tuple[Genotype, float]] = []  # stopped early: (genotype, last metric value), in order
        # Hyperparameters: the param_space's dimensions (None until a param_space is given), their JSON description
        # (what the state holds) and pending trials' rows.
        self.dimensions: list[Dimension] | None = None
        self.hp_description: list[dict] = []
        self.hp_pending: dict[str, list] = {}
        self._evaluated: set[str] = set()  # arch_hash of every completed or stopped-early trial

    # --- what subclasses implement ----------------------------------------------------------------
    def _propose(self) -> tuple[Genotype, int | None]:
        """One candidate architecture, drawn with ``self.rng``, and the index in :attr:`history` of the result it
        was derived from (None: drawn without a parent)."""
        raise NotImplementedError

    def _propose_hyperparameters(self, parent: int | None) -> list:
        """The hyperparameter row of a proposal whose architecture came from ``history[parent]`` (None: no parent):
        here every dimension drawn from its own distribution (nothing is drawn without dimensions)."""
        return [d.prior(self.rng) for d in self.dimensions or []]

    def _check_settings(self) -> None:
        """Raise ``ValueError`` for an invalid value of a ``SETTINGS`` attribute (none by default)."""

    # --- results -----------------------------------------------------------------------------------
    def add_result(self, genotype: Genotype, value: float, hyperparameters: list | None = None) -> None:
        """Record one completed (architecture, metric value) pair at the end of :attr:`history`, with its row of
        stored hyperparameter values (:mod:`search_space.hyperparameters`) in :attr:`rows` (None: not known)."""
        genotype = genotype.pruned()
        self.history.append((genotype, value))
        self.rows.append(list(hyperparameters) if hyperparameters else None)
        self._evaluated.add(genotype.arch_hash)

    def add_pruned(self, genotype: Genotype, value: float) -> None:
        """Record a trial stopped early with its last metric value: the architecture is never proposed again, but
        it is not a result (:attr:`history`, :attr:`results`) and nothing is learnt from it."""
        genotype = genotype.pruned()
        self.pruned.append((genotype, value))
        self._evaluated.add(genotype.arch_hash)

    @property
    def results(self) -> dict[str, list[float]]:
        """arch_hash -> metric values of full results (several if an architecture was evaluated more than once)."""
        out: dict[str, list[float]] = {}
        for genotype, value in self.history:
            out.setdefault(genotype.arch_hash, []).append(value)
        return out

    def score(self, value: float) -> float:
        """``value`` on a higher-is-better scale (negated for mode ``"min"``)."""
        return value if self._mode == "max" else -value

    def _next_unseen(self) -> tuple[Genotype, int | None]:
        seen = self._evaluated | {g.arch_hash for g in self.pending.values()}
        for _ in range(self.MAX_PROPOSALS):
            genotype, parent = self._propose()
            if genotype.arch_hash not in seen:
                return genotype, parent
        for _ in range(self.MAX_SAMPLES):  # the proposal keeps hitting seen architectures: explore uniformly
            genotype = self.space.sample(self.rng)
            if genotype.arch_hash not in seen:
                return genotype, None
        raise RuntimeError(f"search space exhausted: no unseen architecture in {self.MAX_SAMPLES:,} draws")

    # --- GenotypeSearcherHooks's hooks --------------------------------------------------------------
    def _choose(self) -> tuple[Genotype, list]:
        """An unseen architecture (:meth:`_propose`, redrawn while seen), then its row
        (:meth:`_propose_hyperparameters`, given the architecture's parent)."""
        genotype, parent = self._next_unseen()
        return genotype, self._propose_hyperparameters(parent)

    def _has_hp_rows(self) -> bool:
        return self._has_rows(self.rows, self.hp_pending)

    @staticmethod
    def _has_rows(rows: list[list | None], hp_pending: dict[str, list]) -> bool:
        return bool(hp_pending) or any(row is not None for row in rows)

    # --- state (JSON only) -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The whole state as JSON-able values: genotypes as their JSON strings, the Generator's state dict;
        ``hyperparameters`` holds the dimensions' descriptions, one row (or null) per :attr:`history` entry and
        pending trials' rows."""
        settings = {**{name: getattr(self, name) for name in BASE_SETTINGS},
                    **{name: getattr(self, name) for name in self.SETTINGS}}
        return {
            **state_header(self, settings),
            "history": [[g.to_json(), value] for g, value in self.history],
            "pending": {trial_id: g.to_json() for trial_id, g in self.pending.items()},
            "pruned": [[g.to_json(), value] for g, value in self.pruned],
            "hyperparameters": {"dimensions": self.hp_description,
                                "rows": [None if row is None else list(row) for row in self.rows],
                                "pending": {trial_id: list(row) for trial_id, row in self.hp_pending.items()}},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`get_state`'s dict; a state of another class or a malformed one raises a one-line
        ``ValueError`` and leaves this searcher unchanged."""
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ValueError(f"{type(self).__name__} state: {_one_line(err)}") from None

    def save(self, checkpoint_path: str) -> None:
        """Write the state as JSON, atomically (a temporary file in the same directory, then ``os.replace``)."""
        write_json_atomic(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Read a state written by :meth:`save` of the same class; anything else raises a one-line ``ValueError``."""
        state = read_json_state(checkpoint_path)
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
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
        pruned = parse_pruned(state.get("pruned", []))
        hyperparameters = self._parse_hyperparameters(state.get("hyperparameters"), len(history), pending)
        settings = self._parse_base_settings(state["settings"])
        previous = {name: getattr(self, name) for name in self.SETTINGS}
        self.__dict__.update({name: settings[name] for name in self.SETTINGS})
        try:
            self._check_settings()
        except ValueError:
            self.__dict__.update(previous)
            raise
        self.__dict__.update({name: settings[name] for name in BASE_SETTINGS}, **hyperparameters)
        self._metric, self._mode, self.space = state["metric"], state["mode"], space
        self.max_concurrent, self.rng = state["max_concurrent"], rng
        self.history, self.pending, self.pruned = history, pending, pruned
        self._evaluated = {g.arch_hash for g, _ in [*history, *pruned]}

    def _parse_base_settings(self, settings: Any) -> dict[str, Any]:
        """A state's settings: this class's ``SETTINGS`` and :data:`BASE_SETTINGS` (which a state written before
        they existed may lack: their defaults), the latter checked."""
        if not isinstance(settings, dict) or not set(self.SETTINGS) <= set(settings) <= {*self.SETTINGS,
                                                                                          *BASE_SETTINGS}:
            got = sorted(settings) if isinstance(settings, dict) else settings
            raise ValueError(f"settings: expected {sorted(self.SETTINGS)} (and optionally {sorted(BASE_SETTINGS)}), "
                             f"got {got}")
        out = {**BASE_SETTINGS, **settings}
        check_budget(out["full_budget"], out["budget_attr"])
        return out

    def _parse_hyperparameters(self, value: Any, n_history: int, pending: dict[str, Genotype]) -> dict[str, Any]:
        """The hyperparameter attributes a state's ``hyperparameters`` entry sets (none if it is absent). Once this
        searcher has a param_space, a state holding rows for other dimensions is refused."""
        if value is None:
            description, rows, hp_pending = [], [None] * n_history, {}
        else:
            if not isinstance(value, dict) or set(value) != {"dimensions", "rows", "pending"}:
                raise ValueError("hyperparameters: expected an object with the keys dimensions, rows, pending")
            description = check_descriptions(value["dimensions"])
            if not isinstance(value["rows"], list) or len(value["rows"]) != n_history:
                raise ValueError(f"hyperparameters.rows: expected one row or null per history entry ({n_history})")
            rows = [None if row is None else check_row(description, row) for row in value["rows"]]
            hp_pending = self._parse_hp_pending(value["pending"], description, pending)
        description = self._restored_description(description, self._has_rows(rows, hp_pending))
        return {"hp_description": description, "rows": rows, "hp_pending": hp_pending}


class RandomSearcher(GenotypeSearcher):
    """Uniform random search: each proposal is ``space.sample(rng)``, redrawn until unseen (distinct architectures),
    and every hyperparameter of the param_space drawn from its own Tune distribution with the same seeded
    Generator (after the genotype). Results teach it nothing.

    Args: as :class:`GenotypeSearcher`.

    Example, a joint architecture + hyperparameter search with metric and mode given to Tune (runs as is on a
    laptop; the trainable here is a stand-in for ``trainables.image.train_candidate``)::

        import math

        from ray import tune
        from search_space import Genotype, encode
        from search_space.baseline_searchers import RandomSearcher

        def trainable(config):
            g = Genotype.from_json(config["genotype"])
            lr = config["optim"]["lr"]  # a number, sampled by the searcher
            return {"auroc_msp": float(encode(g)[:15].mean()) - abs(math.log10(lr) + 2) / 10}  # higher = better

        searcher = RandomSearcher(seed=0)
        param_space = {"optim": {"lr": tune.loguniform(1e-4, 1e-1)}, "epochs": 3}
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(
            metric="auroc_msp", mode="max", search_alg=searcher, num_samples=16, max_concurrent_trials=2,
            reuse_actors=True))
        best = tuner.fit().get_best_result()
        print(best.config["genotype"], best.config["optim"], best.metrics["auroc_msp"])
    """

    def _propose(self) -> tuple[Genotype, None]:
        return self.space.sample(self.rng), None


class RegularizedEvolutionSearcher(GenotypeSearcher):
    """Regularized (aging) evolution, Real et al. 2019 (Algorithm 1), asynchronous as Tune runs it.

    Until ``population`` results exist every proposal is a uniform sample. Afterwards the population is the last
    ``population`` completed results, ordered by completion (aging: each new result pushes out the *oldest*
    member, however good). A proposal draws ``sample_size`` members uniformly *with replacement*, as in the
    paper's pseudocode, takes the best of them by the metric (mode ``"max"``: highest; ties: the first drawn) as
    the parent and returns ``space.mutate(parent, rng)``; a child already evaluated, stopped early or pending is
    redrawn (a new tournament and mutation). Errored children and children stopped early by a scheduler (their
    metric is partial: see ``full_budget``) never join the population.

    Hyperparameters (the param_space's sampled dimensions) are mutated with the architecture: the child inherits
    its parent's row through :func:`search_space.hyperparameters.mutate` — PredictorEvolutionSearcher's
    per-dimension rule: each dimension redrawn from its distribution with probability 0.2, else the parent's value,
    a number moved by a Gaussian step of 0.1 of its (log) range — while the parent is the tournament's winner
    (not drawn from an elite as PredictorEvolutionSearcher does). In the random phase, for a uniform fallback
    sample and for a parent without hyperparameters (an evaluated point lacking them) every dimension is drawn
    from its distribution.

    Args:
        population: the population size P (>= 2).
        sample_size: the tournament size S (1 <= S <= P).
        metric, mode, space, max_concurrent, full_budget, budget_attr, seed: as :class:`GenotypeSearcher`.

    Example (runs as is on a laptop; the trainable here is a stand-in for ``trainables.image.train_candidate``)::

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
                 population: int = 20, sample_size: int = 5, max_concurrent: int | None = None,
                 full_budget: float | None = None, budget_attr: str = "training_iteration", seed: int = 0):
        super().__init__(metric, mode, space=space, max_concurrent=max_concurrent, full_budget=full_budget,
                         budget_attr=budget_attr, seed=seed)
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

    def _propose(self) -> tuple[Genotype, int | None]:
        if len(self.history) < self.population:
            return self.space.sample(self.rng), None
        members, first = self.members, len(self.history) - self.population
        drawn = self.rng.integers(len(members), size=self.sample_size)
        parent = int(max(drawn, key=lambda i: self.score(members[i][1])))  # max keeps the first of equal scores
        return self.space.mutate(members[parent][0], self.rng), first + parent

    def _propose_hyperparameters(self, parent: int | None) -> list:
        """The parent's row mutated (:func:`search_space.hyperparameters.mutate`), or without a parent or its row
        every dimension from its distribution."""
        row = None if parent is None else self.rows[parent]
        if row is None or not self.dimensions:
            return super()._propose_hyperparameters(parent)
        return mutate(self.dimensions, row, self.rng)
