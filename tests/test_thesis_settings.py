"""The thesis's DCSOD as presets (issue 28): every method setting of the thesis in the ``*-thesis`` presets,
best.json/report.md saying which settings a run shares with the thesis, DESIGN.md's table in step with the
list, and the ``optimum`` champion rule (the EA's optimum under a predictor refit on every trained pair)."""
import re
from pathlib import Path

import pytest

from pipelines.common.settings import ConfigError
from pipelines.nas.settings import load_config, preset_names
from pipelines.nas.thesis_settings import THESIS_SETTINGS, against_thesis, effective, thesis_lines

ROOT = Path(__file__).resolve().parents[1]
THESIS_PRESETS = ("cifar10-vs-cifar100-thesis", "cifar100-vs-cifar10-thesis", "cifar10-split-thesis")


@pytest.mark.parametrize("name", THESIS_PRESETS)
def test_thesis_presets_use_every_method_setting_of_the_thesis(name):
    cfg = load_config(name, [])
    comparison = against_thesis(cfg)
    assert comparison["method"]["differ"] == {}
    base = load_config(name.removesuffix("-thesis"), [])  # extends: everything else is the base preset's
    assert cfg["protocol"] == base["protocol"] and cfg["warmup"] == base["warmup"]
    assert set(against_thesis(base)["method"]["differ"]) == {"space.residual", "distill.t_squared",
                                                             "predictor.args.rank_weight", "final.champion"}


def test_the_paper_thesis_presets_have_the_thesis_budget_and_the_cpu_one_says_where_it_differs():
    assert against_thesis(load_config("cifar10-vs-cifar100-thesis", []))["budget"]["differ"] == {}
    lines = thesis_lines(against_thesis(load_config("cifar10-split-thesis", ["warmup.n=8"])))
    assert lines[:3] == ["## Against the thesis's DCSOD", "", "All 13 method settings are the thesis's (DCSOD as "
                                                                  "written)."]
    assert "Budget differences: `warmup.n` 8 (thesis 2000)." in lines
    quick = thesis_lines(against_thesis(load_config("quick", [])))
    assert quick[2].startswith("9 of 13 method settings are the thesis's") and \
        "- `space.residual`: thesis False, this run True" in quick


def test_effective_values_include_the_trainer_and_predictor_defaults():
    cfg = load_config("quick", [])
    assert effective(cfg, "predictor.args.rank_weight") == 0.1  # the MLP's default, not in the preset
    assert effective(load_config("quick", ["predictor.name=ridge"]), "predictor.args.rank_weight") == "n/a"
    assert effective(load_config("cifar10-split", []), "train.lr") == 0.1  # TrainConfig's default


def test_design_md_lists_every_thesis_setting():
    table = (ROOT / "DESIGN.md").read_text().split("### The thesis's settings against the defaults")[1]
    table = table.split("Further differences")[0]
    listed = set(re.findall(r"`([a-z_.]+)`", table))
    assert {s.key for s in THESIS_SETTINGS} <= listed, {s.key for s in THESIS_SETTINGS} - listed


def test_a_preset_extends_another_and_a_bad_extends_is_one_line(tmp_path):
    from pipelines.common.settings import PresetFile

    path = tmp_path / "p.yaml"
    path.write_text("defaults: {a: 1, b: {c: 2, d: 3}}\npresets:\n  base: {b: {c: 5}}\n"
                    "  child: {extends: base, b: {d: 7}}\n  loop: {extends: loop2}\n  loop2: {extends: loop}\n"
                    "  orphan: {extends: nowhere}\n")
    presets = PresetFile(path)
    assert presets.load("child") == {"a": 1, "b": {"c": 5, "d": 7}, "preset": "child"}
    with pytest.raises(ConfigError, match="extends 'nowhere', which is not a preset"):
        presets.load("orphan")
    with pytest.raises(ConfigError, match="a loop"):
        presets.load("loop")
    assert set(THESIS_PRESETS) <= set(preset_names())


def test_the_optimum_champion_is_the_evolutions_best_under_a_predictor_refit_on_every_pair(monkeypatch, tmp_path):
    """With a predictor that learns exactly (the pairs' metric is a linear function of the encoding), the EA's
    optimum scores at least as high as every trained candidate; it is the same for the same seed."""
    import numpy as np

    from pipelines.common.rundir import RunDir
    from pipelines.nas.workflow import Workflow
    from search_space import SearchSpace, encode_many

    cfg = load_config("ci", ["final.champion=optimum", "predictor.name=ridge", "search.generations=5"])
    wf = Workflow(RunDir.open(tmp_path / "run", cfg), cfg, f"sqlite:///{tmp_path / 'm.db'}")
    genotypes = SearchSpace(**cfg["space"]).sample_many(12, seed=1)
    weights = np.random.default_rng(0).normal(size=encode_many(genotypes[:1]).shape[1])
    value = encode_many(genotypes) @ weights
    trained = [{"arch_hash": g.arch_hash, "genotype": g.to_json(), "auroc_msp": float(v), "stage": "search",
                "iteration": 0, "checkpoint": "x"} for g, v in zip(genotypes, value)]
    best = wf.optimum(trained)
    assert best == wf.optimum(trained)
    assert best["predicted"] >= max(value) - 1e-6
    if best["arch_hash"] not in {r["arch_hash"] for r in trained}:
        assert best["stage"] == "optimum" and best["auroc_msp"] is None
