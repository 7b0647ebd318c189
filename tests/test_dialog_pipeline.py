"""pipelines/dialog.py end to end through a real Ray Tune on synthetic dialogs (tiny budget, ≤ 60 s on 2 cores):
outputs, one MLflow run per row under a parent run, and a rerun that trains nothing and adds no row or run; bad
settings and data are one line with exit 2 before Ray starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_dialog_data import synthetic, write_dialogs

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from pipelines.sweeps.dialog import sweep as dialog

SCRIPT = Path(__file__).resolve().parent.parent / "pipelines" / "dialog.py"
TINY = ["--set", "epochs=2", "--set", "seeds=[0]", "--set", "emb_dim=8", "--set", "utt_hidden=8", "--set",
        "ctx_hidden=8", "--set", "dec_hidden=8", "--set", "mlp_hidden=8", "--set", "latent_dim=2", "--set",
        "samples=2", "--set", "gen_max_len=5", "--set", "vector_dim=4", "--set", "eval_components=3",
        "--set", "min_freq=1", "--set", "val_frac=0.2", "--set", "test_frac=0.2", "--set", "batch_size=16"]


def env() -> dict:
    out = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        out.pop(key, None)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dialogs(root / "swda" / "valid.jsonl", synthetic(10, length=8))
    return root


def command(out: Path, uri: str, data: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), *TINY, "--data-dir", str(data), "--output", str(out), "--tracking-uri", uri,
            "--address", "local", "--no-dashboard"]


def trial_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dialog-swda")
    return list(client.search_runs([exp.experiment_id], max_results=100))


def test_sweep_writes_every_output_and_a_rerun_adds_nothing(tmp_path, data_dir):
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(command(out, uri, data_dir), cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep: 100%" in proc.stderr and "4/4" in proc.stderr
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 4 and set(results["status"]) == {"complete"}
    assert set(zip(results["schedule"], results["posterior"])) == {
        (s, p) for s in ("monotonic", "cyclical") for p in ("gaussian", "semi-implicit")}
    assert results[["rec_ppl", "kl", "bleu4_p", "bleu4_r", "bow_avg", "distinct_1", "act_acc"]].notna().all().all()
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == 4 * 2 and curves["val_kl"].notna().all()
    for name in ("learning_curves.png", "beta_schedules.png"):
        assert (out / name).stat().st_size > 1000
    assert len(json.loads((out / "examples.json").read_text())) == 4
    report = (out / "report.md").read_text()
    for fact in ("| configuration | seeds | failed | rec-PPL | KL |", "| cyclical / semi-implicit | 1 | 0 |",
                 "**`cyclical` vs `monotonic`** (posterior `gaussian`)", "Against the thesis", "## Examples",
                 "![learning_curves](learning_curves.png)", uri):
        assert fact in report, fact
    runs = trial_runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and {r.info.run_id for r in trials} == set(results["mlflow_run_id"])
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    assert all("bleu4_r" in r.data.metrics and r.info.status == "FINISHED" for r in trials)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["sweep"]["rows"] == 4

    again = subprocess.run(command(out, uri, data_dir), cwd=tmp_path, env=env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout
    assert pd.read_parquet(out / "results.parquet").equals(results)
    assert len(trial_runs(uri)) == len(runs)


@pytest.mark.parametrize("sets,message", [
    (["epochs=0"], "epochs: expected an integer >= 1"),
    (["schedules=[nope]"], "beta schedule: unknown 'nope'"),
    (["posteriors=[gaussian, gaussian]"], "posteriors: duplicate entries"),
    (["bogus=1"], "unknown key 'bogus'"),
    (["val_frac=0.6", "test_frac=0.5"], "val_frac, test_frac"),
])
def test_bad_settings_are_one_line_and_exit_2(tmp_path, data_dir, capsys, sets, message):
    argv = [a for s in sets for a in ("--set", s)] + ["--data-dir", str(data_dir), "--output", str(tmp_path / "o")]
    assert dialog.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_missing_or_corrupt_data_is_one_line_and_exit_2(tmp_path, capsys):
    assert dialog.main(["--data-dir", str(tmp_path / "none"), "--output", str(tmp_path / "o")]) == 2
    assert "data directory" in capsys.readouterr().err
    bad = tmp_path / "bad" / "swda" / "valid.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text("{oops\n")
    assert dialog.main(["--data-dir", str(tmp_path / "bad"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "valid.jsonl:1: not a kgCVAE dialog line" in err and "\n" not in err
    assert dialog.main(["--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
