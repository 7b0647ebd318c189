"""The stage sequence of ``pipelines.nas.workflow`` with the Tune stages replaced by a seeded fake evaluator:
which architectures each stage trains, with which teachers, and what a rerun reuses."""
import json
import math

import numpy as np
import pytest

import pipelines.nas.workflow as workflow
from pipelines.common.rundir import RunDir
from pipelines.nas.settings import load_config
from search_space import Genotype


class FakeBundle:
    def __init__(self, chosen, width):
        self.genotypes = [r["genotype"] for r in chosen]
        self.hashes = [r["arch_hash"] for r in chosen]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    calls = []

    def run_stage(run, cfg, stage, experiment, tracking_uri, tags=None):
        calls.append(stage)
        records = []
        for g in stage.genotypes:
            h = Genotype.from_json(g).arch_hash
            value = float(np.random.default_rng([int(h[:8], 16), stage.iteration]).uniform(0.5, 0.9))
            failed = h.startswith(("0", "1"))  # some candidates fail: no weights, NaN metric
            records.append({"arch_hash": h, "genotype": g, "stage": stage.stage, "iteration": stage.iteration,
                            "auroc_msp": math.nan if failed else value, "checkpoint": None if failed else f"/ck/{h}"})
        stage.records = records
        return records, {"trials": len(records), "failed": sum(r["checkpoint"] is None for r in records)}

    monkeypatch.setattr(workflow, "run_stage", run_stage)
    monkeypatch.setattr(workflow, "load_bundle", FakeBundle)
    return calls


def make(tmp_path, *sets):
    cfg = load_config("ci", ["warmup.n=8", "distill.top=2", "distill.random=1", *sets])
    return workflow.Workflow(RunDir.open(tmp_path / "run", cfg), cfg, f"sqlite:///{tmp_path / 'unused.db'}")


def test_alg2_retrains_the_pool_each_iteration_with_teachers_from_the_last(fake, tmp_path):
    flow = make(tmp_path, "distill.iterations=2")
    warmup = flow.warmup()
    records, bundle = flow.distill(warmup)
    assert [s.name for s in fake] == ["warmup", "distill-1", "distill-2"]
    pool = [r["genotype"] for r in warmup]
    assert fake[1].genotypes == pool and fake[2].genotypes == pool
    assert fake[1].train["objective"] == "distill" and fake[0].train["objective"] == "oe"
    best_warmup = sorted(workflow.usable(warmup, "auroc_msp"), key=lambda r: -r["auroc_msp"])[:2]
    assert fake[1].teachers.hashes[:2] == [r["arch_hash"] for r in best_warmup]
    best_first = sorted(workflow.usable(fake[1].records, "auroc_msp"), key=lambda r: -r["auroc_msp"])[:2]
    assert bundle.hashes[:2] == [r["arch_hash"] for r in best_first] and len(bundle.hashes) == 3
    assert all(r["iteration"] == 2 for r in records)


def test_alg3_adds_q_new_per_iteration_then_retrains_all_alive(fake, tmp_path):
    flow = make(tmp_path, "distill.algorithm=alg3", "distill.iterations=2", "distill.q=3")
    warmup = flow.warmup()
    records, bundle = flow.distill(warmup)
    assert [s.name for s in fake] == ["warmup", "distill-1", "distill-2", "distill-final"]
    assert len(fake[1].genotypes) == 3 and len(fake[2].genotypes) == 3
    seen = [Genotype.from_json(g).arch_hash for s in fake[:3] for g in s.genotypes]
    assert len(seen) == len(set(seen)) == 14  # new architectures are new
    alive = [r["genotype"] for s in fake[:3] for r in s.records if r["checkpoint"]]  # dead: not retrained
    assert sorted(fake[3].genotypes) == sorted(alive)
    assert fake[3].iteration == 3 and fake[3].teachers is not bundle  # final teachers: after that retrain


def test_zero_iterations_means_no_distillation(fake, tmp_path):
    flow = make(tmp_path, "distill.iterations=0")
    warmup = flow.warmup()
    records, bundle = flow.distill(warmup)
    assert records is warmup and bundle is None and [s.name for s in fake] == ["warmup"]


def test_finished_stages_are_read_back_not_rerun(fake, tmp_path):
    flow = make(tmp_path, "distill.iterations=1")
    flow.distill(flow.warmup())
    again = make(tmp_path, "distill.iterations=1")
    records, _ = again.distill(again.warmup())
    assert len(fake) == 2  # nothing ran the second time
    assert records == json.loads((tmp_path / "run" / "stages" / "distill-1.json").read_text())["records"]


def test_predictor_stage_writes_metrics(fake, tmp_path):
    flow = make(tmp_path, "distill.iterations=1", "warmup.n=14")
    records, _ = flow.distill(flow.warmup())
    metrics = flow.predictor(records)
    saved = json.loads((tmp_path / "run" / "predictor" / "metrics.json").read_text())
    assert saved["n_train"] + saved["n_val"] == len(workflow.usable(records, "auroc_msp"))
    assert -1 <= saved["kendall_tau"] <= 1 and metrics == saved
    assert len(saved["validation"]) == saved["n_val"]


def test_too_few_usable_architectures_for_the_predictor_is_one_line(fake, tmp_path):
    flow = make(tmp_path, "distill.iterations=1", "warmup.n=4")
    records, _ = flow.distill(flow.warmup())
    kept = [r for r in records if r.get("checkpoint")][:3]
    with pytest.raises(workflow.NoUsableCandidates, match=r"^predictor: only 3 architectures .* it needs 4"):
        flow.predictor(kept)
    assert not flow.run.done("predictor")


def test_a_stage_where_every_candidate_failed_stops_with_a_clear_error(monkeypatch, tmp_path):
    def all_fail(run, cfg, stage, experiment, tracking_uri, tags=None):
        records = [{"arch_hash": Genotype.from_json(g).arch_hash, "genotype": g, "auroc_msp": math.nan,
                    "checkpoint": None, "error": "diverged: training loss became nan"} for g in stage.genotypes]
        return records, {"trials": len(records), "failed": len(records)}

    monkeypatch.setattr(workflow, "run_stage", all_fail)
    flow = make(tmp_path, "distill.iterations=1")
    tune_dir = tmp_path / "run" / "tune" / "warmup"
    tune_dir.mkdir(parents=True)  # Tune's experiment of the failed stage
    with pytest.raises(workflow.NoUsableCandidates, match="stage warmup: every candidate failed .*diverged"):
        flow.warmup()
    assert (tmp_path / "run" / "stages" / "warmup.json").exists()  # the failures are kept
    assert not flow.run.done("warmup") and not tune_dir.exists()  # not finished; Tune's files set aside
    assert [p.name.startswith("warmup.failed-") for p in tune_dir.parent.iterdir()] == [True]


def test_a_failed_stage_runs_again_once_the_cause_is_fixed(fake, monkeypatch, tmp_path):
    fixed = workflow.run_stage
    monkeypatch.setattr(workflow, "run_stage", lambda run, cfg, stage, *a: (
        [{"arch_hash": "x", "genotype": g, "checkpoint": None, "error": "OSError: no space"} for g in stage.genotypes],
        {"trials": len(stage.genotypes), "failed": len(stage.genotypes)}))
    flow = make(tmp_path)
    with pytest.raises(workflow.NoUsableCandidates):
        flow.warmup()
    monkeypatch.setattr(workflow, "run_stage", fixed)  # space freed, the same command again
    records = make(tmp_path).warmup()
    assert any(r["checkpoint"] for r in records) and flow.run.__class__.open(tmp_path / "run", flow.cfg).done("warmup")


def test_space_wiring_setting_reaches_every_trained_genotype(fake, tmp_path):
    flow = make(tmp_path, "space.residual=false")
    flow.warmup()
    assert all(Genotype.from_json(g).residual is False for g in fake[0].genotypes)


def test_space_operator_search_setting_reaches_the_sampled_genotypes(fake, tmp_path):
    from search_space import default_ops

    flow = make(tmp_path, "space.search_ops=true")
    flow.warmup()
    ops = {c.ops for g in fake[0].genotypes for c in Genotype.from_json(g).cells}
    assert ops != {default_ops(6)}  # operators drawn per vertex, not the fixed assignment


def test_a_stage_that_may_fail_entirely_is_finished_with_its_failures_and_a_required_one_stops(monkeypatch, tmp_path):
    """``Stage.required=False`` (the comparison): every trial failing is recorded and the run goes on; a required
    stage with no usable candidate stops with one line and stays unfinished."""
    import fake_stages

    from pipelines.nas.teachers import NoUsableCandidates
    from pipelines.nas.tune_stage import Stage

    fake_stages.install(monkeypatch, dead=lambda h: True)
    flow = make(tmp_path)
    genotypes = [g.to_json() for g in flow.space.sample_many(2, seed=0)]
    records = flow.evaluate(Stage("compare", "compare", 0, flow.warmup_train(), genotypes=genotypes, seeds=[0, 1],
                                  required=False))
    assert len(records) == 4 and not any(r["checkpoint"] for r in records) and flow.run.done("compare")
    with pytest.raises(NoUsableCandidates, match="stage warmup: every candidate failed"):
        flow.evaluate(Stage("warmup", "warmup", 0, flow.warmup_train(), genotypes=genotypes))
    assert not flow.run.done("warmup")
