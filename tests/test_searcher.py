"""PredictorEvolutionSearcher: driven by hand through the Searcher hooks, and once inside a real Tuner."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from search_space import Genotype, SearchSpace, encode, encode_many
from search_space.predictor import PREDICTORS, make_predictor, predictor_from_state
from search_space.searcher import PredictorEvolutionSearcher

FAST = dict(predictor_args={"epochs": 30}, population=8, generations=5)


def objective(g: Genotype) -> float:
    """A deterministic synthetic metric: fraction of first-cell edges present."""
    return float(encode(g)[:15].mean())


def drive(searcher, steps, start=0, value=objective):
    """Suggest and complete ``steps`` trials one at a time; returns the suggested genotype JSONs."""
    out = []
    for t in range(start, start + steps):
        config = searcher.suggest(f"t{t}")
        out.append(config["genotype"])
        searcher.on_trial_complete(f"t{t}", {"auroc_msp": value(Genotype.from_json(config["genotype"]))})
    return out


def test_default_construction_and_random_warmup():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max")
    suggestions = drive(s, 10)
    hashes = {Genotype.from_json(g).arch_hash for g in suggestions}
    assert len(hashes) == 10 and s.predictor is None  # random until min_results (default 10)
    drive(s, 1, start=10)
    assert s.predictor is not None


def test_predictor_phase_proposes_unseen_architectures_and_refits():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=6, refit_every=3, **FAST)
    suggestions = drive(s, 6)
    suggestions += drive(s, 12, start=6)
    assert len({Genotype.from_json(g).arch_hash for g in suggestions}) == len(suggestions)
    assert s.n_fits == 4, "refit after every 3 new results"


def test_errored_and_incomplete_trials_are_ignored():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max")
    for t, result in enumerate([None, {}, {"auroc_msp": float("nan")}, {"other": 1.0}]):
        s.suggest(f"t{t}")
        s.on_trial_complete(f"t{t}", result)
    s.suggest("t9")
    s.on_trial_complete("t9", {"auroc_msp": 0.7}, error=True)
    assert s.results == {} and s.pending == {}


def test_max_concurrent_is_respected():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", max_concurrent=2)
    assert s.suggest("a") and s.suggest("b")
    assert s.suggest("c") is None
    s.on_trial_complete("a", {"auroc_msp": 0.5})
    assert s.suggest("c") is not None
    s2 = PredictorEvolutionSearcher(metric="auroc_msp", mode="max")
    assert s2.set_max_concurrency(1) is True
    assert s2.suggest("a") and s2.suggest("b") is None


def test_pending_architectures_are_not_proposed_twice():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=4, **FAST)
    drive(s, 4)
    pending = [s.suggest(f"p{i}")["genotype"] for i in range(6)]
    assert len({Genotype.from_json(g).arch_hash for g in pending}) == 6


@pytest.mark.parametrize("source", ["pairs", "parquet"])
def test_warm_start(tmp_path, source):
    gs = SearchSpace().sample_many(12, seed=5)
    pairs = [(g.to_json(), objective(g)) for g in gs] + [(gs[0].to_json(), None)]
    if source == "parquet":
        path = tmp_path / "history.parquet"
        pd.DataFrame({"genotype": [p[0] for p in pairs], "auroc_msp": [p[1] for p in pairs],
                      "stage": "warmup"}).to_parquet(path)
        warm = str(path)
    else:
        warm = pairs
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", warm_start=warm, **FAST)
    assert len(s.results) == 12
    first = Genotype.from_json(s.suggest("t0")["genotype"])
    assert s.predictor is not None, "12 warm-start results >= min_results: straight to the predictor"
    assert first.arch_hash not in {g.arch_hash for g in gs}


def test_warm_start_errors(tmp_path):
    path = tmp_path / "h.parquet"
    pd.DataFrame({"genotype": ["{}"], "id_acc": [0.5]}).to_parquet(path)
    with pytest.raises(ValueError, match="needs columns 'genotype' and 'auroc_msp'"):
        PredictorEvolutionSearcher(metric="auroc_msp", mode="max", warm_start=str(path))
    with pytest.raises(ValueError, match="mode"):
        PredictorEvolutionSearcher(metric="auroc_msp", mode="up")
    with pytest.raises(ValueError, match="unknown"):
        PredictorEvolutionSearcher(metric="auroc_msp", mode="max", predictor="oracle")


def test_mode_min_prefers_low_values():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="min", min_results=8, refit_every=4, **FAST)
    drive(s, 8)
    later = drive(s, 8, start=8)
    values = [objective(Genotype.from_json(g)) for g in later]
    assert np.mean(values) < 0.5, "minimising the fraction of edges proposes sparse first cells"


def test_save_restore_continues_identically(tmp_path):
    a = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=5, refit_every=3, seed=7, **FAST)
    drive(a, 8)
    a.suggest("pending")  # a trial in flight at checkpoint time
    a.save(str(tmp_path / "searcher-state-x.json"))
    state = json.loads((tmp_path / "searcher-state-x.json").read_text())
    assert state["searcher"] == "PredictorEvolutionSearcher" and state["predictor"]["name"] == "mlp"
    b = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", seed=123)
    b.restore(str(tmp_path / "searcher-state-x.json"))
    assert b.get_state() == a.get_state() and b.predictor_name == "mlp" and b.min_results == 5
    for s in (a, b):
        s.on_trial_complete("pending", {"auroc_msp": 0.3})
    assert drive(a, 8, start=8) == drive(b, 8, start=8)


def test_state_round_trips_through_json_at_every_stage(tmp_path):
    """Before any result, in the random phase, with a fitted predictor and a queue, with trials pending."""
    a = PredictorEvolutionSearcher(metric="auroc_msp", mode="min", min_results=4, refit_every=2, batch=3,
                                   predictor="ridge", population=6, generations=2, final_temperature=0.01,
                                   max_concurrent=5, seed=1)
    for steps in (0, 2, 3, 4):
        drive(a, steps, start=100 * steps)
        a.suggest(f"pending{steps}")
        state = json.loads(json.dumps(a.get_state(), allow_nan=False))
        b = PredictorEvolutionSearcher()
        b.set_state(state)
        assert b.get_state() == a.get_state()
        assert (b.metric, b.mode, b.max_concurrent, b.batch) == ("auroc_msp", "min", 5, 3)
        assert b.evolution_args == a.evolution_args and b.space == a.space
        assert [g.arch_hash for g in b.queue] == [g.arch_hash for g in a.queue]
    assert a.predictor is not None and a.queue, "the last round had a fitted predictor and queued proposals"
    X = encode_many(list(a.genotypes.values()))
    assert np.array_equal(b.predictor.predict(X), a.predictor.predict(X))


@pytest.mark.parametrize("source", ["pairs", "path"])
def test_a_warm_start_not_loaded_yet_is_kept_in_the_state(tmp_path, source):
    """Without a metric the warm start waits for set_search_properties; a restored searcher loads the same."""
    gs = SearchSpace().sample_many(6, seed=2)
    if source == "path":
        warm = str(tmp_path / "history.parquet")
        pd.DataFrame({"genotype": [g.to_json() for g in gs], "auroc_msp": [objective(g) for g in gs]}).to_parquet(warm)
    else:
        warm = iter([(g, objective(g)) for g in gs])  # one-shot: read at construction
    a = PredictorEvolutionSearcher(warm_start=warm, min_results=4, **FAST)
    state = json.loads(json.dumps(a.get_state()))
    assert state["results"] == {} and state["warm_start"] == (
        {"path": warm} if source == "path" else {"pairs": [[g.to_json(), objective(g)] for g in gs]})
    b = PredictorEvolutionSearcher(seed=5)
    b.set_state(state)
    for s in (a, b):
        s.set_search_properties("auroc_msp", "max", {})
    assert len(a.results) == len(b.results) == 6 and b.get_state() == a.get_state()
    assert drive(a, 3) == drive(b, 3)


def test_set_state_rejects_malformed_states_and_changes_nothing():
    s = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=4, predictor="ridge",
                                   **{**FAST, "predictor_args": {}})
    drive(s, 5)
    good = json.loads(json.dumps(s.get_state()))
    h = next(iter(good["results"]))
    other_hash = next(k for k in good["results"] if k != h)
    bad = {
        "format": 2, "searcher": "RandomSearcher", "mode": "up", "space": {"k": 1}, "max_concurrent": 0,
        "rng": {"bit_generator": "MT19937"}, "results": {h: []}, "genotypes": {h: good["genotypes"][other_hash]},
        "pending": {"t": "{}"}, "queue": "[]", "new_since_fit": -1, "n_fits": 1.5, "warm_start": {"file": "x"},
        "predictor": {**good["predictor"], "name": "oracle"},
        "settings": {**good["settings"], "min_results": 1},
    }
    fresh = PredictorEvolutionSearcher(metric="other", mode="min", seed=9)
    expected = fresh.get_state()
    for key, value in [*bad.items(), ("settings", {**good["settings"], "predictor_args": {"depth": 3}}),
                       ("settings", {**good["settings"], "evolution_args": {"population": 4}}),
                       ("results", {h: [float("nan")] for h in good["results"]}),
                       ("genotypes", {}), ("predictor", {**good["predictor"], "arrays": {}})]:
        with pytest.raises(ValueError, match=r"^PredictorEvolutionSearcher state: ") as info:
            fresh.set_state({**good, key: value})
        assert "\n" not in str(info.value), key
    for state in (None, [], {}, {k: v for k, v in good.items() if k != "queue"}):
        with pytest.raises(ValueError, match="PredictorEvolutionSearcher state: "):
            fresh.set_state(state)
    assert fresh.get_state() == expected, "a rejected state changes nothing"


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_predictor_state_is_json_and_exact(name):
    gs = SearchSpace().sample_many(20, seed=4)
    X, y = encode_many(gs), np.array([objective(g) for g in gs])
    args = {"ridge": {}, "mlp": {"epochs": 5}}.get(name, {"epochs": 5, "n_members": 2})
    p = make_predictor(name, **args).fit(X, y, seed=3)
    state = json.loads(json.dumps(p.to_state(), allow_nan=False))
    q = predictor_from_state(state)
    assert type(q) is type(p) and repr(q) == repr(p) and q.to_state() == p.to_state()
    assert np.array_equal(q.predict(X), p.predict(X))
    assert {a["dtype"] for a in state["arrays"].values()} <= {"float32", "float64"}
    with pytest.raises(RuntimeError, match="fit"):
        make_predictor(name, **args).to_state()


def test_predictor_from_state_rejects_malformed_states():
    gs = SearchSpace().sample_many(8, seed=4)
    good = make_predictor("mlp", hidden=(4,), epochs=2).fit(encode_many(gs), np.arange(8.0)).to_state()
    w0 = good["arrays"]["w0"]
    broken = [
        None, {}, {**good, "name": "oracle"}, {**good, "kwargs": {"depth": 2}}, {**good, "kwargs": None},
        {**good, "n_features_": 7}, {**good, "n_features_": "120"}, {**good, "y_scale_": 0.0},
        {k: v for k, v in good.items() if k != "y_mean_"},
        {**good, "arrays": {**good["arrays"], "w0": {**w0, "dtype": "object"}}},
        {**good, "arrays": {**good["arrays"], "w0": {**w0, "data": ["1.0"] * len(w0["data"])}}},
        {**good, "arrays": {**good["arrays"], "w0": {**w0, "data": w0["data"][:-1]}}},
        {**good, "arrays": {**good["arrays"], "w0": {**w0, "shape": [1, *w0["shape"]]}}},
        {**good, "arrays": {**good["arrays"], "w0": {**w0, "shape": [w0["shape"][0], w0["shape"][2], w0["shape"][1]]}}},
        {**good, "arrays": {"w0": w0}},
    ]
    for state in broken:
        with pytest.raises(ValueError, match="^predictor state: ") as info:
            predictor_from_state(state)
        assert "\n" not in str(info.value)


def test_same_seed_same_suggestions():
    runs = [drive(PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=5, seed=3, **FAST), 9)
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_docstring_example_runs_in_a_real_tuner(ray_local, tmp_path, monkeypatch):
    """The class docstring's example, verbatim except for a storage path under tmp_path."""
    import search_space.searcher as module

    code = re.search(r"Example.*?::\n\n(.*?)\n\n``suggest``", module.__doc__, flags=re.S).group(1)
    assert "tune.Tuner(trainable," in code
    code = "\n".join(line[4:] for line in code.splitlines())
    monkeypatch.chdir(tmp_path)
    run_config = f"run_config=tune.RunConfig(storage_path={str(tmp_path)!r}, verbose=0)"
    code = code.replace("tune.Tuner(trainable,", f"tune.Tuner(trainable, {run_config},")
    scope = {}
    exec(compile(code, "searcher_example", "exec"), scope)
    config = scope["best"].config
    assert len(json.loads(config["genotype"])["cells"]) == 3
    assert 1e-4 <= config["optim"]["lr"] <= 1e-1 and config["optim"]["batch_size"] in (64, 128), "joint search"
    assert config["epochs"] == 3 and len(scope["searcher"].hp_history) == 16
