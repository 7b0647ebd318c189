"""The contract every genotype searcher in ``SEARCHER_CLASSES`` keeps, driven by hand through the Searcher hooks
and inside a real Tuner (JSON state included: no searcher ever unpickles); then what is specific to the baselines
(aging evolution)."""
import inspect
import json
import math
import os
import pickle
import re

import numpy as np
import pytest
from servers import local_ray

from search_space import Genotype, encode
from search_space.baseline_searchers import (
    SEARCHER_CLASSES,
    RandomSearcher,
    RegularizedEvolutionSearcher,
)
from search_space.searcher import legacy_state_error

METRIC = "auroc_msp"
#: Small, fast settings per searcher name; a name missing here is built with its defaults.
SMALL = {
    "regularized-evolution": dict(population=4, sample_size=2),
    "predictor-evolution": dict(min_results=4, refit_every=2, predictor="ridge", population=8, generations=3),
}
ALL = sorted(SEARCHER_CLASSES)
JSON_STATE = ALL  # every searcher saves and restores plain JSON, never a pickle


def make(name, seed=0, mode="max", **overrides):
    return SEARCHER_CLASSES[name](metric=METRIC, mode=mode, seed=seed, **{**SMALL.get(name, {}), **overrides})


def objective(g: Genotype) -> float:
    """A deterministic synthetic metric: fraction of first-cell edges present."""
    return float(encode(g)[:15].mean())


def drive(searcher, steps, start=0):
    """Suggest and complete ``steps`` trials one at a time; returns the suggested genotype JSONs."""
    out = []
    for t in range(start, start + steps):
        config = searcher.suggest(f"t{t}")
        out.append(config["genotype"])
        searcher.on_trial_complete(f"t{t}", {METRIC: objective(Genotype.from_json(config["genotype"]))})
    return out


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
    drive(s, 3)
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
    first, again, other = (drive(make(name, seed=seed), 10) for seed in (3, 3, 4))
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", ALL)
def test_save_restore_continues_identically(name, tmp_path):
    a = make(name, seed=7)
    drive(a, 10)
    a.suggest("pending")  # a trial in flight at checkpoint time
    path = tmp_path / "searcher-state"
    a.save(str(path))
    assert json.loads(path.read_text())["searcher"] == type(a).__name__
    b = make(name, seed=123)
    b.restore(str(path))
    for s in (a, b):
        s.on_trial_complete("pending", {METRIC: 0.3})
    assert drive(a, 10, start=10) == drive(b, 10, start=10)


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
    drive(s, 5)
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
    drive(a, 6)
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
        with pytest.raises(ValueError, match="set metric and mode"):
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
        values = [objective(Genotype.from_json(g)) for g in drive(searcher, 60)]
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
    """pipelines.tune_stage checks the state Tune would restore: Tune itself logs a failed searcher restore and
    silently restarts the experiment, so an unreadable state must be caught before ``Tuner.restore``."""
    from pipelines.tune_stage import unreadable_searcher_state
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
