"""The contract every genotype searcher in ``search_space.searchers.SEARCHERS`` keeps, driven by hand through the
Searcher hooks and inside a real Tuner (JSON state included: no searcher ever unpickles; metric and mode from
``TuneConfig`` alone; the param_space's hyperparameters sampled beside the genotype; trials stopped early not learnt
from); then what is specific to the baselines (aging evolution)."""
import copy
import inspect
import json
import math
import os
import pickle
import re

import numpy as np
import pytest
from joint_space import METRIC, drive, hp_space, joint, previous_version
from ray import tune
from ray.tune.impl.placeholder import create_resolvers_map, inject_placeholders
from ray.tune.search.sample import Categorical
from servers import local_ray

from search_space import Genotype, encode
from search_space.baseline_searchers import RandomSearcher, RegularizedEvolutionSearcher
from search_space.searcher import legacy_state_error
from search_space.searchers import SEARCHERS

#: Small, fast settings per searcher name; a name missing here is built with its defaults.
SMALL = {
    "regularized-evolution": dict(population=4, sample_size=2),
    "predictor-evolution": dict(min_results=4, refit_every=2, predictor="ridge", population=8, generations=3),
}
ALL = sorted(SEARCHERS)
JSON_STATE = ALL  # every searcher saves and restores plain JSON, never a pickle


def make(name, seed=0, mode="max", **overrides):
    return SEARCHERS[name](metric=METRIC, mode=mode, seed=seed, **{**SMALL.get(name, {}), **overrides})


def objective(g: Genotype) -> float:
    """A deterministic synthetic metric: fraction of first-cell edges present."""
    return float(encode(g)[:15].mean())


def arch_value(config) -> float:
    """:func:`objective` of a config's genotype: ``drive(..., value=arch_value)`` searches the architecture alone."""
    return objective(Genotype.from_json(config["genotype"]))


def arch(config) -> str:
    return Genotype.from_json(config["genotype"]).arch_hash


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray")
    with local_ray(num_cpus=2):
        yield


# --- the contract, for every searcher ---------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_suggestions_are_distinct_from_evaluated_and_pending(name):
    s = make(name)
    hashes = []
    for t in range(30):  # two trials always in flight: each completes two suggestions later
        hashes.append(arch(s.suggest(f"t{t}")))
        if t >= 2:
            s.on_trial_complete(f"t{t - 2}", {METRIC: objective(s.pending[f"t{t - 2}"])})
    assert len(set(hashes)) == 30 and len(s.pending) == 2


@pytest.mark.parametrize("name", ALL)
def test_errored_incomplete_and_non_finite_results_are_ignored(name):
    s = make(name)
    drive(s, 3, value=arch_value)
    before = {h: list(v) for h, v in s.results.items()}
    bad = [(None, False), ({}, False), ({"other": 1.0}, False), ({METRIC: None}, False),
           ({METRIC: math.nan}, False), ({METRIC: math.inf}, False), ({METRIC: 0.7}, True)]
    for t, (result, error) in enumerate(bad):
        g = s.suggest(f"e{t}")["genotype"]
        s.on_trial_complete(f"e{t}", result, error=error)
        s.add_evaluated_point({"genotype": g}, math.nan)
        s.add_evaluated_point({"genotype": g}, 0.7, error=True)
    assert s.results == before and s.pending == {}
    s.add_evaluated_point({"genotype": g}, 0.7)
    assert len(s.results) == len(before) + 1, "a valid evaluated point counts"


@pytest.mark.parametrize("name", ALL)
def test_max_concurrent_is_respected(name):
    s = make(name, max_concurrent=2)
    assert s.suggest("a") and s.suggest("b")
    assert s.suggest("c") is None
    s.on_trial_complete("a", {METRIC: 0.5})
    assert s.suggest("c") is not None and s.suggest("d") is None
    s.on_trial_complete("b", None, error=True)
    assert s.suggest("d") is not None, "an errored trial frees its slot too"
    s2 = make(name)
    assert s2.set_max_concurrency(1) is True
    assert s2.suggest("a") and s2.suggest("b") is None


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_suggestions_different_seed_different(name):
    first, again, other = (drive(make(name, seed=seed), 10, value=arch_value) for seed in (3, 3, 4))
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", ALL)
def test_save_restore_continues_identically(name, tmp_path):
    a = make(name, seed=7)
    drive(a, 10, value=arch_value)
    a.suggest("pending")  # a trial in flight at checkpoint time
    path = tmp_path / "searcher-state"
    a.save(str(path))
    assert json.loads(path.read_text())["searcher"] == type(a).__name__
    b = make(name, seed=123)
    b.restore(str(path))
    for s in (a, b):
        s.on_trial_complete("pending", {METRIC: 0.3})
    assert drive(a, 10, start=10, value=arch_value) == drive(b, 10, start=10, value=arch_value)


@pytest.mark.parametrize("name", ALL)
def test_real_tuner_run_with_errored_trials(name, ray_cluster, tmp_path):
    from ray import tune

    starts = tmp_path / "starts"
    starts.mkdir()

    def trainable(config):  # nested, so Ray pickles it by value (the test module is not importable by workers)
        n = 0
        while True:  # claim the next start number across concurrent trials
            try:
                os.close(os.open(starts / str(n), os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                n += 1
        if n % 5 == 4:
            raise RuntimeError("injected failure of one trial in five")
        # objective() from the JSON alone: importing search_space would import torch in every new worker
        return {METRIC: len(json.loads(config["genotype"])["cells"][0]["edges"]) / 15}

    searcher = make(name)
    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=str(tmp_path), name="run", verbose=0),
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=12, max_concurrent_trials=2,
                                                   reuse_actors=True))
    grid = tuner.fit()
    assert len(grid) == 12 and len(grid.errors) == 2
    assert searcher.max_concurrent == 2 and searcher.pending == {}
    assert sum(len(v) for v in searcher.results.values()) == 10, "errored trials are not recorded"
    assert len({arch(r.config) for r in grid}) == 12
    measured = [(r.metrics[METRIC], objective(Genotype.from_json(r.config["genotype"]))) for r in grid if not r.error]
    assert [m for m, _ in measured] == pytest.approx([o for _, o in measured], abs=1e-6)


# --- (a) metric and mode from TuneConfig, for every searcher ---------------------------------------------
def bare(name, seed=0, **overrides):
    """A searcher of ``name`` without metric and mode (they come from Tune or nowhere)."""
    return SEARCHERS[name](seed=seed, **{**SMALL.get(name, {}), **overrides})


def run_tuner(tmp_path, trainable, searcher, name, param_space=None, **tune_config):
    tuner = tune.Tuner(trainable, param_space=param_space,
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
                       tune_config=tune.TuneConfig(search_alg=searcher, **tune_config))
    return tuner.fit()


@pytest.mark.parametrize("name", ALL)
def test_metric_and_mode_from_tune_config_without_param_space(name, ray_cluster, tmp_path):
    """Metric and mode only in TuneConfig and no param_space, so Tune never calls set_search_properties."""
    searcher = bare(name)
    grid = run_tuner(tmp_path, lambda config: {METRIC: len(json.loads(config["genotype"])["cells"][0]["edges"]) / 15},
                     searcher, "no-space", metric=METRIC, mode="min", num_samples=6, max_concurrent_trials=2)
    assert len(grid) == 6 and not grid.errors, [str(r.error)[:300] for r in grid if r.error]
    assert (searcher.metric, searcher.mode) == (METRIC, "min")
    assert sum(len(v) for v in searcher.results.values()) == 6


@pytest.mark.parametrize("name", ALL)
def test_metric_and_mode_missing_everywhere_is_a_one_line_error(name, ray_cluster, tmp_path):
    with pytest.raises(ValueError, match="no metric and mode") as info:
        run_tuner(tmp_path, lambda config: {METRIC: 0.5}, bare(name), "none", num_samples=1)
    assert "\n" not in str(info.value) and "TuneConfig" in str(info.value)
    for searcher in (bare(name), bare(name, metric=METRIC), bare(name, mode="max")):
        with pytest.raises(ValueError, match="no metric and mode") as info:
            searcher.suggest("t0")
        assert "\n" not in str(info.value) and searcher.pending == {}


@pytest.mark.parametrize("name", ALL)
def test_metric_and_mode_from_set_search_properties_must_agree(name):
    s = bare(name)
    assert s.set_search_properties(METRIC, "min", {}) is True
    assert (s.metric, s.mode) == (METRIC, "min") and s.suggest("t0")
    assert make(name).set_search_properties(METRIC, "max", {}) is True, "the same values in both places"
    for metric, mode in [("other", None), (None, "min")]:
        with pytest.raises(ValueError, match="from Tune differs from the searcher's") as info:
            make(name).set_search_properties(metric, mode, {})
        assert "\n" not in str(info.value)


# --- (b) the param_space's hyperparameters, for every searcher ----------------------------------------------
def make_joint(name, seed=0, **overrides):
    return joint(make(name, seed=seed, **overrides))


def check_config(config):
    """``config`` holds a valid value of every dimension of :func:`hp_space` (constants: where Tune merged them)."""
    optim = config["optim"]
    assert isinstance(optim["lr"], float) and 1e-4 <= optim["lr"] <= 1e-1, optim
    assert optim["batch_size"] in (64, 128), optim
    assert type(config["layers"]) is int and 1 <= config["layers"] <= 3, config
    assert round(config["dropout"], 10) in {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}, config
    assert type(config["width"]) is int and config["width"] in range(8, 65, 8), config


@pytest.mark.parametrize("name", ALL)
def test_param_space_dimensions_reach_the_trainable_as_numbers(name, ray_cluster, tmp_path):
    """A tune.loguniform (and every other supported dimension) reaches the trainable sampled; constants and nesting
    are kept."""
    def trainable(config):
        optim = config["optim"]
        assert isinstance(optim["lr"], float) and 1e-4 <= optim["lr"] <= 1e-1, optim
        assert optim["batch_size"] in (64, 128) and optim["momentum"] == 0.9, optim
        assert isinstance(config["layers"], int) and 1 <= config["layers"] <= 3, config
        assert isinstance(config["width"], int) and config["width"] % 8 == 0, config
        assert config["epochs"] == 3 and config["name"] == "run", config
        return {METRIC: len(json.loads(config["genotype"])["cells"][0]["edges"]) / 15 - abs(math.log10(optim["lr"]))}

    searcher = bare(name, seed=1)
    grid = run_tuner(tmp_path, trainable, searcher, "joint", param_space=hp_space(), metric=METRIC, mode="max",
                     num_samples=8, max_concurrent_trials=2)
    assert len(grid) == 8 and not grid.errors, [str(r.error)[:300] for r in grid if r.error]
    assert len({r.config["optim"]["lr"] for r in grid}) == 8 and searcher.pending == {}


@pytest.mark.parametrize("name", ALL)
def test_suggestions_hold_valid_values_of_every_dimension(name):
    for config in drive(make_joint(name), 30):  # past every searcher's random phase
        assert set(config) == {"genotype", "optim", "layers", "dropout", "width"}, "constants are left to Tune"
        assert set(config["optim"]) == {"lr", "batch_size"}
        check_config(config)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("value, message", [
    ("sample_from", "sample_from"),
    ("grid_search", "grid_search"),
    ("grid of a choice", "grid_search"),
    ("randn", "Normal"),
    ("choice of domains", "holding search-space objects"),
    ("list", "inside a list"),
])
def test_unsupported_dimensions_are_one_line_errors_naming_the_key(name, value, message):
    value = {"sample_from": tune.sample_from(lambda spec: 1), "grid_search": tune.grid_search([1, 2]),
             "grid of a choice": Categorical([1, 2]).grid(), "randn": tune.randn(0.0, 1.0),
             "choice of domains": tune.choice([tune.uniform(0, 1), 2]),
             "list": [tune.uniform(0, 1), 2]}[value]
    as_tune_passes_it = inject_placeholders(copy.deepcopy({"opt": {"x": value}}), create_resolvers_map())
    for config in ({"opt": {"x": value}}, as_tune_passes_it):
        s = make(name)
        with pytest.raises(ValueError, match=message) as info:
            s.set_search_properties(None, None, config)
        assert str(info.value).startswith("param_space['opt']['x']: ") and "\n" not in str(info.value)
        assert s.dimensions is None


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_hyperparameters_different_seed_different(name):
    first, again, other = (drive(make_joint(name, seed=seed), 12) for seed in (3, 3, 4))
    assert first == again
    assert [c["optim"]["lr"] for c in first] != [c["optim"]["lr"] for c in other]


@pytest.mark.parametrize("name", ALL)
def test_constants_only_change_nothing(name):
    """A param_space of constants only (the pipelines'): the same suggestions as a searcher never given one."""
    plain, constants = make(name, seed=2), make(name, seed=2)
    constants.set_search_properties(None, None, {"epochs": 3, "train": {"lr": 0.1}})
    assert drive(plain, 8, value=arch_value) == drive(constants, 8, value=arch_value)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("order", ["param_space first (as Tune does)", "state first"])
def test_save_restore_continues_identically_with_hyperparameters(name, order, tmp_path):
    a = make_joint(name, seed=7)
    drive(a, 8)
    if name == "predictor-evolution":
        assert a.predictor is not None and len(a.hp_history) == 8, "past the random phase"
    a.suggest("pending")
    path = tmp_path / "searcher-state-x.json"
    a.save(str(path))
    state = json.loads(path.read_text())
    assert [d["path"] for d in state["hyperparameters"]["dimensions"]] == [
        ["optim", "lr"], ["optim", "batch_size"], ["layers"], ["dropout"], ["width"]]
    assert set(state["hyperparameters"]["pending"]) == {"pending"}
    b = SEARCHERS[name](seed=99)  # default settings: the state's replace them
    if order.startswith("param_space"):
        b.set_search_properties(METRIC, "max", hp_space())
        b.restore(str(path))
    else:
        b.restore(str(path))
        with pytest.raises(ValueError, match=r"samples param_space\['optim'\]\['lr'\].*give the same param_space"):
            b.suggest("too-early")
        b.set_search_properties(None, None, hp_space())
    assert b.get_state() == a.get_state()
    for s in (a, b):
        s.on_trial_complete("pending", {METRIC: 0.3})
    assert drive(a, 8, start=8) == drive(b, 8, start=8)


@pytest.mark.parametrize("name", ALL)
def test_restore_refuses_rows_of_other_dimensions_and_changes_nothing(name, tmp_path):
    a = make_joint(name)
    drive(a, 3)
    path = tmp_path / "state.json"
    a.save(str(path))
    other = {**hp_space(), "optim": {"lr": tune.loguniform(1e-5, 1e-1), "batch_size": tune.choice([64, 128])}}
    b = make(name)
    b.set_search_properties(None, None, other)
    expected = b.get_state()
    with pytest.raises(ValueError, match="other dimensions") as info:
        b.restore(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert b.get_state() == expected
    with pytest.raises(ValueError, match="other dimensions"):
        a.set_search_properties(None, None, other)  # a has rows over the original dimensions
    assert a.dimensions is not None
    assert a.get_state()["hyperparameters"] == json.loads(path.read_text())["hyperparameters"]


@pytest.mark.parametrize("name", ALL)
def test_a_state_of_the_previous_version_restores(name):
    """States written before trials stopped early, hyperparameters and budgets existed: same format, fewer keys."""
    a = make(name, seed=5)
    drive(a, 6, value=arch_value)
    b = SEARCHERS[name](seed=1)
    b.set_state(previous_version(a.get_state()))
    assert b.get_state() == a.get_state()
    assert drive(a, 4, start=6, value=arch_value) == drive(b, 4, start=6, value=arch_value)


# --- (c) trials stopped early, for every searcher ---------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_trials_stopped_early_are_not_results_and_not_proposed_again(name):
    s = make_joint(name, full_budget=4)
    configs = [s.suggest(f"t{t}") for t in range(6)]
    for t in range(3):  # a scheduler stopped it: done, but below the full budget
        s.on_trial_complete(f"t{t}", {METRIC: 9.0, "training_iteration": 2, "done": True})
    for t, config in enumerate(configs[3:], start=3):
        s.on_trial_complete(f"t{t}", None, error=True)
        s.add_evaluated_point(config, 9.0, pruned=True, intermediate_values=[0.1, 9.0])
    assert s.results == {} and len(s.pruned) == 6 and s.pending == {}
    assert [v for _, v in s.pruned] == [9.0] * 6
    stopped = {arch(c) for c in configs}
    later = drive(s, 20, start=100)
    assert not stopped & {arch(c) for c in later}, "never proposed again"
    assert all(v < 9.0 for values in s.results.values() for v in values), "no partial metric became a result"
    s.suggest("full")
    s.on_trial_complete("full", {METRIC: 0.5, "training_iteration": 4})
    assert 0.5 in [v for values in s.results.values() for v in values], "a trial at the full budget is a result"


# --- JSON state ------------------------------------------------------------------------------------
class Exploit:
    """Unpickling it creates the file ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", JSON_STATE)
def test_restore_rejects_pickle_other_class_and_corrupt_states(name, tmp_path):
    s = make(name)
    drive(s, 5, value=arch_value)
    pickled = tmp_path / "state.pkl"
    pickled.write_bytes(pickle.dumps(s.get_state()))
    others = []
    for i, other_name in enumerate(n for n in JSON_STATE if n != name):
        others.append(tmp_path / f"other{i}.json")
        make(other_name).save(str(others[-1]))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps({**s.get_state(), "pending": {"t0": "{}"}}))
    truncated = tmp_path / "truncated.json"
    s.save(str(truncated))
    truncated.write_text(truncated.read_text()[:-20])
    fresh = make(name, seed=99)
    expected = fresh.get_state()
    for path, message in [(pickled, "not a JSON searcher state"), *((o, "state written by") for o in others),
                          (corrupt, "cells"), (truncated, "not a JSON searcher state")]:
        with pytest.raises(ValueError, match=message) as info:
            fresh.restore(str(path))
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))
    assert fresh.get_state() == expected, "a rejected state changes nothing"


@pytest.mark.parametrize("name", JSON_STATE)
def test_a_planted_exploit_pickle_is_never_executed(name, tmp_path):
    marker = tmp_path / "exploit-ran"
    planted = tmp_path / "run"
    planted.mkdir()
    payload = pickle.dumps(Exploit(marker))
    (planted / "searcher-state-2024-01-01_00-00-00.json").write_bytes(payload)  # the name Tune globs for
    (planted / "searcher-state-2024-01-01_00-00-00.pkl").write_bytes(payload)  # older versions' name
    (tmp_path / "evil.pkl").write_bytes(payload)
    fresh = make(name, seed=5)
    expected = fresh.get_state()
    for restore, arg in [(fresh.restore, tmp_path / "evil.pkl"), (fresh.restore_from_dir, planted)]:
        with pytest.raises(ValueError, match="not a JSON searcher state") as info:
            restore(str(arg))
        assert "\n" not in str(info.value)
    assert not marker.exists(), "the pickle was loaded"
    assert fresh.get_state() == expected


def test_an_old_pickled_predictor_evolution_state_is_refused_by_name(tmp_path):
    """Before JSON states, PredictorEvolutionSearcher pickled to ``searcher-state-<session>.pkl``: a run directory
    holding only such a file is refused with the file's name, never unpickled."""
    marker = tmp_path / "exploit-ran"
    old = tmp_path / "searcher-state-2024-01-01_00-00-00.pkl"
    old.write_bytes(pickle.dumps(Exploit(marker)))
    fresh = make("predictor-evolution")
    expected = fresh.get_state()
    with pytest.raises(ValueError, match="pickled searcher state of an older version") as info:
        fresh.restore_from_dir(str(tmp_path))
    assert str(info.value).startswith(str(old)) and "\n" not in str(info.value)
    assert legacy_state_error(tmp_path) == str(info.value)
    assert not marker.exists() and fresh.get_state() == expected
    fresh.save_to_dir(str(tmp_path), "2024-01-02_00-00-00")  # a JSON state next to it wins
    assert legacy_state_error(tmp_path) is None
    fresh.restore_from_dir(str(tmp_path))
    assert not marker.exists() and fresh.get_state() == expected


@pytest.mark.parametrize("name", JSON_STATE)
def test_tune_checkpoint_files_are_json(name, tmp_path):
    a = make(name, seed=1)
    drive(a, 6, value=arch_value)
    a.save_to_dir(str(tmp_path), "session")
    (path,) = tmp_path.glob("searcher-state-*")
    assert path.suffix == ".json" and json.loads(path.read_text())["searcher"] == type(a).__name__
    b = make(name, seed=2)
    b.restore_from_dir(str(tmp_path))
    assert b.get_state() == a.get_state()


def test_metric_mode_and_settings_are_checked():
    for cls in (RandomSearcher, RegularizedEvolutionSearcher):
        with pytest.raises(ValueError, match="mode"):
            cls(METRIC, "up")
        with pytest.raises(ValueError, match="no metric and mode"):
            cls().suggest("t0")
        s = cls()
        assert s.set_search_properties(METRIC, "min", {}) is True
        assert s.suggest("t0") and (s.metric, s.mode) == (METRIC, "min")
    for population, sample_size in [(1, 1), (4, 0), (4, 5)]:
        with pytest.raises(ValueError, match="population|sample_size"):
            RegularizedEvolutionSearcher(METRIC, "max", population=population, sample_size=sample_size)


# --- regularized evolution --------------------------------------------------------------------------
def test_aging_keeps_the_last_population_completions_even_dropping_the_best():
    s = RegularizedEvolutionSearcher(METRIC, "max", population=4, sample_size=2, seed=0)
    completed = []
    for t in range(4 + 3):
        g = Genotype.from_json(s.suggest(f"t{t}")["genotype"])
        value = 1.0 if t == 0 else 0.1 * t  # the first member is the best ever seen
        s.on_trial_complete(f"t{t}", {METRIC: value})
        completed.append((g.arch_hash, value))
    s.suggest("crashed")
    s.on_trial_complete("crashed", None, error=True)  # errored children never join
    assert [(g.arch_hash, v) for g, v in s.members] == completed[-4:]
    assert max(v for _, v in s.members) < 1.0, "the oldest member left although it was the best"


@pytest.mark.parametrize("mode", ["max", "min"])
def test_regularized_evolution_follows_the_mode(mode):
    def last_20_of_60(searcher):
        values = [arch_value(c) for c in drive(searcher, 60, value=arch_value)]
        return np.mean(values[-20:])

    random = last_20_of_60(RandomSearcher(METRIC, mode, seed=0))
    evolved = last_20_of_60(RegularizedEvolutionSearcher(METRIC, mode, population=10, sample_size=5, seed=0))
    # Over seeds 0-5 the margin is 0.15-0.50 either way (random's mean is about 0.4).
    if mode == "max":
        assert evolved > random + 0.1
    else:
        assert evolved < random - 0.1


# --- the docstring examples --------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [RandomSearcher, RegularizedEvolutionSearcher])
def test_docstring_example_runs_in_a_real_tuner(cls, ray_cluster, tmp_path, monkeypatch):
    """The class docstring's example, verbatim except for a storage path under tmp_path."""
    code = re.search(r"Example.*?::\n\n(.*)", inspect.getdoc(cls), flags=re.S).group(1)
    assert "tune.Tuner(trainable," in code and "search_alg=searcher" in code
    code = "\n".join(line[4:] for line in code.splitlines())
    monkeypatch.chdir(tmp_path)
    run_config = f"run_config=tune.RunConfig(storage_path={str(tmp_path)!r}, verbose=0)"
    code = code.replace("tune.Tuner(trainable,", f"tune.Tuner(trainable, {run_config},")
    scope = {}
    exec(compile(code, f"{cls.__name__}_example", "exec"), scope)
    assert len(json.loads(scope["best"].config["genotype"])["cells"]) == 3


def test_stage_restore_refuses_unreadable_searcher_states(tmp_path):
    """pipelines.nas.tune_stage checks the state Tune would restore: Tune itself logs a failed searcher restore and
    silently restarts the experiment, so an unreadable state must be caught before ``Tuner.restore``."""
    from pipelines.nas.tune_stage import unreadable_searcher_state
    from search_space.searcher import PredictorEvolutionSearcher

    searcher = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=4, predictor="ridge")
    assert unreadable_searcher_state(tmp_path / "missing", searcher) is None
    assert unreadable_searcher_state(tmp_path, None) is None
    good = tmp_path / "good"
    good.mkdir()
    searcher.save(str(good / searcher.CKPT_FILE_TMPL.format("2026-01-01_00-00-00")))
    assert unreadable_searcher_state(good, searcher) is None
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps({"any": "thing"}))
    assert "pickled searcher state" in unreadable_searcher_state(legacy, searcher)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / searcher.CKPT_FILE_TMPL.format("2026-01-01_00-00-00")).write_text('{"format": 1, "searcher": "X"')
    message = unreadable_searcher_state(corrupt, searcher)
    assert message and "\n" not in message
