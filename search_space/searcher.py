"""Ray Tune ``Searcher`` that proposes DCSOD genotypes: random until it has enough results, then a neural
predictor fit on every (architecture, metric) pair so far, explored by Metropolis evolution; optionally jointly
with the hyperparameters of Tune's ``param_space``.

Importing this module imports Ray; the rest of ``search_space`` stays Ray-free (but for ``hyperparameters`` and
the modules importing it: ``searcher_hooks``, ``baseline_searchers``).

Example, a joint architecture + hyperparameter search (runs as is on a laptop; the trainable here is a stand-in
for ``trainables.image.train_candidate``)::

    import math

    from ray import tune
    from search_space import Genotype, encode
    from search_space.searcher import PredictorEvolutionSearcher

    def trainable(config):
        g = Genotype.from_json(config["genotype"])
        lr, batch_size = config["optim"]["lr"], config["optim"]["batch_size"]  # numbers, sampled by the searcher
        score = float(encode(g)[:15].mean()) - abs(math.log10(lr) + 2) / 10 - (batch_size == 128) / 20
        return {"auroc_msp": score}  # any metric, higher = better here

    searcher = PredictorEvolutionSearcher(min_results=8, seed=0)
    param_space = {"optim": {"lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([64, 128])}, "epochs": 3}
    tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(
        metric="auroc_msp", mode="max", search_alg=searcher, num_samples=16, max_concurrent_trials=2,
        reuse_actors=True))
    best = tuner.fit().get_best_result()
    print(best.config["genotype"], best.config["optim"], best.metrics["auroc_msp"])

``suggest`` returns ``{"genotype": <JSON string>}`` plus a value for every search-space object of ``param_space``
(nested as there; Tune merges the suggestion into the param_space, so constants reach the trainable unchanged).
Metric and mode come from the constructor or from ``tune.TuneConfig``, with or without a ``param_space`` (without
one Tune never calls ``set_search_properties``: see :func:`search_space.tune_properties.tune_run_metric_and_mode`);
lacking both at the first ``suggest`` is a one-line ``ValueError``. Errored trials (``result`` None or without the
metric, or a non-finite value) are ignored. The predictor is refit lazily, at the first ``suggest`` after every
``refit_every`` new results; each refit runs one evolution whose ``batch`` best unseen architectures are
handed out in order.

Hyperparameters (the supported dimensions are listed in :mod:`search_space.hyperparameters`, unsupported ones are
a one-line ``ValueError`` naming the key): each dimension is drawn from its own Tune distribution until
``min_results`` full results carry hyperparameters; then a parent is drawn from the best quarter of those results
and each dimension is redrawn (probability 0.2) or inherits the parent's value, a number moved by a Gaussian step
of 0.1 of its (log) range. The predictor sees architectures only: its target for an architecture is the mean
metric over the hyperparameters that architecture happened to get.

Trials stopped early (``add_evaluated_point(..., pruned=True)``, or with ``full_budget`` set a completed trial whose
``budget_attr``, e.g. ``training_iteration``, is below it — Tune marks a scheduler-stopped result ``done`` too, so
the budget is the only signal) are kept apart in :attr:`PredictorEvolutionSearcher.pruned`: their architectures are
not proposed again, but neither the predictor nor the hyperparameter rule learns from their partial metric.

All randomness comes from one seeded ``numpy`` Generator held in the state, so
``save``/``restore`` (used by ``Tuner.restore``) continue with exactly the suggestions an uninterrupted
searcher would have made.

The searcher's state is plain JSON (``searcher-state-<session>.json`` in Tune's experiment directory), never a
pickle, so reading it back cannot run code: :meth:`PredictorEvolutionSearcher.get_state` holds the
settings, the Generator's state, every result, pending trial, pruned trial and queued proposal as genotype JSON,
the hyperparameter rows (numbers, a choice's category index) with their dimensions' descriptions, and the fitted
predictor as data (:meth:`search_space.predictor.Predictor.to_state`). A state written before pruned trials and
hyperparameters existed (same format 1) reads as having none. A state whose hyperparameter rows were sampled over
other dimensions than the restoring run's param_space, a pickle, a corrupt file or another
searcher's state is refused with a one-line ``ValueError`` that leaves the searcher unchanged. Searchers of older
versions wrote ``searcher-state-<session>.pkl``; such a file is never read: restoring a directory that holds only
one raises a ``ValueError`` naming it (delete the stage's Tune directory to rerun the stage). Tune itself logs that
error and restarts the experiment; :func:`legacy_state_error` lets a caller check a directory before
``Tuner.restore``. (Tune's own files — ``tuner.pkl``, ``experiment_state-*.json``, ``search_gen_state-*.json`` —
are cloudpickles that ``Tuner.restore`` loads; they are outside this module.)
"""
from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from .encoding import encode_many
from .evolution import REFERENCES, evolve, temperature_schedule
from .genotype import Genotype
from .hyperparameters import Dimension, check_descriptions, check_row, propose
from .predictor import make_predictor, predictor_from_state
from .searcher_hooks import GenotypeSearcherHooks
from .searcher_state import (
    STATE_FORMAT,
    check_mode,
    one_line,
    read_json_state,
    state_header,
    write_json_atomic,
)
from .space import SearchSpace
from .tune_properties import check_budget as _check_budget
from .tune_properties import parse_pruned as _parse_pruned

#: The file name pickled states of older versions were saved under (never read; see the module docstring).
LEGACY_CKPT_FILE_TMPL = "searcher-state-{}.pkl"
_EVOLUTION_KEYS = ("population", "generations", "temperature", "final_temperature", "reference")
_SETTINGS = ("predictor_name", "predictor_args", "min_results", "refit_every", "batch", "evolution_args")
#: Settings added after states were first written, with the value a state without them means.
_LATER_SETTINGS = {"full_budget": None, "budget_attr": "training_iteration"}


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


class PredictorEvolutionSearcher(GenotypeSearcherHooks, Searcher):
    """Predictor-guided evolutionary search over :class:`SearchSpace` genotypes (DCSOD §4.3), optionally jointly
    with the hyperparameters of ``param_space`` (see the module docstring). Its Ray Tune hooks (``suggest``,
    ``on_trial_complete``, ``add_evaluated_point``, ``set_search_properties``) are
    :class:`~search_space.searcher_hooks.GenotypeSearcherHooks`'s.

    Args:
        metric, mode: the result key to optimise and ``"max"``/``"min"``; or give them to ``tune.TuneConfig``
            (with or without a ``param_space``). Given in both places, they must agree.
        space: the search space (default ``SearchSpace()``, k = 6, fixed operators).
        predictor, predictor_args: a name in ``search_space.predictor.PREDICTORS`` and its keyword arguments.
        min_results: random proposals until this many results exist (warm-start pairs count); hyperparameters are
            random until this many results carry them.
        refit_every: refit the predictor after this many new results.
        batch: proposals taken from one evolution run (default ``refit_every``).
        population, generations, temperature, final_temperature, reference: evolution settings
            (:func:`search_space.evolution.run_evolution`). The temperature is in units of the metric (the
            predictor predicts on the metric's own scale): a proposal predicted ``d`` worse than the reference
            is accepted with probability ``exp(-d/T)`` — with AUROC as a fraction and T = 0.05, d = 0.05 gives
            e^-1 ≈ 0.37 and d = 0.01 gives 0.82. ``reference="best"`` (the thesis's EA, default) compares a
            proposal with the best predicted architecture so far, ``"chain"`` with the chain's own state.
        warm_start: a ``history.parquet`` path or ``(genotype, value)`` pairs, known before the first trial.
            Pairs are read at once (a one-shot iterable is fine); a path is read as soon as the metric is known.
        max_concurrent: at most this many pending suggestions (``None``: no limit; ``ConcurrencyLimiter``
            sets it through :meth:`set_max_concurrency`).
        full_budget, budget_attr: with an early-stopping scheduler, the budget of a full trial (e.g.
            ``ASHAScheduler(max_t=...)``'s ``max_t``) and the result key counting it. A completed trial whose last
            result has ``budget_attr`` below ``full_budget`` was stopped early: it is kept in :attr:`pruned`, not
            learnt from. ``None`` (default): every completed trial is a full result.
        seed: seeds every random choice.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"

    def __init__(self, metric: str | None = None, mode: str | None = None, *, space: SearchSpace | None = None,
                 predictor: str = "mlp", predictor_args: dict | None = None, min_results: int = 10,
                 refit_every: int = 5, batch: int | None = None, population: int = 32, generations: int = 30,
                 temperature: float = 0.05, final_temperature: float | None = None, reference: str = "best",
                 warm_start: str | os.PathLike | Sequence | None = None, max_concurrent: int | None = None,
                 full_budget: float | None = None, budget_attr: str = "training_iteration", seed: int = 0):
        if mode not in (None, "max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        if min_results < 2 or refit_every < 1:
            raise ValueError("min_results >= 2 and refit_every >= 1 are required")
        if reference not in REFERENCES:
            raise ValueError(f"reference: expected one of {', '.join(REFERENCES)}, got {reference!r}")
        _check_budget(full_budget, budget_attr)
        super().__init__(metric=metric, mode=mode)
        self.space = space or SearchSpace()
        self.predictor_name, self.predictor_args = predictor, dict(predictor_args or {})
        make_predictor(predictor, **self.predictor_args)  # fail fast on a bad name or argument
        self.min_results, self.refit_every = min_results, refit_every
        self.batch = batch or refit_every
        self.evolution_args = dict(population=population, generations=generations, temperature=temperature,
                                   final_temperature=final_temperature, reference=reference)
        self.full_budget, self.budget_attr = full_budget, budget_attr
        self.max_concurrent = max_concurrent
        self.rng = np.random.default_rng(seed)
        self.results: dict[str, list[float]] = {}  # arch_hash -> metric values (several seeds possible)
        self.genotypes: dict[str, Genotype] = {}
        self.pending: dict[str, Genotype] = {}  # trial_id -> genotype
        self.pruned: list[tuple[Genotype, float]] = []  # stopped early: (genotype, last metric value), in order
        self.queue: list[Genotype] = []
        self.predictor = None
        self.new_since_fit = 0
        self.n_fits = 0
        # Hyperparameters: the param_space's dimensions (None until a param_space is given), their JSON description
        # (what the state holds), full results' rows of stored values with the metric, pending trials' rows.
        self.dimensions: list[Dimension] | None = None
        self.hp_description: list[dict] = []
        self.hp_history: list[tuple[list, float]] = []
        self.hp_pending: dict[str, list] = {}
        if warm_start is not None and not isinstance(warm_start, (str, os.PathLike)):
            warm_start = load_pairs(warm_start, metric)  # [(Genotype, float)]: storable in get_state until loaded
        self._warm_start = warm_start
        if warm_start is not None and metric is not None:
            self._load_warm_start()

    # --- GenotypeSearcherHooks's hooks --------------------------------------------------------------
    def _choose(self) -> tuple[Genotype, list]:
        """The next unseen architecture (random until ``min_results``, then the predictor's proposals), then its
        hyperparameter row (:func:`search_space.hyperparameters.propose`)."""
        genotype = self._next()
        return genotype, propose(self.dimensions or [], self.hp_history, self.rng, self._mode, self.min_results)

    def _has_hp_rows(self) -> bool:
        return bool(self.hp_history or self.hp_pending)

    def _adopted(self) -> None:
        """Load a waiting warm start once the metric is known."""
        if self._warm_start is not None and self._metric is not None and not self.results:
            self._load_warm_start()

    # --- results -----------------------------------------------------------------------------------
    def add_result(self, genotype: Genotype, value: float, hyperparameters: list | None = None) -> None:
        """Record one full (architecture, metric) result; repeated architectures are averaged for the predictor.
        ``hyperparameters``: the trial's row of stored values (:mod:`search_space.hyperparameters`), if any."""
        h = genotype.arch_hash
        self.genotypes.setdefault(h, genotype.pruned())
        self.results.setdefault(h, []).append(value)
        self.new_since_fit += 1
        if hyperparameters:
            self.hp_history.append((list(hyperparameters), value))

    def add_pruned(self, genotype: Genotype, value: float) -> None:
        """Record a trial stopped early with its last metric value: the architecture is never proposed again, but
        neither the predictor nor the hyperparameter rule learns from it, and it counts toward neither
        ``min_results`` nor ``refit_every``."""
        self.pruned.append((genotype.pruned(), value))

    # --- state (JSON only) -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The whole state as JSON-able values: genotypes as their JSON strings, the Generator's state dict, the
        fitted predictor as :meth:`~search_space.predictor.Predictor.to_state`. A warm start not loaded yet (no
        metric was known) is kept as it is: ``{"path": ...}`` or ``{"pairs": [[genotype JSON, value], ...]}``.
        ``hyperparameters`` holds the dimensions' descriptions, full results' rows with their metric value and
        pending trials' rows."""
        if self._warm_start is None:
            warm_start = None
        elif isinstance(self._warm_start, (str, os.PathLike)):
            warm_start = {"path": os.fspath(self._warm_start)}
        else:
            warm_start = {"pairs": [[g.to_json(), value] for g, value in self._warm_start]}
        settings = {"predictor_name": self.predictor_name, "predictor_args": self.predictor_args,
                    "min_results": self.min_results, "refit_every": self.refit_every, "batch": self.batch,
                    "evolution_args": self.evolution_args, "full_budget": self.full_budget,
                    "budget_attr": self.budget_attr}
        return {
            **state_header(self, settings),
            "results": {h: list(values) for h, values in self.results.items()},
            "genotypes": {h: g.to_json() for h, g in self.genotypes.items()},
            "pending": {trial_id: g.to_json() for trial_id, g in self.pending.items()},
            "pruned": [[g.to_json(), value] for g, value in self.pruned],
            "queue": [g.to_json() for g in self.queue],
            "predictor": None if self.predictor is None else self.predictor.to_state(),
            "new_since_fit": self.new_since_fit,
            "n_fits": self.n_fits,
            "warm_start": warm_start,
            "hyperparameters": {"dimensions": self.hp_description,
                                "history": [[list(row), value] for row, value in self.hp_history],
                                "pending": {trial_id: list(row) for trial_id, row in self.hp_pending.items()}},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`get_state`'s dict. Everything is checked before anything is assigned: a state of another
        class or a malformed one raises a one-line ``ValueError`` and leaves this searcher unchanged. A state
        written before ``pruned``, ``hyperparameters``, ``full_budget`` and ``budget_attr`` existed reads as
        having none and the defaults."""
        self.__dict__.update(self._parse_state(state, f"{type(self).__name__} state"))

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`get_state` as JSON, atomically (a temporary file in the same directory, fsync,
        ``os.replace``)."""
        write_json_atomic(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Read a state written by :meth:`save` of this class (JSON only, never unpickled); anything else — a
        pickle, a corrupt file, another searcher's state — raises a one-line ``ValueError`` naming the file and
        leaves this searcher unchanged."""
        state = read_json_state(checkpoint_path)
        self.__dict__.update(self._parse_state(state, os.fspath(checkpoint_path)))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Tune's restore (``Tuner.restore``): the newest ``searcher-state-*.json`` in ``checkpoint_dir``. A directory
        holding only a pickled state of an older version raises a one-line ``ValueError`` naming that file (never
        read; see :func:`legacy_state_error`)."""
        error = legacy_state_error(checkpoint_dir)
        if error:
            raise ValueError(error)
        super().restore_from_dir(checkpoint_dir)

    def _parse_state(self, state: Any, where: str) -> dict[str, Any]:
        """The attributes ``state`` sets, all checked; any problem is a one-line ``ValueError`` ``where: ...``."""
        try:
            return self._parse_state_fields(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
            raise ValueError(f"{where}: {one_line(err)}") from None

    def _parse_state_fields(self, state: Any) -> dict[str, Any]:
        if not isinstance(state, dict) or "searcher" not in state:
            raise ValueError("not a searcher state (a JSON object with 'format' and 'searcher')")
        if state["searcher"] != type(self).__name__:
            raise ValueError(f"state written by {state['searcher']}, cannot restore a {type(self).__name__}")
        if state["format"] != STATE_FORMAT:
            raise ValueError(f"state format {state['format']!r}, this version reads {STATE_FORMAT}")
        metric, mode = state["metric"], state["mode"]
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f"metric: expected a string or null, got {metric!r}")
        check_mode(mode)
        out: dict[str, Any] = {"_metric": metric, "_mode": mode, "space": SearchSpace(**state["space"])}
        out.update(_parse_settings(state["settings"]))
        max_concurrent = state["max_concurrent"]
        if max_concurrent is not None and not (_is_int(max_concurrent) and max_concurrent >= 1):
            raise ValueError(f"max_concurrent: expected null or an integer >= 1, got {max_concurrent!r}")
        out["max_concurrent"] = max_concurrent
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        out["rng"] = rng
        results = {}
        for h, values in _dict(state["results"], "results").items():
            if not isinstance(values, list) or not values or not all(_is_number(v) and math.isfinite(v)
                                                                     for v in values):
                raise ValueError(f"results[{h!r}]: expected a non-empty list of finite numbers")
            results[h] = [float(v) for v in values]
        genotypes = {h: Genotype.from_json(g) for h, g in _dict(state["genotypes"], "genotypes").items()}
        for h, g in genotypes.items():
            if g.arch_hash != h:
                raise ValueError(f"genotypes[{h!r}]: the genotype's arch_hash is {g.arch_hash}")
        if set(genotypes) != set(results):
            raise ValueError("results and genotypes: expected the same arch_hash keys")
        out.update(results=results, genotypes=genotypes)
        out["pending"] = {trial_id: Genotype.from_json(g) for trial_id, g in _dict(state["pending"], "pending").items()}
        if not isinstance(state["queue"], list):
            raise ValueError("queue: expected a list")
        out["queue"] = [Genotype.from_json(g) for g in state["queue"]]
        out["pruned"] = _parse_pruned(state.get("pruned", []))
        k = out["space"].k
        if any(g.k != k for g in [*genotypes.values(), *out["pending"].values(), *out["queue"],
                                  *(g for g, _ in out["pruned"])]):
            raise ValueError(f"genotypes, pending, queue, pruned: expected genotypes of the space's k={k}")
        out.update(self._parse_hyperparameters(state.get("hyperparameters"), out["pending"]))
        out["predictor"] = None if state["predictor"] is None else predictor_from_state(state["predictor"])
        for name in ("new_since_fit", "n_fits"):
            if not (_is_int(state[name]) and state[name] >= 0):
                raise ValueError(f"{name}: expected an integer >= 0, got {state[name]!r}")
            out[name] = state[name]
        warm = state["warm_start"]
        if warm is None:
            out["_warm_start"] = None
        elif isinstance(warm, dict) and set(warm) == {"path"} and isinstance(warm["path"], str):
            out["_warm_start"] = warm["path"]
        elif isinstance(warm, dict) and set(warm) == {"pairs"} and isinstance(warm["pairs"], list):
            pairs = [(Genotype.from_json(g), value) for g, value in warm["pairs"]]
            if not all(_is_number(v) and math.isfinite(v) for _, v in pairs):
                raise ValueError("warm_start: expected finite metric values")
            out["_warm_start"] = [(g, float(v)) for g, v in pairs]
        else:
            raise ValueError('warm_start: expected null, {"path": ...} or {"pairs": [...]}')
        return out

    def _parse_hyperparameters(self, value: Any, pending: dict[str, Genotype]) -> dict[str, Any]:
        """The hyperparameter attributes a state's ``hyperparameters`` entry sets (none if it is absent). Once this
        searcher has a param_space, a state holding rows for other dimensions is refused."""
        if value is None:
            description, history, hp_pending = [], [], {}
        else:
            value = _dict(value, "hyperparameters")
            if set(value) != {"dimensions", "history", "pending"}:
                raise ValueError("hyperparameters: expected the keys dimensions, history, pending")
            description = check_descriptions(value["dimensions"])
            if not isinstance(value["history"], list):
                raise ValueError("hyperparameters.history: expected a list")
            history = []
            for item in value["history"]:
                if not (isinstance(item, list) and len(item) == 2 and _is_number(item[1]) and math.isfinite(item[1])):
                    raise ValueError("hyperparameters.history: expected [row, finite metric value] pairs")
                history.append((check_row(description, item[0]), float(item[1])))
            hp_pending = self._parse_hp_pending(value["pending"], description, pending)
        description = self._restored_description(description, bool(history or hp_pending))
        return {"hp_description": description, "hp_history": history, "hp_pending": hp_pending}

    # --- proposals ---------------------------------------------------------------------------------
    def _load_warm_start(self) -> None:
        for genotype, value in load_pairs(self._warm_start, self._metric):
            self.add_result(genotype, value)
        self._warm_start = None

    def _seen(self) -> set[str]:
        return (set(self.results) | {g.arch_hash for g in self.pending.values()}
                | {g.arch_hash for g, _ in self.pruned})

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


def legacy_state_error(experiment_dir: str | os.PathLike) -> str | None:
    """A one-line message naming the pickled searcher state (``searcher-state-*.pkl``, written by versions before
    the JSON state) in ``experiment_dir`` if it holds one and no JSON state, else None. Such a file is never read.

    Tune 2.60 catches an exception raised while it restores a searcher (``TuneController.resume``), logs it and
    *restarts* the experiment, so a caller that must not restart silently checks the experiment directory with
    this function before ``Tuner.restore``."""
    directory = os.fspath(experiment_dir)
    if glob.glob(os.path.join(directory, PredictorEvolutionSearcher.CKPT_FILE_TMPL.format("*"))):
        return None
    legacy = sorted(glob.glob(os.path.join(directory, LEGACY_CKPT_FILE_TMPL.format("*"))))
    if not legacy:
        return None
    return (f"{legacy[-1]}: a pickled searcher state of an older version, never read (unpickling can run code); "
            f"this Tune experiment cannot be resumed: delete {directory} to rerun it")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object")
    return value


def _parse_settings(settings: Any) -> dict[str, Any]:
    """The constructor settings of a saved state, checked as the constructor checks them (a setting of
    ``_LATER_SETTINGS`` may be absent: the state predates it)."""
    if not isinstance(settings, dict) or not set(_SETTINGS) <= set(settings) <= {*_SETTINGS, *_LATER_SETTINGS}:
        raise ValueError(f"settings: expected the keys {', '.join(_SETTINGS)} (and optionally "
                         f"{', '.join(_LATER_SETTINGS)})")
    later = {name: settings.get(name, default) for name, default in _LATER_SETTINGS.items()}
    _check_budget(later["full_budget"], later["budget_attr"])
    name, args = settings["predictor_name"], _dict(settings["predictor_args"], "settings.predictor_args")
    make_predictor(name, **args)  # a one-line RegistryError (a ValueError) on a bad name or argument
    for key, low in (("min_results", 2), ("refit_every", 1), ("batch", 1)):
        if not (_is_int(settings[key]) and settings[key] >= low):
            raise ValueError(f"settings.{key}: expected an integer >= {low}, got {settings[key]!r}")
    evo = _dict(settings["evolution_args"], "settings.evolution_args")
    if set(evo) != set(_EVOLUTION_KEYS):
        raise ValueError(f"settings.evolution_args: expected the keys {', '.join(_EVOLUTION_KEYS)}")
    if not (_is_int(evo["population"]) and evo["population"] >= 1 and _is_int(evo["generations"])
            and evo["generations"] >= 0):
        raise ValueError("settings.evolution_args: population >= 1 and generations >= 0 must be integers")
    if not _is_number(evo["temperature"]) or not (evo["final_temperature"] is None
                                                  or _is_number(evo["final_temperature"])):
        raise ValueError("settings.evolution_args: temperature and final_temperature must be numbers")
    temperature_schedule(evo["temperature"], evo["final_temperature"], evo["generations"])
    if evo["reference"] not in REFERENCES:
        raise ValueError(f"settings.evolution_args.reference: expected one of {', '.join(REFERENCES)}, "
                         f"got {evo['reference']!r}")
    return {"predictor_name": name, "predictor_args": dict(args), "min_results": settings["min_results"],
            "refit_every": settings["refit_every"], "batch": settings["batch"], "evolution_args": dict(evo),
            **later}

