"""Driver-side tracking: history.parquet, the MLflow callback on a real server and a local Ray."""
import math
import os
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from servers import MlflowServer, free_port, local_ray

from pipelines.common.mlflow_runs import KEY_TAG, TrackingUnavailable, check_tracking_uri
from pipelines.nas.tracking import HISTORY_COLUMNS, HistoryStore, MLflowHistoryCallback

ROW = {"arch_hash": "abc123", "genotype": '{"k":6}', "stage": "warmup", "iteration": 0, "seed": 1,
       "auroc_msp": 0.8, "auroc_energy": 0.7, "auroc_maha": 0.6, "fpr95_msp": 0.5, "id_acc": 0.9,
       "train_seconds": 1.5, "mlflow_run_id": "r1"}


# --- HistoryStore ---------------------------------------------------------------------------------
def test_empty_read_has_columns_and_dtypes(tmp_path):
    df = HistoryStore(tmp_path / "history.parquet").read()
    assert list(df.columns) == list(HISTORY_COLUMNS) and len(df) == 0
    assert str(df["iteration"].dtype) == "int64" and str(df["auroc_msp"].dtype) == "float64"
    assert pd.api.types.is_string_dtype(df["arch_hash"])


def test_append_read_dtypes_and_nan_for_missing_metrics(tmp_path):
    store = HistoryStore(tmp_path / "out" / "history.parquet")
    assert store.append(ROW)
    partial = {k: v for k, v in ROW.items() if k not in ("auroc_maha", "mlflow_run_id")}
    assert store.append({**partial, "seed": 2, "auroc_energy": None})
    df = store.read()
    assert len(df) == 2 and list(df.columns) == list(HISTORY_COLUMNS)
    assert df.dtypes.equals(HistoryStore(tmp_path / "none.parquet").read().dtypes)
    second = df.iloc[1]
    assert math.isnan(second["auroc_maha"]) and math.isnan(second["auroc_energy"]) and second["id_acc"] == 0.9
    assert second["mlflow_run_id"] == "" and df.iloc[0]["mlflow_run_id"] == "r1"
    assert store.keys() == {("abc123", "warmup", 0, 1), ("abc123", "warmup", 0, 2)}
    store.compact()
    assert os.listdir(store.path.parent) == ["history.parquet"]  # journal merged, no temp files left behind
    pd.testing.assert_frame_equal(pd.read_parquet(store.path), df)  # what users read is what the store read
    pd.testing.assert_frame_equal(HistoryStore(store.path).read(), df)


def test_extra_metrics_of_any_registered_score_become_columns(tmp_path):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    store.append({**ROW, "seed": 2, "auroc_knn": 0.75, "aupr_in_msp": 0.5, "fpr95_knn": 0.25})
    store.compact()
    store.append({**ROW, "seed": 3, "aupr_out_odin": 0.125})  # a column the table does not have yet
    df = store.read()
    assert list(df.columns) == [*HISTORY_COLUMNS, "auroc_knn", "aupr_in_msp", "fpr95_knn", "aupr_out_odin"]
    assert df["auroc_knn"].tolist()[1] == 0.75 and math.isnan(df["auroc_knn"][0])
    assert df["aupr_out_odin"].tolist()[2] == 0.125 and str(df["aupr_out_odin"].dtype) == "float64"
    with pytest.raises(ValueError, match="auroc_nope"):
        store.append({**ROW, "seed": 4, "auroc_nope": 0.5})  # not a registered score


def test_duplicate_key_is_rejected_without_writing(tmp_path):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    before = store.journal.read_bytes()
    assert store.append({**ROW, "auroc_msp": 0.1, "mlflow_run_id": "r2"}) is False
    assert store.journal.read_bytes() == before
    store.compact()
    assert HistoryStore(store.path).append({**ROW, "mlflow_run_id": "r3"}) is False  # a later driver, compacted
    assert store.append({**ROW, "stage": "distill"})  # another key
    assert len(store.read()) == 2 and store.run_id(("abc123", "warmup", 0, 1)) == "r1"


def test_append_is_constant_time_and_never_parses_the_table(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    store.compact()
    store.keys()  # the key index is built once, from the table
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("an append parsed the table"))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: pytest.fail("an append rewrote the table"))
    for seed in range(2, 50):
        assert store.append({**ROW, "seed": seed})
    assert len(store.journal.read_text().splitlines()) == 48


def test_torn_journal_line_from_a_crash_is_dropped(tmp_path):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    with open(store.journal, "a") as f:
        f.write('{"arch_hash": "torn", "gen')  # a kill -9 in the middle of a write
    later = HistoryStore(store.path)
    assert later.keys() == {("abc123", "warmup", 0, 1)}
    assert later.append({**ROW, "seed": 2})
    assert HistoryStore(store.path).keys() == {("abc123", "warmup", 0, 1), ("abc123", "warmup", 0, 2)}


def test_crash_between_compaction_and_journal_removal_duplicates_nothing(tmp_path):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    store.append({**ROW, "seed": 2})
    journal = store.journal.read_bytes()
    store.compact()
    store.journal.write_bytes(journal)  # the journal survived: as if the process died before unlinking it
    later = HistoryStore(store.path)
    assert len(later.read()) == 2 and not later.append(ROW)
    later.compact()
    assert len(pd.read_parquet(store.path)) == 2 and not store.journal.exists()


def test_reads_reuse_the_table_until_the_file_changes(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    store.compact()
    other = HistoryStore(store.path)  # e.g. a later driver after a restart
    assert len(other.read()) == 1
    real = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("re-parsed an unchanged file"))
    assert store.append({**ROW, "seed": 2}) and len(store.read()) == 2
    monkeypatch.setattr(pd, "read_parquet", real)
    store.compact()
    assert other.read()["seed"].tolist() == [1, 2]  # the file changed under `other`: it reads it again
    pd.testing.assert_frame_equal(store.read(), other.read())
    restored = pickle.loads(pickle.dumps(store))
    assert restored._table is None and restored._index_cache is None  # no table shipped with the callback


@pytest.mark.parametrize("change, field", [
    ({"arch_hash": None}, "arch_hash"),
    ({"stage": "bogus"}, "stage"),
    ({"auroc_msp": 95.8}, "auroc_msp"),
    ({"seed": 1.5}, "seed"),
    ({"genotype": "{not json"}, "genotype"),
    ({"extra": 1}, "extra"),
])
def test_invalid_rows_raise_one_line(tmp_path, change, field):
    store = HistoryStore(tmp_path / "history.parquet")
    with pytest.raises(ValueError, match=field) as e:
        store.append({**ROW, **change})
    assert "\n" not in str(e.value)
    assert not store.path.exists() and not store.journal.exists()


def test_failed_compaction_keeps_the_table_and_the_journal(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path / "history.parquet")
    store.append(ROW)
    store.compact()
    store.append({**ROW, "seed": 7})
    before = store.path.read_bytes()

    def broken(self, path, **kw):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        store.compact()
    assert store.path.read_bytes() == before and sorted(os.listdir(tmp_path)) == sorted(
        ["history.parquet", store.journal.name, ".run_uid"] if (tmp_path / ".run_uid").exists()
        else ["history.parquet", store.journal.name])
    monkeypatch.undo()
    assert HistoryStore(store.path).keys() == {("abc123", "warmup", 0, 1), ("abc123", "warmup", 0, 7)}


# --- tracking URI ---------------------------------------------------------------------------------
def test_tracking_uri_resolution(tmp_path, monkeypatch):
    explicit = f"sqlite:///{tmp_path}/a.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/b.db")
    assert check_tracking_uri(explicit) == explicit
    assert check_tracking_uri() == f"sqlite:///{tmp_path}/b.db"
    with pytest.raises(TrackingUnavailable, match="does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/dir/c.db")


def test_unreachable_server_fails_before_any_trial(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for call in (check_tracking_uri, lambda: MLflowHistoryCallback(tmp_path, "x", stage="warmup")):
        with pytest.raises(TrackingUnavailable) as e:
            call()
        # the same line serves a refusal before Ray and a recorder built for a later stage mid-run
        assert uri in str(e.value) and "\n" not in str(e.value) and "rerun the same command" in str(e.value)
    assert not (tmp_path / "history.parquet").exists()


# --- the callback on a real MLflow server and a local Ray -------------------------------------------
@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """(MLflow server, Ray): both start concurrently; the server is stopped by its own pid."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        with local_ray(num_cpus=2):
            yield server.wait()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def genotypes():
    from search_space import SearchSpace

    return {g.to_json(): g.arch_hash for g in SearchSpace().sample_many(16, seed=0)}


def make_trainable(hashes, fail=()):
    """A function trainable reporting fake metrics for ``config["genotype"]`` (pickled by value)."""
    def trainable(config):
        from ray import tune

        genotype = config["genotype"]
        if genotype in fail:
            raise ValueError("diverged at epoch 3\n(a second line)")
        rng = random.Random(hashes[genotype])
        tune.report({"arch_hash": hashes[genotype], "genotype": genotype, "seed": config["seed"],
                     "auroc_msp": rng.random(), "auroc_energy": rng.random(), "fpr95_msp": rng.random(),
                     "id_acc": rng.random(), "train_seconds": 0.01,  # no auroc_maha: stored as NaN
                     "started_at": 1_700_000_000.0, "finished_at": 1_700_000_042.5})
    return trainable


def run_tuner(server, hashes, out, experiment, fail=()):
    from ray import tune

    callback = MLflowHistoryCallback(out, experiment, stage="warmup", tracking_uri=server.uri)
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(hashes, fail), {"cpu": 0.125}),
        param_space={"genotype": tune.grid_search(list(hashes)), "seed": 0},
        # Reused actors, as the pipeline does: 2 worker processes start instead of 16.
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=2,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(name=experiment, storage_path=str(out / "ray"), callbacks=[callback], verbose=0),
    )
    return callback, tuner.fit()


def as_trial(result):
    """What the callback reads from a Tune trial, rebuilt from a finished trial's result."""
    return SimpleNamespace(trial_id=result.metrics["trial_id"], last_result=result.metrics, config=result.config)


def test_one_run_and_one_row_per_trial_idempotent(services, genotypes, tmp_path):
    callback, grid = run_tuner(services, genotypes, tmp_path, "dcsod-test")
    assert grid.num_errors == 0 and len(grid) == 16

    client = callback.client
    runs = client.search_runs([callback.experiment_id])
    history = callback.history.read()
    assert len(runs) == 16 and all(r.info.status == "FINISHED" for r in runs)
    assert len(history) == 16 and not history.duplicated(["arch_hash", "stage", "iteration", "seed"]).any()
    assert set(history["arch_hash"]) == set(genotypes.values())
    assert set(history["mlflow_run_id"]) == {r.info.run_id for r in runs}
    assert history["auroc_maha"].isna().all() and history["auroc_msp"].between(0, 1).all()
    run = next(r for r in runs if r.info.run_id == history["mlflow_run_id"][0])
    assert run.info.run_name == f"warmup/{history['arch_hash'][0]}"
    assert run.data.tags[KEY_TAG] == f"{callback.run_uid}/{history['arch_hash'][0]}/warmup/0/0"
    assert run.data.tags["genotype"] == history["genotype"][0]
    assert run.data.params == {"arch_hash": history["arch_hash"][0], "stage": "warmup", "iteration": "0", "seed": "0"}
    assert set(run.data.metrics) == {"auroc_msp", "auroc_energy", "fpr95_msp", "id_acc", "train_seconds"}
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_042_500)  # the training's
    some = "%" + history["genotype"][0][5:40] + "%"  # the genotype is found by a search on its tag
    found = client.search_runs([callback.experiment_id], filter_string=f"tags.genotype LIKE '{some}'")
    assert history["mlflow_run_id"][0] in {r.info.run_id for r in found}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["genotype.json"]

    # A restored driver (callback unpickled as by Tuner.restore) re-reports every trial: nothing new.
    restored = pickle.loads(pickle.dumps(callback))
    for result in grid:
        restored.on_trial_complete(0, [], as_trial(result))
    # A crash after the MLflow run was created but before the row was written: the row comes back
    # with the existing run id and no second run is made.
    pd.read_parquet(callback.history.path).iloc[1:].to_parquet(callback.history.path, index=False)
    lost = next(r for r in grid if r.metrics["arch_hash"] == history["arch_hash"][0])
    restored.on_trial_complete(0, [], as_trial(lost))
    # The same Tuner rerun into the same output directory (new trial ids, same keys).
    run_tuner(services, dict(list(genotypes.items())[:2]), tmp_path, "dcsod-test")

    after = callback.history.read()
    assert len(client.search_runs([callback.experiment_id])) == 16
    assert len(after) == 16 and set(after["mlflow_run_id"]) == set(history["mlflow_run_id"])
    assert "database is locked" not in services.log()


def test_run_directories_sharing_a_store_never_share_runs(services, tmp_path):
    """The same candidate key recorded from two run directories into one experiment: two MLflow runs, each
    history pointing at its own; recording again in either directory finds its own run."""
    result = {k: v for k, v in ROW.items() if k not in ("stage", "iteration", "mlflow_run_id")}
    first = MLflowHistoryCallback(tmp_path / "a", "shared-store", stage="warmup", tracking_uri=services.uri)
    second = MLflowHistoryCallback(tmp_path / "b", "shared-store", stage="warmup", tracking_uri=services.uri)
    assert first.run_uid != second.run_uid
    run_a, run_b = first.record(result), second.record(result)
    assert run_a != run_b
    second.history.journal.unlink()  # B crashed after its MLflow run was created, before its row was written
    second = MLflowHistoryCallback(tmp_path / "b", "shared-store", stage="warmup", tracking_uri=services.uri)
    assert second.record(result) == run_b and first.record(result) == run_a
    runs = first.client.search_runs([first.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([run_a, run_b])
    assert {r.data.tags["dcsod.run_uid"] for r in runs} == {first.run_uid, second.run_uid}


def test_failed_trial_logs_failed_run_without_history_row(services, genotypes, tmp_path):
    two = dict(list(genotypes.items())[:2])
    bad = next(iter(two))
    callback, grid = run_tuner(services, two, tmp_path, "dcsod-test-errors", fail={bad})
    assert grid.num_errors == 1

    runs = callback.client.search_runs([callback.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert failed.data.tags["error"] == "ValueError: diverged at epoch 3"
    assert failed.data.tags[KEY_TAG] == f"{callback.run_uid}/{two[bad]}/warmup/0/0"
    history = callback.history.read()
    assert list(history["arch_hash"]) == [two[next(k for k in two if k != bad)]]

    errored = next(r for r in grid if r.error is not None)
    trial = SimpleNamespace(trial_id="t", last_result={}, config=errored.config)
    callback.on_trial_error(0, [], trial)  # reported twice: still one FAILED run
    assert len(callback.client.search_runs([callback.experiment_id])) == 2


def test_reported_error_is_recorded_as_failed(services, genotypes, tmp_path):
    """trainables.image.tune_trainable reports a diverged candidate (``error`` key) instead of raising."""
    genotype, arch_hash = next(iter(genotypes.items()))
    callback = MLflowHistoryCallback(tmp_path, "dcsod-test-diverged", stage="search", tracking_uri=services.uri)
    callback.setup()
    result = {"arch_hash": arch_hash, "genotype": genotype, "seed": 0, "auroc_msp": float("nan"),
              "error": "diverged: training loss became nan in epoch 2 of 20"}
    trial = SimpleNamespace(trial_id="t1", last_result=result, config={"genotype": genotype})
    callback.on_trial_complete(0, [], trial)
    callback.on_trial_complete(0, [], trial)  # re-reported after a restore: still one run
    runs = callback.client.search_runs([callback.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["error"].startswith("diverged: training loss became nan")
    assert callback.history.read().empty


def test_record_with_before_finish_completes_after_a_crash(services, tmp_path):
    """The final stage's path: a crash inside ``before_finish`` (e.g. while logging the model) leaves an open
    run; recording again completes that run (metrics, FINISHED) instead of creating a second one."""
    cb = MLflowHistoryCallback(tmp_path, "record-crash", stage="final", tracking_uri=services.uri)
    result = {**{k: v for k, v in ROW.items() if k not in ("stage", "iteration", "mlflow_run_id")}}
    calls = []

    def crash(run_id):
        calls.append(run_id)
        raise RuntimeError("driver killed while logging the model")

    with pytest.raises(RuntimeError):
        cb.record(result, before_finish=crash)
    assert HistoryStore(tmp_path / "history.parquet").read().empty
    run_id = cb.record(result, before_finish=calls.append)
    assert calls == [run_id, run_id]
    runs = cb.find_runs(("abc123", "final", 0, 1))
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["auroc_msp"] == pytest.approx(0.8)
    assert cb.record(result, before_finish=crash) == run_id  # recorded: nothing runs again
    assert len(HistoryStore(tmp_path / "history.parquet").read()) == 1


def test_error_message_reads_the_text_file_and_never_the_pickle(tmp_path):
    """A trial's error comes from Tune's text error file (the innermost ``Type: message`` line); the pickled
    error file next to it is never loaded, so a crafted one cannot run code."""
    import pickle

    from pipelines.common.mlflow_runs import MLflowRecorder

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "error.pkl").write_bytes(pickle.dumps(Exploit()))
    (tmp_path / "error.txt").write_text(
        "Failure # 1 (occurred at 2026-11-30_05-13-36)\nray::ImplicitFunc.train() (pid=1)\n"
        '  File "x.py", line 3, in f\n    raise ValueError("diverged at epoch 3\\nnote: (a second line)")\n'
        "ValueError: diverged at epoch 3\nnote: (a second line)\n")
    trial = SimpleNamespace(pickled_error_file=str(tmp_path / "error.pkl"), error_file=str(tmp_path / "error.txt"))
    assert MLflowRecorder.error_message(trial) == "ValueError: diverged at epoch 3"
    assert not marker.exists()
    assert MLflowRecorder.error_message(SimpleNamespace(error_file=None)) == "unknown error"


def test_run_names_carry_the_stage_label_and_the_seed_where_asked(tmp_path):
    from pipelines.common.rundir import RunDir

    RunDir.open(tmp_path, {"x": 1}, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    uri = f"sqlite:///{tmp_path}/m.db"
    key = ("abc", "distill", 2, 3)
    assert MLflowHistoryCallback(tmp_path, "e", "distill", 2, uri).run_name(key) == "distill-2/abc"
    assert MLflowHistoryCallback(tmp_path, "e", "warmup", 0, uri).run_name(("abc", "warmup", 0, 3)) == "warmup/abc"
    named = MLflowHistoryCallback(tmp_path, "e", "compare", 0, uri, label="compare", seed_in_name=True)
    assert named.run_name(("abc", "compare", 0, 3)) == "compare/abc/seed3"


def test_run_tree_parent_children_settings_and_rerun(tmp_path):
    """A parent run with flattened settings, code and package versions; nested runs found again on a rerun
    (never duplicated); a run ended FAILED opens again when the rerun reaches it."""
    from mlflow import MlflowClient

    from pipelines.common.mlflow_runs import MLflowRecorder, RunTree, code_version
    from pipelines.common.rundir import RunDir

    uri = f"sqlite:///{tmp_path}/m.db"
    RunDir.open(tmp_path / "out", {"x": 1}, tracking_uri=uri)
    settings = {"train": {"lr": 0.05, "epochs": 2}, "scores": ["msp", "energy"], "preset": "ci"}
    tree = RunTree(MLflowRecorder(tmp_path / "out", "tree", uri), "dcsod (ci)", settings, tags={"a": "b"})
    stage = tree.child("warmup")
    trial = tree.recorder.create_run(("t",), "warmup/abc", RunTree.nest_under(stage))
    tree.log_metrics(stage, {"trials": 6, "nan": float("nan"), "text": "x"})
    tree.end(stage, "FAILED")
    again = RunTree(MLflowRecorder(tmp_path / "out", "tree", uri), "dcsod (ci)", settings)
    assert again.root == tree.root and again.child("warmup") == stage
    again.end(stage)
    again.end()
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in client.search_runs([tree.recorder.experiment_id])}
    assert set(runs) == {tree.root, stage, trial}
    root = runs[tree.root]
    assert root.info.run_name == "dcsod (ci)" and root.info.status == "FINISHED"
    assert root.data.params["train.lr"] == "0.05" and root.data.params["scores"] == "['msp', 'energy']"
    assert root.data.params["version.torch"].startswith("2.") and root.data.params["version.python"]
    assert root.data.tags["dcsod.code_version"] == code_version() and root.data.tags["a"] == "b"
    assert runs[stage].data.tags["mlflow.parentRunId"] == tree.root and runs[stage].info.status == "FINISHED"
    assert runs[stage].data.metrics == {"trials": 6.0}
    assert runs[trial].data.tags["mlflow.parentRunId"] == stage
    attached = RunTree.attach(tree.recorder, stage)
    assert runs.keys() >= {attached.root} and client.get_run(attached.child("x")).data.tags[
        "mlflow.parentRunId"] == stage


def test_epoch_curve_becomes_per_epoch_metrics_and_stopped_trials_are_killed_runs(tmp_path):
    """The final result's ``epoch_curve`` is logged as one point per epoch (step = epoch, timestamps from the
    training's start); a trial whose last result is an epoch before its last (a scheduler stopped it) is one
    KILLED run tagged ``stopped_early`` and no history row, however often it is reported."""
    import json

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cb = MLflowHistoryCallback(tmp_path / "out", "curves", stage="search", tracking_uri=uri)
    curve = [{"epoch": e, "epochs": 3, "train_loss": 1.0 / e, "lr": 0.1, "epoch_seconds": 2.0,
              "auroc_msp": 0.5 + e / 10} for e in (1, 2, 3)]
    result = {**{k: v for k, v in ROW.items() if k not in ("stage", "iteration", "mlflow_run_id")},
              "started_at": 1_700_000_000.0, "finished_at": 1_700_000_006.5, "epoch": 3, "epochs": 3,
              "epoch_curve": json.dumps(curve)}
    run_id = cb.record(result)
    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (1, 1.0, 1_700_000_002_000), (2, 0.5, 1_700_000_004_000), (3, 1 / 3, 1_700_000_006_000)]
    assert sorted(m.step for m in client.get_metric_history(run_id, "auroc_msp")) == [0, 1, 2, 3]

    stopped = {**result, "arch_hash": "def456", "epoch": 1, "epoch_curve": json.dumps(curve[:1])}
    trial = SimpleNamespace(trial_id="t9", last_result=stopped, config={})
    cb.on_trial_complete(0, [], trial)
    cb.on_trial_complete(0, [], trial)
    runs = cb.find_runs(("def456", "search", 0, 1))
    assert [r.info.status for r in runs] == ["KILLED"]
    assert runs[0].data.tags["stopped_early"] == "stopped by the scheduler after epoch 1 of 3"
    assert list(cb.history.read()["arch_hash"]) == ["abc123"]


def test_a_tracking_store_lost_mid_run_is_a_one_line_stop_not_a_traceback():
    """An MLflow client failure inside the driver's tree calls becomes ``TrackingLost`` (a ``RunStopped``), which
    every command prints as one line and resumes from; other exceptions pass unchanged."""
    from mlflow.exceptions import MlflowException

    from pipelines.common.mlflow_runs import TrackingLost, tracking_calls
    from pipelines.common.rundir import stop_reason

    with pytest.raises(TrackingLost) as lost:
        with tracking_calls("http://127.0.0.1:9"):
            raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/search failed\nretries")
    line = stop_reason(lost.value)
    assert line.startswith("the MLflow tracking store http://127.0.0.1:9 failed (API request")
    assert "rerun the same command" in line and "\n" not in line
    with pytest.raises(KeyError):
        with tracking_calls("sqlite:///x.db"):
            raise KeyError("a bug stays a bug")
    assert stop_reason(TrackingUnavailable("MLflow tracking server x is unreachable")) is not None
