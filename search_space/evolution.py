"""Predictor-guided evolutionary search with Metropolis acceptance (DCSOD, seed §4.3).

Scores are *maximised* and are in the units of whatever ``score_fn`` returns (predicted AUROC as a
fraction in practice); temperatures are in the same units. ``score_fn`` maps a list of genotypes to a
1-D array of scores, one per genotype, and is always called in batches.

The search runs ``population`` Metropolis chains. Every generation each chain proposes one child with
:meth:`SearchSpace.mutate` (flip one edge of one cell, or resample one cell); the proposals that have not been
scored before are scored in one batched ``score_fn`` call; each chain then accepts its proposal with
:func:`acceptance_probability` against a *reference* score (``reference``):

* ``"best"`` (the thesis's EA, §4.3.1, and the default): the best score seen so far, over every chain, as it
  stood when the generation's proposals were made — a proposal is compared with the current best
  architecture, so a chain moves to it only if it is at most a few ``T`` below the best;
* ``"chain"``: the score of the chain's **own current state** (the architecture it sits on), i.e.
  ``population`` independent Metropolis chains.

An accepted proposal becomes the chain's state either way. Scores are cached by ``arch_hash``: no
architecture is ever scored twice. The result is the ``top_k`` distinct architectures by score among
everything scored (accepted or not), minus ``exclude``, best first.

The temperature ``T`` is in score units: a proposal ``d`` worse than the reference is accepted with
probability ``exp(-d/T)``. With predicted AUROC as a fraction and ``T = 0.05``, a proposal 0.05 worse is
accepted with probability e^-1 ≈ 0.37, one 0.01 worse with 0.82, one 0.1 worse with 0.14.

>>> from search_space import SearchSpace, encode_many
>>> w = np.random.default_rng(0).normal(size=120)
>>> top = evolve(SearchSpace(), lambda gs: encode_many(gs) @ w, population=4, generations=3, top_k=2)
>>> len(top), top[0][1] >= top[1][1]
(2, True)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from .genotype import Genotype
from .space import SearchSpace, Seed, as_rng

Scorer = Callable[[list[Genotype]], np.ndarray]
REFERENCES = ("best", "chain")

__all__ = [
    "REFERENCES", "EvolutionResult", "GenerationStats", "Scorer", "acceptance_probability", "constant_schedule",
    "evolve", "geometric_schedule", "metropolis_accept", "run_evolution", "temperature_schedule",
]


# --- Metropolis rule -----------------------------------------------------------------------------
def _check_temperature(temperature: float, name: str = "temperature") -> float:
    t = float(temperature)
    if math.isnan(t) or t < 0:
        raise ValueError(f"{name}: expected a temperature >= 0 (0 = greedy), got {temperature!r}")
    return t


def _clean(score: float) -> float:
    """NaN scores count as -inf: never accepted over a real score, ranked last."""
    s = float(score)
    return -math.inf if math.isnan(s) else s


def acceptance_probability(current: float, candidate: float, temperature: float) -> float:
    """Probability of moving from a state scored ``current`` to one scored ``candidate`` (maximisation).

    ``1.0`` if ``candidate >= current`` (improvements and ties), else ``exp(-(current - candidate) / T)``.
    ``T`` is in score units and must be >= 0; ``T = 0`` is the greedy limit (only improvements and ties
    are accepted, a worse candidate has probability 0); ``T = inf`` accepts everything. A negative or
    NaN ``T`` raises ``ValueError``. NaN scores are treated as ``-inf``.

    The thesis prints eq. 4.8 as ``min(1, exp((score* - score) / T))``; with score* the current and score
    the candidate's score, that exponent is positive for every *worse* candidate, so it would accept all of
    them and reject improvements. This is the intended rule (``DESIGN.md``), with the sign fixed.
    """
    t = _check_temperature(temperature)
    current, candidate = _clean(current), _clean(candidate)
    if candidate >= current:
        return 1.0
    if t == 0.0:
        return 0.0
    return math.exp(-(current - candidate) / t)


def metropolis_accept(current: float, candidate: float, temperature: float, rng: np.random.Generator) -> bool:
    """One Metropolis decision: draws exactly one uniform from ``rng`` (also for improvements, so the
    stream does not depend on outcomes) and accepts iff it is below :func:`acceptance_probability`."""
    return bool(rng.random() < acceptance_probability(current, candidate, temperature))


def _acceptance_many(current: np.ndarray, candidate: np.ndarray, t: float) -> np.ndarray:
    """Vectorised :func:`acceptance_probability` (scores already cleaned of NaN, ``t`` checked)."""
    better = candidate >= current
    if t == 0.0:
        return better.astype(float)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(-(current - candidate) / t)
    return np.where(better, 1.0, np.nan_to_num(p, nan=0.0))


# --- temperature schedules -----------------------------------------------------------------------
def constant_schedule(temperature: float, generations: int) -> np.ndarray:
    """``generations`` copies of ``temperature`` (score units, >= 0)."""
    return np.full(int(generations), _check_temperature(temperature), dtype=float)


def geometric_schedule(initial: float, final: float, generations: int) -> np.ndarray:
    """Geometric annealing: ``T_g = initial · (final / initial)^(g / (G - 1))`` for ``g = 0 .. G-1``.

    The first generation runs at ``initial``, the last at exactly ``final`` (a single generation runs at
    ``initial``). Both must be > 0: a geometric schedule cannot reach 0; use ``temperature=0`` with a
    constant schedule for a greedy search.
    """
    a, b = _check_temperature(initial, "temperature"), _check_temperature(final, "final_temperature")
    if a == 0 or b == 0 or math.isinf(a) or math.isinf(b):
        raise ValueError(f"geometric annealing needs finite temperatures > 0, got {initial!r} -> {final!r}")
    g = int(generations)
    if g <= 0:
        return np.empty(0)
    out = np.geomspace(a, b, g) if g > 1 else np.array([a])
    if g > 1:
        out[0], out[-1] = a, b
    return out


def temperature_schedule(temperature: float, final_temperature: float | None, generations: int) -> np.ndarray:
    """Constant when ``final_temperature`` is None, else geometric from ``temperature`` to it."""
    if final_temperature is None:
        return constant_schedule(temperature, generations)
    return geometric_schedule(temperature, final_temperature, generations)


# --- the search ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationStats:
    """One generation: ``accepted`` of ``proposals`` moves taken at ``temperature``; ``new_evaluations``
    architectures scored for the first time; best score seen so far and mean score of the chains' states
    after the acceptance step."""

    generation: int
    temperature: float
    proposals: int
    accepted: int
    new_evaluations: int
    best_score: float
    mean_current: float


@dataclass
class EvolutionResult:
    """``top``: ``(genotype, score)`` best first; ``history``: one :class:`GenerationStats` per generation;
    ``scores``: every scored ``arch_hash`` -> score (the cache, insertion = scoring order)."""

    top: list[tuple[Genotype, float]]
    history: list[GenerationStats]
    scores: dict[str, float] = field(repr=False)

    @property
    def evaluations(self) -> int:
        """Distinct architectures scored (= genotypes passed to ``score_fn`` in total)."""
        return len(self.scores)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed moves over all generations (NaN with no generations)."""
        proposed = sum(h.proposals for h in self.history)
        return sum(h.accepted for h in self.history) / proposed if proposed else math.nan


def run_evolution(
    space: SearchSpace,
    score_fn: Scorer,
    *,
    population: int = 32,
    generations: int = 50,
    temperature: float = 0.05,
    final_temperature: float | None = None,
    top_k: int = 10,
    exclude: Collection[str] = (),
    init: Sequence[Genotype] | None = None,
    seed: Seed = 0,
    reference: str = "best",
) -> EvolutionResult:
    """Run the search and return the top architectures with per-generation statistics.

    Args:
        space: the search space (its ``mutate`` proposes children).
        score_fn: batched scorer, ``list[Genotype] -> array (n,)``; higher is better. Called once for the
            initial chain states and at most once per generation, only with architectures it has never
            seen (distinct ``arch_hash``), and never with an empty list.
        population: number of independent Metropolis chains.
        generations: proposal rounds; each chain proposes one child per generation.
        temperature: Metropolis temperature in score units (>= 0; 0 = greedy); the initial one if annealed.
            A proposal ``d`` below the reference is accepted with probability ``exp(-d/T)`` (T = 0.05 and
            d = 0.05: 0.37; d = 0.01: 0.82).
        final_temperature: None for a constant temperature, else the last generation's temperature of a
            geometric schedule (:func:`geometric_schedule`).
        top_k: how many architectures to return (fewer if fewer distinct ones were scored).
        exclude: ``arch_hash`` values never returned (e.g. already trained ones). They are still visited
            and scored: excluding an architecture does not change the search trajectory.
        init: starting states of the first ``len(init)`` chains (at most ``population``); the remaining
            chains start from distinct samples of ``space``.
        seed: int seed or a ``np.random.Generator``; all randomness comes from it.
        reference: ``"best"`` compares each proposal with the best score seen before its generation (the
            thesis); ``"chain"`` with the score of the chain's current state (see the module docstring).
    """
    if population < 1:
        raise ValueError(f"population: expected >= 1, got {population}")
    if generations < 0:
        raise ValueError(f"generations: expected >= 0, got {generations}")
    if top_k < 0:
        raise ValueError(f"top_k: expected >= 0, got {top_k}")
    if reference not in REFERENCES:
        raise ValueError(f"reference: expected one of {', '.join(REFERENCES)}, got {reference!r}")
    temps = temperature_schedule(temperature, final_temperature, generations)
    rng = as_rng(seed)
    init = [g.pruned() for g in (init or ())]
    if len(init) > population:
        raise ValueError(f"init: {len(init)} genotypes for {population} chains; give at most `population`")
    for n, g in enumerate(init):
        if g.k != space.k:
            raise ValueError(f"init[{n}]: k={g.k} does not match the search space's k={space.k}")

    scores: dict[str, float] = {}
    first_seen: dict[str, Genotype] = {}

    def score_new(genotypes: list[Genotype], hashes: list[str]) -> None:
        new: dict[str, Genotype] = {}
        for g, h in zip(genotypes, hashes):
            if h not in scores and h not in new:
                new[h] = g
        if not new:
            return
        batch = list(new.values())
        values = np.asarray(score_fn(batch), dtype=float)
        if values.shape != (len(batch),):
            raise ValueError(f"score_fn: expected an array of shape ({len(batch)},), got {values.shape}")
        values = np.where(np.isnan(values), -np.inf, values)
        for (h, g), v in zip(new.items(), values.tolist()):
            scores[h], first_seen[h] = v, g

    current = init + space.sample_many(population - len(init), rng)
    cur_hashes = [g.arch_hash for g in current]
    score_new(current, cur_hashes)
    cur_scores = np.array([scores[h] for h in cur_hashes])

    history: list[GenerationStats] = []
    for gen, t in enumerate(temps.tolist()):
        children = [space.mutate(g, rng) for g in current]
        hashes = [c.arch_hash for c in children]
        before = len(scores)
        ref = cur_scores if reference == "chain" else np.full(population, max(scores.values()))
        score_new(children, hashes)
        cand = np.array([scores[h] for h in hashes])
        accept = rng.random(population) < _acceptance_many(ref, cand, t)
        for i in np.flatnonzero(accept).tolist():
            current[i] = children[i]
        cur_scores = np.where(accept, cand, cur_scores)
        history.append(GenerationStats(
            gen, t, population, int(accept.sum()), len(scores) - before, max(scores.values()),
            float(cur_scores.mean()),
        ))

    excluded = set(exclude)
    ranked = sorted((h for h in scores if h not in excluded), key=lambda h: -scores[h])
    top = [(first_seen[h], scores[h]) for h in ranked[:top_k]]
    return EvolutionResult(top, history, scores)


def evolve(space: SearchSpace, score_fn: Scorer, **kwargs) -> list[tuple[Genotype, float]]:
    """The ``top_k`` ``(genotype, score)`` pairs, best first; takes the keyword arguments of
    :func:`run_evolution` (``run_evolution(...).top`` is the same list, with statistics alongside)."""
    return run_evolution(space, score_fn, **kwargs).top
