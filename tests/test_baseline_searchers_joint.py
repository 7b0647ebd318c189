"""The baseline searchers' (random search, regularized evolution) own rules for the param_space's hyperparameters
and for trials stopped early, and their JSON state with both; the behaviour every searcher shares is in
test_searcher_contract.py."""
import copy
import json
import math

import numpy as np
import pytest
from joint_space import METRIC, assert_malformed_new_fields_refused, drive, hp_space, joint_value
from joint_space import joint as joint_all
from ray import tune

from search_space import Genotype
from search_space.baseline_searchers import RandomSearcher, RegularizedEvolutionSearcher
from search_space.hyperparameters import mutate, parse_param_space
from search_space.searcher import PredictorEvolutionSearcher

#: These tests search lr, batch size and layers only: their rows, seeds and margins were chosen over those three.
NARROW = ("dropout", "width")


def space():
    """:func:`joint_space.hp_space` less dropout and width: several kinds, nested, with constants."""
    return hp_space(without=NARROW)


def joint(searcher):
    """``searcher`` given :func:`space` as Tune would give it."""
    return joint_all(searcher, without=NARROW)


def regularized(mode="max", **overrides):
    return RegularizedEvolutionSearcher(METRIC, mode, **{"population": 4, "sample_size": 2, **overrides})


def evaluated(searcher, lr, value):
    """Record an unseen architecture evaluated elsewhere with learning rate ``lr`` (batch size 64, 1 layer)."""
    g = searcher.space.sample(np.random.default_rng(len(searcher.history) + 1000))
    searcher.add_evaluated_point({"genotype": g.to_json(), "optim": {"lr": lr, "batch_size": 64}, "layers": 1},
                                 value)


# --- random search ---------------------------------------------------------------------------------------
def test_random_search_draws_every_dimension_from_its_distribution_with_its_generator():
    """Each suggestion: the genotype, then each dimension's own Tune distribution, from the seeded Generator —
    whatever the results (the best learning rates teach it nothing)."""
    s = joint(RandomSearcher(METRIC, "max", seed=11))
    rng, dimensions = np.random.default_rng(11), parse_param_space(space())
    for t, config in enumerate(drive(s, 25)):
        genotype = s.space.sample(rng)
        row = [d.prior(rng) for d in dimensions]
        assert config["genotype"] == genotype.to_json(), t
        assert config["optim"] == {"lr": row[0], "batch_size": (64, 128)[row[1]]} and config["layers"] == row[2]


def test_every_random_phase_suggests_the_same_configurations():
    """Common random numbers (Table 4.1): for one seed and param_space, random search, regularized evolution before
    its population is full and PredictorEvolutionSearcher before min_results suggest the same configurations."""
    searchers = [joint(RandomSearcher(METRIC, "max", seed=5)), joint(regularized(population=6, seed=5)),
                 joint(PredictorEvolutionSearcher(METRIC, "max", min_results=6, predictor="ridge", seed=5))]
    first = [drive(s, 6) for s in searchers]
    assert first[0] == first[1] == first[2]
    assert len({c["optim"]["lr"] for c in first[0]}) == 6


# --- regularized evolution ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["max", "min"])
def test_children_inherit_their_parents_hyperparameters(mode):
    """Two members: A (lr = 1e-4) better than B (lr = 1e-1) by the mode; a tournament of two with replacement picks
    A three times in four. A child (a mutation of one cell at most, so it keeps two of its parent's cells) keeps
    its parent's learning rate, moved by about 0.3 decades, unless redrawn (probability 0.2)."""
    s = joint(regularized(mode, population=2, sample_size=2, seed=3))
    good, bad = (1.0, 0.0) if mode == "max" else (0.0, 1.0)
    evaluated(s, 1e-4, good)
    evaluated(s, 1e-1, bad)
    members = [(json.loads(g.to_json())["cells"], lr) for (g, _), lr in zip(s.history, (1e-4, 1e-1))]
    parents, same_side = [], []
    for t in range(40):  # none completes: the population stays
        config = s.suggest(f"t{t}")
        cells = json.loads(config["genotype"])["cells"]
        (parent_lr,) = [lr for member, lr in members if sum(a == b for a, b in zip(cells, member)) >= 2]
        parents.append(parent_lr)
        same_side.append((config["optim"]["lr"] < 10 ** -2.5) == (parent_lr < 10 ** -2.5))
    assert parents.count(1e-4) > parents.count(1e-1), "the better member by the mode wins most tournaments"
    # Expected 0.8 + 0.2 / 2 = 0.9 (0.5 if drawn at random, 0.1 from the other member); seeds 0-7 give 0.82-0.95.
    assert np.mean(same_side) > 0.75


def test_a_childs_hyperparameters_are_its_parents_mutated_or_drawn_without_one():
    s = joint(regularized(seed=1))
    evaluated(s, 1e-3, 0.5)
    s.add_evaluated_point({"genotype": s.space.sample(np.random.default_rng(7)).to_json()}, 0.4)  # no row
    assert s.rows[0] == [1e-3, 0, 1] and s.rows[1] is None
    twin = copy.deepcopy(s.rng)
    assert s._propose_hyperparameters(0) == mutate(s.dimensions, [1e-3, 0, 1], twin)
    assert s._propose_hyperparameters(1) == [d.prior(twin) for d in s.dimensions]
    assert s._propose_hyperparameters(None) == [d.prior(twin) for d in s.dimensions]


def test_regularized_evolution_improves_the_hyperparameters_too():
    s = joint(regularized(population=8, sample_size=4, seed=0))
    gap = [abs(math.log10(c["optim"]["lr"]) + 2) for c in drive(s, 80)]
    # Over the last 30 proposals seeds 0-5 give a mean gap of 0.28-0.56; random search gives 0.76-0.91 (drawn at
    # random, log10 lr is uniform on [-4, -1]: mean gap 0.83).
    assert np.mean(gap[-30:]) < 0.6


def test_trials_stopped_early_never_join_the_population():
    s = regularized(population=2, sample_size=2, full_budget=4, seed=0)
    drive(joint(s), 2)
    members = list(s.members)
    s.suggest("asha")
    s.on_trial_complete("asha", {METRIC: 100.0, "training_iteration": 1, "done": True})
    s.add_evaluated_point({"genotype": s.space.sample(np.random.default_rng(9)).to_json()}, 100.0, pruned=True)
    assert s.members == members and len(s.history) == 2 and [v for _, v in s.pruned] == [100.0, 100.0]
    s.suggest("full")
    s.on_trial_complete("full", {METRIC: 0.0, "training_iteration": 4})
    assert s.members[-1][1] == 0.0, "a trial at the full budget joins"
    plain = regularized(seed=0)  # no full_budget: every completed trial is a full result (the earlier behaviour)
    plain.suggest("t0")
    plain.on_trial_complete("t0", {METRIC: 0.5, "training_iteration": 1})
    assert plain.pruned == [] and len(plain.history) == 1


@pytest.mark.parametrize("cls", [RandomSearcher, RegularizedEvolutionSearcher])
def test_budget_settings_are_checked(cls):
    with pytest.raises(ValueError, match="full_budget"):
        cls(METRIC, "max", full_budget=0)
    with pytest.raises(ValueError, match="budget_attr"):
        cls(METRIC, "max", budget_attr="")


def test_trials_an_asha_scheduler_stops_early_never_join_the_population(ray_local, tmp_path):
    """A real ASHA run with a param_space and metric and mode in TuneConfig: Tune marks a scheduler-stopped result
    ``done`` too; the budget tells them apart."""
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config):
        for step in range(1, 5):
            tune.report({METRIC: joint_value(config) + step / 100})

    searcher = RegularizedEvolutionSearcher(population=3, sample_size=2, full_budget=4, seed=0)
    tuner = tune.Tuner(trainable, param_space=space(),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha", verbose=0),
                       tune_config=tune.TuneConfig(search_alg=searcher, metric=METRIC, mode="max", num_samples=8,
                                                   max_concurrent_trials=1,
                                                   scheduler=ASHAScheduler(max_t=4, grace_period=1,
                                                                           reduction_factor=2)))
    grid = tuner.fit()
    assert len(grid) == 8 and not grid.errors, [str(r.error)[:300] for r in grid if r.error]

    def arch(result):
        return Genotype.from_json(result.config["genotype"]).arch_hash

    full = {arch(r) for r in grid if r.metrics["training_iteration"] == 4}
    stopped = {arch(r) for r in grid if r.metrics["training_iteration"] < 4}
    assert full and stopped, "the run had both kinds"
    assert {g.arch_hash for g, _ in searcher.history} == full and {g.arch_hash for g, _ in searcher.pruned} == stopped
    assert all(row is not None for row in searcher.rows)


# --- JSON state ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [RandomSearcher, RegularizedEvolutionSearcher])
def test_stopped_early_trials_and_rows_survive_save_restore(cls, tmp_path):
    a = joint(cls(METRIC, "max", full_budget=4, seed=4))
    for t, config in enumerate(drive(a, 6)):
        a.add_evaluated_point({**config, "genotype": a.space.sample(np.random.default_rng(t)).to_json()}, 0.1,
                              pruned=True)
    a.suggest("pending")
    path = tmp_path / "state.json"
    a.save(str(path))
    state = json.loads(path.read_text())
    assert len(state["pruned"]) == 6 and len(state["hyperparameters"]["rows"]) == 6
    assert state["settings"]["full_budget"] == 4
    b = joint(cls(seed=0))
    b.restore(str(path))
    assert b.get_state() == a.get_state() and b.full_budget == 4
    for s in (a, b):
        s.on_trial_complete("pending", {METRIC: 0.3, "training_iteration": 4})
    assert drive(a, 8, start=6) == drive(b, 8, start=6)


@pytest.mark.parametrize("cls", [RandomSearcher, RegularizedEvolutionSearcher])
def test_malformed_new_fields_are_refused_and_change_nothing(cls):
    a = joint(cls(METRIC, "max", seed=2))
    drive(a, 3)
    a.suggest("p")
    good = json.loads(json.dumps(a.get_state()))
    hp = good["hyperparameters"]
    fresh = joint(cls(METRIC, "max", seed=3))
    row = list(hp["rows"][0])
    row[1] = 2  # batch_size has two categories: index 2 does not exist
    rows = [("hyperparameters", {**hp, "rows": hp["rows"][:2]}),
            ("hyperparameters", {**hp, "rows": [row, *hp["rows"][1:]]})]
    assert_malformed_new_fields_refused(fresh, good, [*rows, ("settings", {**good["settings"], "other": 1})])
