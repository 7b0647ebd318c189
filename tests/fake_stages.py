"""A seeded fake evaluator for ``pipelines.nas.workflow``: Tune stages, teacher loading and the final retrain's Ray,
MLflow and registry calls replaced, so a test runs every stage's logic in milliseconds.

``install(monkeypatch)`` returns a :class:`Calls` record: ``stages`` (every :class:`pipelines.nas.tune_stage.Stage`
run, with ``records`` set), ``retrained`` (``(genotype, train, teachers, name)`` of every final retrain) and
``dead`` (arch hashes whose training fails in every stage: no weights, NaN metric).
"""
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from search_space.architecture import arch_hash_of


class FakeBundle:
    def __init__(self, chosen, width):
        self.genotypes = [r["genotype"] for r in chosen]
        self.hashes = [r["arch_hash"] for r in chosen]


class FakeTracker:
    def __init__(self, *args, **kwargs):
        self.recorded = []
        self.history = type("History", (), {"compact": lambda self: None})()

    def record(self, result, before_finish=None):
        self.recorded.append(result)
        return f"run-{len(self.recorded)}"


class FakeRunTree:
    """:class:`pipelines.common.mlflow_runs.RunTree` without MLflow: remembers the runs it would open and end."""

    def __init__(self, recorder=None, name="run", settings=None, tags=None, parent_id=None):
        self.root, self.ended, self.metrics = f"root:{name}", [], {}
        self.recorder = type("Recorder", (), {"client": type("Client", (), {
            "log_artifact": lambda self, *a, **k: None, "set_tag": lambda self, *a, **k: None})()})()

    @classmethod
    def attach(cls, recorder, root_id, tags=None):
        tree = cls()
        tree.root = root_id
        return tree

    def child(self, name, tags=None):
        return f"stage:{name}"

    @staticmethod
    def nest_under(run_id):
        return {"mlflow.parentRunId": run_id}

    def log_metrics(self, run_id, metrics):
        self.metrics.setdefault(run_id, {}).update(metrics)

    def end(self, run_id=None, status="FINISHED"):
        self.ended.append((run_id or self.root, status))

    def end_open(self, status="FAILED", root=True):
        self.ended.append(("open", status))


@dataclass
class Calls:
    stages: list = field(default_factory=list)
    retrained: list = field(default_factory=list)
    dead: set = field(default_factory=set)


def value(arch_hash: str, iteration: int) -> float:
    """The fake measured metric of an architecture in an iteration."""
    try:
        key = int(arch_hash[:8], 16)
    except ValueError:  # a standard model's readable arch_hash
        key = int(hashlib.sha256(arch_hash.encode()).hexdigest()[:8], 16)
    return float(np.random.default_rng([key, iteration]).uniform(0.5, 0.9))


def install(monkeypatch, dead=lambda h: h.startswith(("0", "1"))) -> Calls:
    import pipelines.nas.final
    import pipelines.nas.model_registry
    import pipelines.nas.tracking
    import pipelines.nas.workflow as workflow

    calls = Calls()

    def run_stage(run, cfg, stage, experiment, tracking_uri, tags=None):
        calls.stages.append(stage)
        genotypes = stage.genotypes
        if genotypes is None:  # a searcher stage: take its suggestions
            genotypes = [stage.searcher.suggest(f"t{i}")["genotype"] for i in range(stage.num_samples)]
        records = []
        for g in genotypes:
            h = arch_hash_of(g)
            failed = dead(h)
            if failed:
                calls.dead.add(h)
            for seed in stage.seeds or [cfg["seed"]]:
                records.append({"arch_hash": h, "genotype": g, "stage": stage.stage, "iteration": stage.iteration,
                                "seed": seed, "auroc_msp": math.nan if failed else value(h, stage.iteration + seed),
                                "id_acc": math.nan if failed else 0.9, "params": 1000,
                                "checkpoint": None if failed else f"/ck/{h}"})
        stage.records = records
        return records, {"trials": len(records), "failed": sum(r["checkpoint"] is None for r in records)}

    def retrain(run, cfg, genotype, train, teachers, name="final"):
        calls.retrained.append((genotype, train, teachers, name))
        return {"auroc_msp": 0.8, "id_acc": 0.9, "epochs": train["epochs"]}, {}

    monkeypatch.setattr(workflow, "run_stage", run_stage)
    monkeypatch.setattr(workflow, "RunTree", FakeRunTree)
    monkeypatch.setattr(workflow, "MLflowRecorder", lambda *a, **k: None)
    monkeypatch.setattr(workflow, "load_bundle", FakeBundle)
    monkeypatch.setattr(pipelines.nas.final, "retrain", retrain)
    monkeypatch.setattr(pipelines.nas.final, "load_model_info", lambda run, cfg, name="final": {})
    monkeypatch.setattr(pipelines.nas.final, "package", lambda genotype, state_dict, info, train: None)
    monkeypatch.setattr(pipelines.nas.final, "example_images", lambda info: None)
    monkeypatch.setattr(pipelines.nas.final, "source_dirs", lambda: [])
    monkeypatch.setattr(pipelines.nas.model_registry, "log_model", lambda *a, **k: "model-uri")
    monkeypatch.setattr(pipelines.nas.model_registry, "register_champion",
                        lambda *a, **k: ("1", True, "first registered version"))
    monkeypatch.setattr(pipelines.nas.tracking, "MLflowHistoryCallback", FakeTracker)
    return calls


def make_flow(tmp_path, *sets, preset="ci", name="run"):
    """A :class:`pipelines.nas.workflow.Workflow` of ``preset`` (8 warmup architectures, 2 + 1 teachers) in
    ``tmp_path/name``."""
    import pipelines.nas.workflow as workflow
    from pipelines.common.rundir import RunDir
    from pipelines.nas.settings import load_config

    cfg = load_config(preset, ["warmup.n=8", "distill.top=2", "distill.random=1", *sets])
    return workflow.Workflow(RunDir.open(tmp_path / name, cfg), cfg, f"sqlite:///{tmp_path / 'unused.db'}")
