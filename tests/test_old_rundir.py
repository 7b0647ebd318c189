"""A run directory written by the code before the re-lay of 2026-12 (commit d61977c: one flat ``pipelines/`` and
``trainables/``) resumes under today's layout.

The fixture (``fixtures/old_rundir.tar.gz``, made by ``fixtures/make_old_rundir.py``) is the ``ci`` preset's run
directory (without the comparison stage) and SQLite MLflow store left by a driver killed with SIGKILL once the
search stage had recorded a row: its manifest lists warmup, distill and predictor as finished, and the search
stage's Tune state holds pickles that name the old modules (``pipelines.tune_stage``,
``pipelines.dcsod_tracking``, ``search_space.searcher``). Resuming restores that Tune experiment, so it passes only
if the old names still import (``search_space.moved_modules``) and the settings still match.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fixtures.make_old_rundir import PLACE, SETS

pytest.importorskip("ray")
pytest.importorskip("mlflow")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = HERE / "fixtures" / "old_rundir.tar.gz"


def history_rows(out: Path) -> list[dict]:
    import pandas as pd

    return pd.read_parquet(out / "history.parquet").to_dict("records")


def test_a_run_directory_of_the_flat_layout_killed_in_the_search_resumes_and_completes():
    from mlflow import MlflowClient

    shutil.rmtree(PLACE, ignore_errors=True)
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(PLACE.parent, filter="data")
    out, uri = PLACE / "out", f"sqlite:///{PLACE / 'mlflow.db'}"
    before = json.loads((out / "manifest.json").read_text())["stages"]
    assert {"warmup", "distill-1", "predictor"} <= set(before) and "search" not in before
    journal = [json.loads(line) for line in (out / "history.journal.jsonl").read_text().splitlines()
               if line.strip().endswith("}")]
    recorded = {(r["arch_hash"], r["stage"], r["iteration"], r["seed"]): r["mlflow_run_id"] for r in journal}
    assert any(stage == "search" for _, stage, _, _ in recorded)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTHONPATH"):
        env.pop(key, None)
    cmd = [sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *SETS, "--output", str(out), "--address", "local",
           "--no-dashboard", "--tracking-uri", uri]
    try:
        done = subprocess.run(cmd, cwd=PLACE, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = history_rows(out)
        keys = [(r["arch_hash"], r["stage"], r["iteration"], r["seed"]) for r in rows]
        assert len(keys) == len(set(keys)), "duplicate history rows"
        by_key = {k: r["mlflow_run_id"] for k, r in zip(keys, rows)}
        assert all(by_key.get(k) == run_id for k, run_id in recorded.items()), "a row recorded before was redone"
        assert sum(stage == "search" for _, stage, _, _ in keys) == 2  # the ci preset's search.trials
        assert {"search", "final"} <= set(json.loads((out / "manifest.json").read_text())["stages"])
        assert (out / "best.json").exists() and (out / "report.md").exists()
        assert len(MlflowClient(uri).search_model_versions("name='dcsod-digits'")) == 1
    finally:
        shutil.rmtree(PLACE, ignore_errors=True)
