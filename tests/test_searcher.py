"""PredictorEvolutionSearcher: driven by hand through the Searcher hooks, and once inside a real Tuner."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from search_space import Genotype, SearchSpace, encode
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
    a.save(str(tmp_path / "searcher.pkl"))
    b = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", seed=123)
    b.restore(str(tmp_path / "searcher.pkl"))
    for s in (a, b):
        s.on_trial_complete("pending", {"auroc_msp": 0.3})
    assert drive(a, 8, start=8) == drive(b, 8, start=8)


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
    g = json.loads(scope["best"].config["genotype"])
    assert len(g["cells"]) == 3
