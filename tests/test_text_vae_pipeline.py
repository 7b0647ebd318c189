"""pipelines/text_vae.py end to end through a real Ray Tune (tiny budgets), and its command-line errors."""
from pathlib import Path

import pandas as pd
import pytest

from pipelines import text_vae
from pipelines.text_vae_tracking import RESULT_COLUMNS

TINY = ["--set", "concurrency=1", "--set", "epochs=2", "--set", "toy_copies=2", "--set", "iw_samples=3", "--set", "latent_samples=5",
        "--set", "eval_components=3", "--set", "hidden_dim=16", "--set", "emb_dim=8"]


def mlflow_runs(uri: str, experiment: str, search: str) -> pd.DataFrame:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.search = '{search}'")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store for the module (creating its tables costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def tracking(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    return store


def test_grid_sweep_writes_results_plots_and_one_mlflow_run_per_row(ray_local, tmp_path, tracking):
    out = tmp_path / "out"
    argv = [*TINY, "--set", "schedules=constant,cyclical", "--set", "posteriors=gaussian,semi-implicit",
            "--set", "aggressive=false", "--output", str(out)]
    assert text_vae.main(argv) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns[:len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert len(results) == 4 and set(results["status"]) == {"complete"}
    assert set(zip(results["schedule"], results["posterior"])) == {
        (s, p) for s in ("constant", "cyclical") for p in ("gaussian", "semi-implicit")}
    assert results[["elbo", "rec", "ppl", "iw_ppl", "mi"]].notna().all().all()
    assert (results["elbo"] < 0).all() and (results["ppl"] > 1).all() and results["knn_acc"].between(0, 1).all()
    for png in ("beta_schedules.png", "learning_curves.png", "latent_toy.png"):
        assert (out / png).stat().st_size > 1000
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == 4 * 2 and set(curves["epoch"]) == {1, 2}
    runs = mlflow_runs(tracking, "text-vae-toy", "grid")
    assert len(runs) == len(results) and {r.info.run_id for r in runs} == set(results["mlflow_run_id"])
    assert {r.info.status for r in runs} == {"FINISHED"} and all("elbo" in r.data.metrics for r in runs)
    assert all(len(r.data.params) > 10 for r in runs)


def test_optuna_search_with_asha(ray_local, tmp_path, tracking):
    out = tmp_path / "opt"
    argv = [*TINY, "--search", "optuna", "--set", "optuna_trials=2", "--set", "asha_grace=1",
            "--output", str(out)]
    assert text_vae.main(argv) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 2 and set(results["schedule"]) == {"cyclical"}
    assert set(results["posterior"]) == {"semi-implicit"} and results["val_elbo"].notna().all()
    assert results["cycles"].between(1, 8).all() and results["ratio"].between(0.1, 0.9).all()
    assert results["lr"].nunique() == 2, "each trial got its own Optuna suggestion"
    assert len(mlflow_runs(tracking, "text-vae-toy", "optuna")) == 2


def test_workers_train_each_configuration_with_ray_train_ddp(ray_local, tmp_path, tracking):
    """workers=2: the configuration trains in a TorchTrainer of two DDP workers inside its Tune trial."""
    out = tmp_path / "ddp"
    argv = [*TINY, "--set", "schedules=cyclical", "--set", "posteriors=semi-implicit", "--set", "aggressive=true",
            "--set", "workers=2", "--set", "toy_copies=4", "--output", str(out)]
    assert text_vae.main(argv) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 1 and results["status"].tolist() == ["complete"] and results["workers"].tolist() == [2]
    assert results[["elbo", "rec", "kl", "iw_ppl", "knn_acc"]].notna().all().all()
    assert len(pd.read_parquet(out / "curves.parquet")) == 2  # both epochs reached Tune through TuneReportCallback
    assert any((out / "train").iterdir()), "the Ray Train run keeps its files under train/"
    (run,) = [r for r in mlflow_runs(tracking, "text-vae-toy", "grid") if r.info.run_id == results["mlflow_run_id"][0]]
    assert run.data.params["workers"] == "2"


def test_workers_beyond_a_local_cluster_exit_2_before_writing(ray_local, tmp_path, tracking, capsys):
    out = tmp_path / "big"
    assert text_vae.main(["--set", "workers=64", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a configuration needs 64 CPU (workers=64 x 1)") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--set", "bogus=1"], "unknown key 'bogus'; valid: "),
    (["--set", "epochs"], "expected KEY=VALUE; valid keys: "),
    (["--set", "dataset=yelp"], "the dataset is chosen with --preset"),
    (["--set", "schedules=constant,exponential"], "beta schedule: unknown 'exponential'; valid: constant"),
    (["--set", "posteriors=flow"], "posterior: unknown 'flow'"),
    (["--set", "epochs=two"], "--set epochs: expected int, got 'two'"),
    (["--set", "ratio=1.5"], "ratio must lie in [0, 1]"),
    (["--set", "workers=0"], "workers must be >= 1, got 0"),
    (["--preset", "imdb"], "unknown preset 'imdb'; valid: toy, ptb, yelp"),
    (["--preset", "ptb", "--data-dir", "/nonexistent/data"], "data directory /nonexistent/data does not exist"),
])
def test_bad_command_line_exits_2_with_one_line_and_writes_nothing(tmp_path, tracking, capsys, argv, message):
    out = tmp_path / "out"
    assert text_vae.main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in Path(tmp_path).iterdir()) == []


def test_presets_file_lists_the_three_presets_with_the_same_keys():
    presets = text_vae.load_presets()
    assert list(presets) == ["toy", "ptb", "yelp"]
    common = set(presets["toy"]) - {"toy_copies"}
    for name in ("ptb", "yelp"):
        assert common <= set(presets[name])
    assert text_vae.PRESETS_FILE.name == "text_vae.yaml" and text_vae.PRESETS_FILE.parent.name == "presets"


def test_callback_records_stopped_and_failed_trials_as_one_run_and_row_each(store):
    """Without Tune: fake trials through the hooks (a scheduler-stopped trial, a diverged one, a crashed one)."""
    from types import SimpleNamespace

    from pipelines.text_vae_tracking import TextVAECallback

    config = {"dataset": "toy", "data": {}, "model": {"posterior": "gaussian", "latent_dim": 2},
              "train": {"schedule": "cyclical", "aggressive": False, "cycles": 4, "ratio": 0.5, "k_max": 0,
                        "lr": 1e-3, "epochs": 5, "seed": 0}}
    cb = TextVAECallback("text-vae-callback-test", tracking_uri=store, tags={"search": "unit"})
    cb.setup()
    epoch = {"epoch": 2, "val_elbo": -3.0, "val_rec": 2.0, "val_kl": 1.0, "beta": 0.5}
    stopped = SimpleNamespace(trial_id="t_stopped", config=config, last_result=epoch)
    cb.on_trial_result(0, [], stopped, {**epoch, "epoch": 1, "val_elbo": -4.0})
    cb.on_trial_result(0, [], stopped, epoch)
    cb.on_trial_complete(0, [], stopped)
    cb.on_trial_complete(0, [], stopped)  # reported twice: still one row and run
    diverged = SimpleNamespace(trial_id="t_nan", config=config, last_result={"error": "diverged at epoch 1", "final": True})
    cb.on_trial_complete(0, [], diverged)
    crashed = SimpleNamespace(trial_id="t_crash", config=config, last_result=None, pickled_error_file=None,
                              error_file=None)
    cb.on_trial_error(0, [], crashed)
    rows = {r["trial_id"]: r for r in cb.rows}
    assert [rows[t]["status"] for t in ("t_stopped", "t_nan", "t_crash")] == ["stopped", "failed", "failed"]
    assert rows["t_stopped"]["elbo"] is None and rows["t_stopped"]["val_elbo"] == -3.0
    assert rows["t_nan"]["error"] == "diverged at epoch 1" and len(cb.rows) == 3
    runs = mlflow_runs(store, "text-vae-callback-test", "unit")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]
    history = [m.value for m in metric_history(store, rows["t_stopped"]["mlflow_run_id"], "val_elbo")]
    assert history == [-4.0, -3.0]


def metric_history(uri, run_id, key):
    from mlflow import MlflowClient

    return sorted(MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: m.step)
