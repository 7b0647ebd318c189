"""ASHA early stopping in the search stage (``search.early_stop=asha``), run as a user runs the pipeline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parent.parent


def test_asha_stops_search_trainings_which_are_killed_runs_and_never_train_the_predictor(tmp_path):
    """Search trainings report every epoch; ASHA (grace 1 epoch, factor 2) stops some of six. A stopped one is a
    KILLED MLflow run tagged ``stopped_early`` under the search stage's run, has no history row, counts in the
    stage's ``stopped_early``, and the searcher keeps it apart (its partial metric trains nothing)."""
    from mlflow import MlflowClient

    from search_space.searcher import PredictorEvolutionSearcher

    out, uri = tmp_path / "out", f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--preset", "ci", "--set", "max_concurrent=1",
           "--set", "train.epochs=3", "--set", "search.trials=6", "--set", "search.early_stop=asha",
           "--set", "search.reduction_factor=2", "--set", "final.compare.seeds=[]", "--output", str(out),
           "--tracking-uri", uri, "--address", "local", "--no-dashboard"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(cmd, cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stats = json.loads((out / "manifest.json").read_text())["stages"]["search"]
    history = pd.read_parquet(out / "history.parquet")
    searched = history[history.stage == "search"]
    assert stats["stopped_early"] >= 1 and len(searched) == 6 - stats["stopped_early"]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("dcsod-digits").experiment_id], max_results=1000)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == stats["stopped_early"]
    stage_run = next(r for r in runs if r.data.tags.get("dcsod.stage") == "search" and "arch_hash" not in r.data.tags)
    for run in killed:
        assert run.data.tags["stopped_early"].startswith("stopped by the scheduler after epoch 1 of 3")
        assert run.data.tags["mlflow.parentRunId"] == stage_run.info.run_id
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    full = [r for r in runs if r.data.tags.get("dcsod.stage") == "search" and r.info.status == "FINISHED"
            and "arch_hash" in r.data.tags]
    assert all(sorted(m.step for m in client.get_metric_history(r.info.run_id, "auroc_msp"))[-3:] == [1, 2, 3]
               for r in full), "completed trainings carry a per-epoch curve"
    state = sorted((out / "tune" / "search").glob("searcher-state-*.json"))[-1]
    searcher = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", full_budget=3, budget_attr="epoch")
    searcher.restore(str(state))
    assert sorted(g.arch_hash for g, _ in searcher.pruned) == sorted(r.data.tags["arch_hash"] for r in killed)
    assert not {g.arch_hash for g, _ in searcher.pruned} & set(searcher.results)
