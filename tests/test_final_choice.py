"""The final stage's choices with a fake evaluator (issue 13 items 5 and 6): which architecture is retrained
(``final.champion``: the best measured or the predictor's optimum, both reported), and Algorithm 3's dead
architectures and final teachers."""
import json
import pickle

import fake_stages
import numpy as np
import pytest

from pipelines.common.settings import ConfigError
from pipelines.nas.report import _candidate_lines, _compare_lines
from pipelines.nas.settings import load_config
from pipelines.nas.teachers import choose_teachers, usable
from search_space import Genotype, encode_many, load_predictor, make_predictor


@pytest.fixture
def fake(monkeypatch):
    return fake_stages.install(monkeypatch)


def reversed_predictor(flow, records):
    """Replace the predictor stage's model by one fit on the *negated* measured metric, so its optimum is not the
    best measured architecture; return it."""
    ok = usable(records, "auroc_msp")
    X = encode_many([Genotype.from_json(r["genotype"]) for r in ok])
    predictor = make_predictor("ridge", alpha=0.01).fit(X, -np.array([r["auroc_msp"] for r in ok]))
    predictor.save(flow.run / "predictor" / "predictor.npz")
    return predictor


@pytest.mark.parametrize("rule", ["measured", "predicted"])
def test_champion_setting_chooses_what_is_retrained_and_both_are_reported(fake, tmp_path, rule):
    flow = fake_stages.make_flow(tmp_path, f"final.champion={rule}", "warmup.n=12", "search.trials=2")
    records, teachers = flow.distill(flow.warmup())
    flow.predictor(records)
    searched = flow.search(records, teachers)
    predictor = reversed_predictor(flow, records)
    pool = usable(records + searched, "auroc_msp")
    assert len(pool) < len(records + searched)  # some candidates died: they are not candidates
    predicted = predictor.predict(encode_many([Genotype.from_json(r["genotype"]) for r in pool]))
    best_measured = max(pool, key=lambda r: r["auroc_msp"])
    optimum = pool[int(np.argmax(predicted))]
    assert optimum["arch_hash"] != best_measured["arch_hash"]

    best = flow.final(records + searched, teachers)
    chosen = best_measured if rule == "measured" else optimum
    (genotype, train, bundle, name), = fake.retrained
    assert genotype == chosen["genotype"] and bundle is teachers and name == "final"
    assert best == json.loads((flow.run / "best.json").read_text())
    assert best["champion"] == rule and best["arch_hash"] == chosen["arch_hash"]
    c = best["candidates"]
    assert c["measured"]["arch_hash"] == best_measured["arch_hash"]
    assert c["predicted"]["arch_hash"] == optimum["arch_hash"]
    assert c["measured"]["measured_search"]["auroc_msp"] == best_measured["auroc_msp"]
    assert c["predicted"]["measured_search"]["auroc_msp"] == optimum["auroc_msp"]
    assert c["predicted"]["predicted"]["auroc_msp"] == pytest.approx(predicted.max())
    assert c["measured"]["predicted"]["auroc_msp"] == pytest.approx(predicted[pool.index(best_measured)])
    assert best["predicted"] == c[rule]["predicted"] and best["measured_search"] == c[rule]["measured_search"]
    text = "\n".join(_candidate_lines(best, "auroc_msp"))
    assert best_measured["arch_hash"] in text and optimum["arch_hash"] in text
    assert f"`{chosen['arch_hash']}` |" in [line for line in text.splitlines() if line.endswith("| yes |")][0]


def test_compare_retrains_champion_median_and_standard_once_per_seed(fake, tmp_path):
    flow = fake_stages.make_flow(tmp_path, "final.compare.seeds=[0, 1, 2]",
                                 "final.compare.standard={model: resnet, args: {depth: 8}}")
    records, teachers = flow.distill(flow.warmup())
    flow.predictor(records)
    best = flow.final(records, teachers)
    stage = fake.stages[-1]
    ranked = sorted(usable(fake.stages[0].records, "auroc_msp"), key=lambda r: (r["auroc_msp"], r["arch_hash"]))
    median = ranked[(len(ranked) - 1) // 2]
    assert stage.name == "compare" and stage.seeds == [0, 1, 2] and stage.teachers is teachers
    assert stage.genotypes == [best["genotype"] if isinstance(best["genotype"], str) else
                               Genotype.from_dict(best["genotype"]).to_json(), median["genotype"],
                               '{"args":{"depth":8},"model":"resnet"}']
    assert stage.train == fake.retrained[0][1]  # exactly like the final model
    rows = best["compare"]["rows"]
    assert [r["role"] for r in rows] == ["champion", "median warmup architecture", "standard architecture ResNet-8"]
    assert all(r["seeds"] == [0, 1, 2] and len(r["values"]["auroc_msp"]) == 3 for r in rows)
    text = "\n".join(_compare_lines(best))
    assert "## Did the search help?" in text and text.count("±") >= 6 and "Welch p" in text
    assert ("inside seed noise" in text) or ("beyond seed noise" in text)


def test_a_planted_predictor_pickle_is_never_loaded(fake, tmp_path):
    """A run directory from before predictor.npz (or a crafted file) holds predictor.pkl: a rerun refits the
    same seeded model into predictor.npz and never unpickles the file."""
    flow = fake_stages.make_flow(tmp_path)
    records, teachers = flow.distill(flow.warmup())
    flow.predictor(records)
    saved = flow.run / "predictor" / "predictor.npz"
    expected = load_predictor(saved).predict(encode_many([Genotype.from_json(r["genotype"]) for r in records]))
    saved.unlink()
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (flow.run / "predictor" / "predictor.pkl").write_bytes(pickle.dumps(Exploit()))
    flow = fake_stages.make_flow(tmp_path)  # the same command again
    flow.predictor(records)
    flow.champions(records)
    assert not marker.exists()
    got = load_predictor(saved).predict(encode_many([Genotype.from_json(r["genotype"]) for r in records]))
    assert np.allclose(got, expected)


def test_compare_settings_are_checked():
    for bad in ("final.compare.seeds=[1, 1]", "final.compare.standard={model: resnet, args: {depth: 9}}",
                "final.compare.standard={model: vgg}"):
        with pytest.raises(ConfigError, match="final.compare"):
            load_config("ci", [bad])
    assert load_config("ci", ["final.compare.seeds=[]"])["final"]["compare"]["seeds"] == []


def test_champion_setting_is_checked():
    assert load_config("quick")["final"]["champion"] == "measured"
    with pytest.raises(ConfigError, match="final.champion"):
        load_config("quick", ["final.champion=oracle"])


def test_alg3_drops_dead_architectures_and_picks_the_final_teachers_after_the_full_retrain(monkeypatch, tmp_path):
    fake = fake_stages.install(monkeypatch, dead=lambda h: h[0] in "0123")  # about a quarter die
    flow = fake_stages.make_flow(tmp_path, "distill.algorithm=alg3", "distill.iterations=2", "distill.q=3",
                                 "search.trials=2")
    records, bundle = flow.distill(flow.warmup())
    assert [s.name for s in fake.stages] == ["warmup", "distill-1", "distill-2", "distill-final"]
    pool = [r for s in fake.stages[:3] for r in s.records]
    dead = {r["arch_hash"] for r in pool if r["checkpoint"] is None}
    assert dead, "the fake evaluator kills some architectures"
    retrained = {Genotype.from_json(g).arch_hash for g in fake.stages[3].genotypes}
    assert retrained == {r["arch_hash"] for r in pool} - dead
    # the full retrain's teachers come from the pool; the final teachers from the full retrain's records
    assert fake.stages[3].teachers.hashes == [r["arch_hash"] for r in choose_teachers(
        pool, "auroc_msp", 2, 1, seed=0, iteration=3)]
    expected = choose_teachers(records, "auroc_msp", 2, 1, seed=0, iteration=4)
    assert bundle.hashes == [r["arch_hash"] for r in expected] and records is fake.stages[3].records
    saved = json.loads((flow.run / "stages" / "teachers-final.json").read_text())
    assert [t["arch_hash"] for t in saved] == bundle.hashes and all(t["stage"] == "distill" for t in saved)
    flow.predictor(records)
    searched = flow.search(records, bundle)
    flow.final(records + searched, bundle)
    assert fake.stages[-1].teachers is bundle and fake.retrained[0][2] is bundle  # search and final use them
