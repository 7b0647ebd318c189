"""pipelines/dialog.py end to end through a real Ray Tune on synthetic dialogs (tiny budget, ≤ 60 s on 2 cores):
outputs with every test metric, one MLflow run per row under a parent run, and a rerun that trains nothing and adds
no row or run; every grid axis value reaching the rows, run names, labels and report (Ray-free); bad settings and
data are one line with exit 2 before Ray starts."""
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

from pipelines.sweeps.dialog import axes
from pipelines.sweeps.dialog import sweep as dialog
from pipelines.sweeps.dialog.report import BLEU_METRICS, METRICS, write_report
from pipelines.sweeps.dialog.tracking import DialogResultsTable, result_row, run_name
from trainables.text.dialog_tune import TEST_METRICS

SCRIPT = Path(__file__).resolve().parent.parent / "pipelines" / "dialog.py"
TINY = ["--set", "epochs=2", "--set", "seeds=[0]", "--set", "emb_dim=8", "--set", "utt_hidden=8", "--set",
        "ctx_hidden=8", "--set", "dec_hidden=8", "--set", "mlp_hidden=8", "--set", "latent_dim=2", "--set",
        "samples=2", "--set", "gen_max_len=5", "--set", "vector_dim=4", "--set", "eval_components=3",
        "--set", "min_freq=1", "--set", "val_frac=0.2", "--set", "test_frac=0.2", "--set", "batch_size=16",
        "--set", "posteriors=[semi-implicit]"]  # x 2 schedules x bow [false, true] = 4 trainings


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
    assert set(zip(results["schedule"], results["posterior"], results["bow"])) == {
        (s, "semi-implicit", b) for s in ("monotonic", "cyclical") for b in (False, True)}
    assert results[list(TEST_METRICS)].notna().all().all()
    assert {"bleu4_f1", "bow_extrema_r", "intra_dist2", "inter_dist1", "response_len"} <= set(TEST_METRICS)
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == 4 * 2 and curves["val_kl"].notna().all()
    assert set(curves["configuration"]) == {f"{s} / semi-implicit / {b}" for s in ("monotonic", "cyclical")
                                            for b in ("bow", "no-bow")}
    assert curves.loc[curves["configuration"].str.endswith("no-bow"), "train_bow"].isna().all()
    for name in ("learning_curves.png", "beta_schedules.png"):
        assert (out / name).stat().st_size > 1000
    assert len(json.loads((out / "examples.json").read_text())) == 4
    report = (out / "report.md").read_text()
    for fact in ("| configuration | seeds | failed | " + " | ".join(METRICS.values()) + " |",
                 "| configuration | seeds | failed | " + " | ".join(BLEU_METRICS.values()) + " |",
                 "| cyclical / semi-implicit / bow | 1 | 0 |", "| monotonic / semi-implicit / no-bow | 1 | 0 |",
                 "**`cyclical` vs `monotonic`** (with `semi-implicit` / `no-bow`)",
                 "**`bow` vs `no-bow`** (with `monotonic` / `semi-implicit`)",
                 "Against the thesis (Table 2.3, CVAE, monotonic → cyclical, with `semi-implicit` / `no-bow`)",
                 "## Examples", "![learning_curves](learning_curves.png)", uri):
        assert fact in report, fact
    runs = trial_runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and {r.info.run_id for r in trials} == set(results["mlflow_run_id"])
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    assert all(set(TEST_METRICS) <= set(r.data.metrics) and r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["model.bow"] for r in trials} == {"False", "True"}
    assert {r.info.run_name for r in trials} == {f"{s}-semi-implicit-{b}-s0" for s in ("monotonic", "cyclical")
                                                 for b in ("bow", "no-bow")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["sweep"]["rows"] == 4

    again = subprocess.run(command(out, uri, data_dir), cwd=tmp_path, env=env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout
    assert pd.read_parquet(out / "results.parquet").equals(results)
    assert len(trial_runs(uri)) == len(runs)


def test_every_axis_value_reaches_rows_run_names_labels_and_the_report(tmp_path):
    """Ray-free: rows of a grid with a posterior no other test uses, through the results table and the report."""
    settings = {"preset": "t", "schedules": ["monotonic", "cyclical"], "posteriors": ["gaussian", "newpost"],
                "bow": [False, True], "act_knowledge": True, "aggressive": False, "epochs": 1, "batch_size": 2,
                "lr": 0.001, "latent_dim": 2, "samples": 2, "concurrency": 1, "cpus_per_trial": 1.0,
                "gpus_per_trial": 0.0, "j_samples": 1, "k_max": 0, "si_noise_dim": 8}
    table, names = DialogResultsTable(tmp_path / "results.parquet"), set()
    for i, (schedule, posterior, bow, seed) in enumerate(
            (s, p, b, seed) for s in settings["schedules"] for p in settings["posteriors"] for b in settings["bow"]
            for seed in (0, 1)):
        config = {"train": {"schedule": schedule, "seed": seed, "cycles": 1, "ratio": 0.5, "monotonic_ratio": 0.25,
                            "k_max": 0, "lr": 0.001, "epochs": 1, "aggressive": False},
                  "model": {"posterior": posterior, "bow": bow, "act_knowledge": True}}
        metrics = {m: 0.1 * (i % 5) + 0.01 * seed for m in TEST_METRICS}
        table.append({**result_row(config, {**metrics, "final": True, "epoch": 1}, f"t{i}"), "mlflow_run_id": "r"})
        names.add(run_name(config))
    results = table.read()
    assert len(results) == len(names) == 16 and axes.configurations(settings) == 8
    assert set(results["bow"]) == {False, True} and results[list(TEST_METRICS)].notna().all().all()
    facts = {"data": "d", "seeds": [0, 1], "seconds": 1.0, "rows": 16, "failed": 0, "batches_per_epoch": 1,
             "mlflow": "m"}
    report = write_report(tmp_path / "report.md", settings, results, facts, [], {}).read_text()
    labels = [f"{s} / {p} / {b}" for s in settings["schedules"] for p in settings["posteriors"]
              for b in ("no-bow", "bow")]
    assert all(report.count(f"| {label} | 2 | 0 |") == 2 for label in labels), "a row in both tables"
    assert "**`newpost` vs `gaussian`** (with `cyclical` / `bow`)" in report
    assert "**`bow` vs `no-bow`** (with `monotonic` / `newpost`)" in report
    assert report.count("**Against the thesis") == 2, "one per posterior, on the no-bow rows only"
    assert "schedules [monotonic, cyclical] × posteriors [gaussian, newpost] × bow [no-bow, bow]" in report


def test_presets_carry_the_thesis_settings_and_the_sa_options(tmp_path):
    from pipelines.sweeps.dialog.experiment import base_trial_config
    from pipelines.sweeps.dialog.settings import load_config

    full = load_config("swda")
    assert (full["j_samples"], full["k_max"], full["si_noise_dim"], full["eval_components"]) == (5, 30, 100, 31)
    small = load_config("swda-small")
    assert small["bow"] == [False, True] and small["j_samples"] == 1
    cfg = load_config("swda-small", ["posteriors=[gaussian, sa]", "sa_steps=3", "bow=true"])
    assert cfg["bow"] == [True] and axes.configurations(cfg) == 4
    options = base_trial_config(cfg, tmp_path)["model"]["posterior_options"]
    assert options["sa"] == {"steps": 3, "lr": 0.1} and options["semi-implicit"] == {"noise_dim": 8}


@pytest.mark.parametrize("sets,message", [
    (["epochs=0"], "epochs: expected an integer >= 1"),
    (["schedules=[nope]"], "beta schedule: unknown 'nope'"),
    (["posteriors=[gaussian, gaussian]"], "posteriors: duplicate entries"),
    (["bogus=1"], "unknown key 'bogus'"),
    (["val_frac=0.6", "test_frac=0.5"], "val_frac, test_frac"),
    (["bow=[maybe]"], "bow: expected a non-empty list of true/false"),
    (["bow=[true, true]"], "bow: duplicate entries"),
    (["bow_weight=0"], "bow_weight: expected a number > 0"),
    (["posteriors=[sa]", "sa_lr=0"], "sa_lr: expected a number > 0"),
    (["sa_steps=-1"], "sa_steps: expected an integer >= 0"),
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
