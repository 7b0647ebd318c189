import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import SearchSpace, encode, encode_many
from search_space.evolution import (
    acceptance_probability,
    constant_schedule,
    evolve,
    geometric_schedule,
    metropolis_accept,
    run_evolution,
    temperature_schedule,
)

SPACE = SearchSpace(k=6)
SMALL = SearchSpace(k=3)  # 5 distinct pruned cells -> 125 networks
POS = st.floats(min_value=1e-3, max_value=10.0)


# --- acceptance_probability ----------------------------------------------------------------------
@given(current=st.floats(-5, 5), gain=st.floats(0, 5), t=POS)
def test_improvements_and_ties_always_have_probability_one(current, gain, t):
    assert acceptance_probability(current, current + gain, t) == 1.0
    assert acceptance_probability(current, current, 0.0) == 1.0


@pytest.mark.parametrize("d, t", [(0.1, 0.1), (0.05, 0.1), (0.3, 0.1), (1.0, 0.5), (2.0, 0.05)])
def test_worse_candidate_probability_is_exp_minus_d_over_t(d, t):
    assert acceptance_probability(0.7, 0.7 - d, t) == math.exp(-((0.7) - (0.7 - d)) / t)
    assert acceptance_probability(0.7, 0.7 - d, t) == pytest.approx(math.exp(-d / t), rel=1e-12)


@given(d1=st.floats(1e-6, 5), d2=st.floats(1e-6, 5), t1=POS, t2=POS)
@settings(max_examples=200)
def test_monotone_in_gap_and_temperature(d1, d2, t1, t2):
    (da, db), (ta, tb) = sorted((d1, d2)), sorted((t1, t2))
    assert acceptance_probability(0.0, -da, t1) >= acceptance_probability(0.0, -db, t1)  # bigger gap: less
    assert acceptance_probability(0.0, -d1, ta) <= acceptance_probability(0.0, -d1, tb)  # hotter: more
    assert 0.0 <= acceptance_probability(0.0, -d1, t1) < 1.0


def test_temperature_zero_is_greedy_and_invalid_temperatures_raise():
    assert acceptance_probability(1.0, 0.999, 0.0) == 0.0
    assert acceptance_probability(1.0, 1.0, 0.0) == 1.0
    assert acceptance_probability(1.0, 0.0, math.inf) == 1.0
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            acceptance_probability(1.0, 0.5, bad)


def test_nan_scores_count_as_minus_infinity():
    assert acceptance_probability(0.5, math.nan, 1.0) == 0.0
    assert acceptance_probability(math.nan, 0.5, 1.0) == 1.0


# --- metropolis_accept (statistical, seeded) -----------------------------------------------------
N = 20_000


def test_improvement_is_always_accepted():
    rng = np.random.default_rng(0)
    assert all(metropolis_accept(0.5, 0.5 + g, 0.01, rng) for g in rng.uniform(0, 1, N))
    assert all(metropolis_accept(0.5, 0.5, 0.01, rng) for _ in range(1000))


@pytest.mark.parametrize("d, t", [(0.1, 0.1), (0.05, 0.1), (0.3, 0.1), (0.02, 0.05)])
def test_worse_candidate_accepted_with_frequency_exp_minus_d_over_t(d, t):
    rng = np.random.default_rng(int(1000 * d + 10 * t))
    hits = sum(metropolis_accept(0.9, 0.9 - d, t, rng) for _ in range(N))
    p = math.exp(-d / t)
    assert abs(hits / N - p) <= 4 * math.sqrt(p * (1 - p) / N)


def test_worse_candidates_are_not_always_accepted():
    """Eq. 4.8 as printed, min(1, exp((score* - score)/T)), would accept all of these."""
    rng = np.random.default_rng(1)
    hits = sum(metropolis_accept(0.9, 0.4, 0.1, rng) for _ in range(N))  # p = exp(-5) ~ 0.0067
    assert hits < 0.02 * N
    assert not metropolis_accept(0.9, 0.0, 0.01, rng)
    assert acceptance_probability(0.9, 0.4, 0.1) < 0.01


# --- schedules -----------------------------------------------------------------------------------
def test_schedules():
    assert constant_schedule(0.3, 4).tolist() == [0.3] * 4
    s = geometric_schedule(1.0, 0.01, 5)
    assert s[0] == 1.0 and s[-1] == 0.01
    assert np.allclose(s[1:] / s[:-1], 0.01 ** 0.25)
    assert temperature_schedule(0.2, None, 3).tolist() == [0.2] * 3
    assert temperature_schedule(0.2, 0.02, 7)[-1] == 0.02
    with pytest.raises(ValueError):
        geometric_schedule(0.1, 0.0, 5)


# --- evolve --------------------------------------------------------------------------------------
def target_scorer(seed=123):
    """Score = -(L1 distance of encodings to a hidden target); the optimum 0 is the target itself."""
    target = encode(SPACE.sample(seed=seed))
    return lambda gs: -np.abs(encode_many(gs) - target).sum(axis=1)


class CheckedScorer:
    """Wraps a scorer and fails if it is ever asked for an architecture it has already scored."""

    def __init__(self, fn):
        self.fn, self.seen, self.calls = fn, set(), []

    def __call__(self, gs):
        hashes = [g.arch_hash for g in gs]
        assert gs and len(set(hashes)) == len(hashes), "duplicate within a batch"
        assert not self.seen & set(hashes), "architecture scored twice"
        self.seen |= set(hashes)
        self.calls.append(len(gs))
        return self.fn(gs)


def test_evolution_beats_random_sampling_at_equal_evaluations():
    score = target_scorer()
    evo, rnd = [], []
    for seed in range(5):
        r = run_evolution(SPACE, score, population=16, generations=30, temperature=0.5, seed=seed)
        evo.append(r.top[0][1])
        rnd.append(score(SPACE.sample_many(r.evaluations, seed=1000 + seed)).max())
    assert np.median(evo) > np.median(rnd) + 2, (evo, rnd)


def test_results_distinct_sorted_topk_and_scorer_never_repeats():
    scorer = CheckedScorer(target_scorer())
    r = run_evolution(SPACE, scorer, population=8, generations=12, temperature=1.0, top_k=15, seed=3)
    hashes = [g.arch_hash for g, _ in r.top]
    values = [s for _, s in r.top]
    assert len(r.top) == 15 and len(set(hashes)) == 15
    assert values == sorted(values, reverse=True)
    assert values[0] == max(r.scores.values())
    assert len(scorer.calls) <= 1 + 12 and max(scorer.calls) <= 8
    assert sum(scorer.calls) == r.evaluations == len(scorer.seen)
    assert all(s == pytest.approx(target_scorer()([g])[0]) for g, s in r.top)


def test_exclude_removes_hashes_without_changing_the_search():
    score = target_scorer()
    full = run_evolution(SPACE, score, population=8, generations=10, top_k=10_000, seed=5)
    banned = [g.arch_hash for g, _ in full.top[:3]] + ["not-a-hash"]
    r = run_evolution(SPACE, score, population=8, generations=10, top_k=5, exclude=banned, seed=5)
    assert not {g.arch_hash for g, _ in r.top} & set(banned)
    assert [g.arch_hash for g, _ in r.top] == [g.arch_hash for g, _ in full.top[3:8]]


def test_deterministic_per_seed():
    score = target_scorer()

    def key(top):
        return [(g.to_json(), s) for g, s in top]

    a = evolve(SPACE, score, population=6, generations=8, temperature=0.5, seed=11)
    b = evolve(SPACE, score, population=6, generations=8, temperature=0.5, seed=np.random.default_rng(11))
    c = evolve(SPACE, score, population=6, generations=8, temperature=0.5, seed=12)
    assert key(a) == key(b) != key(c)


def test_fewer_results_when_fewer_exist():
    r = run_evolution(SMALL, CheckedScorer(lambda gs: np.arange(len(gs), dtype=float)),
                      population=8, generations=40, temperature=100.0, top_k=1000, seed=0)
    assert len(r.top) == r.evaluations <= 125
    assert r.evaluations > 50
    assert evolve(SMALL, lambda gs: np.zeros(len(gs)), population=2, generations=0, top_k=0) == []


def test_init_seeds_the_chains():
    start = SPACE.sample(seed=9)
    r = run_evolution(SPACE, target_scorer(), population=1, generations=0, init=[start])
    assert [g.arch_hash for g, _ in r.top] == [start.arch_hash]
    r = run_evolution(SPACE, target_scorer(), population=4, generations=0, init=[start], top_k=10)
    assert start.arch_hash in {g.arch_hash for g, _ in r.top}
    with pytest.raises(ValueError, match="init"):
        run_evolution(SPACE, target_scorer(), population=1, init=[start, start])


def test_annealing_reaches_final_temperature_and_greedy_never_goes_down():
    r = run_evolution(SPACE, target_scorer(), population=4, generations=10, temperature=2.0,
                      final_temperature=0.01, seed=0)
    temps = [h.temperature for h in r.history]
    assert temps[0] == 2.0 and temps[-1] == 0.01 and temps == sorted(temps, reverse=True)
    greedy = run_evolution(SPACE, target_scorer(), population=4, generations=15, temperature=0.0, seed=0)
    means = [h.mean_current for h in greedy.history]
    assert means == sorted(means)
    hot = run_evolution(SPACE, target_scorer(), population=4, generations=15, temperature=100.0, seed=0)
    assert hot.acceptance_rate > greedy.acceptance_rate


def test_bad_scorer_output_and_arguments_raise():
    with pytest.raises(ValueError, match="score_fn"):
        evolve(SPACE, lambda gs: np.zeros(len(gs) + 1), population=2, generations=1)
    with pytest.raises(ValueError, match="temperature"):
        evolve(SPACE, lambda gs: np.zeros(len(gs)), temperature=-1.0)
    with pytest.raises(ValueError, match="population"):
        evolve(SPACE, lambda gs: np.zeros(len(gs)), population=0)


def test_nan_scores_rank_last():
    def score(gs):
        s = -np.abs(encode_many(gs)).sum(axis=1)
        s[::2] = np.nan
        return s
    r = run_evolution(SPACE, score, population=6, generations=6, top_k=1000, seed=2)
    values = [s for _, s in r.top]
    assert values == sorted(values, reverse=True) and values[-1] == -math.inf
