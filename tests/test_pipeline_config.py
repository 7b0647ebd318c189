"""Pipeline settings, run directory, teacher choice: fast checks without Ray clusters or training."""
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.common.rundir import RunDir, RunDirError, atomic_write
from pipelines.common.settings import ConfigError
from pipelines.nas.settings import dataset_name, load_config, parse_count, preset_names
from pipelines.nas.teachers import choose_teachers
from pipelines.nas.tune_stage import between_trials

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert cfg["preset"] == preset
    assert dataset_name(cfg)


def test_overrides_are_yaml_and_nested():
    cfg = load_config("quick", ["warmup.n=4", "train.epochs=2", "train.scores=[msp, energy]", "distill.top=50%"])
    assert cfg["warmup"]["n"] == 4 and cfg["train"]["epochs"] == 2
    assert cfg["train"]["scores"] == ["msp", "energy"] and cfg["distill"]["top"] == "50%"
    assert load_config("quick")["warmup"]["n"] != 4  # the preset file is not modified


@pytest.mark.parametrize("sets, fragment", [
    (["warmup.m=3"], "valid: warmup.n, warmup.objective"),
    (["nope=1"], "valid: dataset, protocol"),
    (["train.epoch=1"], "valid: epochs"),
    (["protocol_options.colour=1"], "valid: seed"),
    (["distill.algorithm=alg9"], "alg2, alg3"),
    (["warmup.n=1"], "warmup.n"),
    (["warmup.n=3"], "warmup.n: expected an integer >= 4"),
    (["train.lr=1e6"], "train.lr: expected a positive number <= 10 (SGD with a larger rate diverges"),
    (["train.lr=abc"], "train.lr: expected a positive number"),
    (["train.epochs=2.5"], "train.epochs: expected an integer >= 1"),
    (["space.k=60", "train.width=32"], "8.7e+08 parameters"),
    (["space.k=1"], "space: k: expected an integer >= 2"),
    (["warmup.n=three"], "warmup.n: expected a number (like the default 10), got 'three'"),
    (["search_fraction=abc"], "search_fraction: expected a number"),
    (["search_fraction=1.5"], "search_fraction: expected a fraction in (0, 1]"),
    (["final.train_on_val=1"], "final.train_on_val: expected true or false"),
    (["distill.t_squared=maybe"], "distill.t_squared: expected true or false"),
    (["final.compare.seeds=[a]"], "final.compare.seeds: expected a list of numbers"),
    (["final.compare.seeds=[1, 1]"], "final.compare.seeds: expected a list of distinct integers >= 0"),
    (["distill.top=abc"], "distill.top: expected an integer >= 0 or a percentage like '0.5%'"),
    (["distill.random=-1"], "distill.random: expected an integer >= 0 or a percentage"),
    (["resources.cpu=abc"], "resources.cpu: expected a number"),
    (["distill.top=0"], "at least one teacher"),
    (["predictor.name=forest"], "valid:"),
    (["metric=auroc_knn"], "train.scores"),
    (["metric=aupr_in_knn"], "train.scores"),
    (["metric=fpr95_msp"], "higher = better"),
    (["metric=accuracy"], "expected id_acc or"),
    (["train.scores=[msp, nope]"], "train.scores: unknown ['nope']"),
    (["distill.alpha=-1"], "alpha"),
    (["distill.temperature=0"], "temperature"),
    (["warmup.objective=nope"], "warmup.objective"),
    (["resources.gpu=-1"], "resources.gpu"),
    (["warmup"], "key.sub=value"),
    (["search.early_stop=hyperband"], "search.early_stop: expected one of none, asha"),
    (["search.early_stop=asha", "search.grace_epochs=8"], "search.grace_epochs: expected fewer than train.epochs = 8"),
    (["search.grace_epochs=0"], "search.grace_epochs: expected an integer >= 1"),
    (["search.reduction_factor=1"], "search.reduction_factor: expected an integer >= 2"),
    (["train.eval_every=-1"], "train.eval_every: expected an integer >= 0"),
    (["train.cuda_graph=true"], "train.cuda_graph: true needs a GPU per trial (resources.gpu > 0)"),
])
def test_bad_settings_are_one_line_errors(sets, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("quick", sets)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("sets", [["metric=auroc_knn", "train.scores=[msp, knn]"], ["metric=aupr_in_msp"],
                                  ["metric=aupr_out_energy"], ["metric=id_acc"]])
def test_any_higher_is_better_metric_of_the_configured_scores_can_rank(sets):
    assert load_config("ci", sets)["metric"] == sets[0].split("=")[1]


def test_numbers_are_read_as_yaml_1_2_writes_them():
    """PyYAML alone reads ``1e-3`` as a string; settings read it (and ``1e6``) as floats."""
    cfg = load_config("ci", ["train.lr=1e-3", "distill.temperature=2e0"])
    assert cfg["train"]["lr"] == 0.001 and cfg["distill"]["temperature"] == 2.0


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: quick, ci"):
        load_config("huge")


@pytest.mark.parametrize("argv", [["--preset", "huge"], ["--set", "warmup.m=3"], ["--set", "train.lr=-1"],
                                  ["--preset", "cifar10-split", "--set", "protocol_options.path=/no/such.zip"],
                                  ["--preset", "ci", "--set", "train.scores=[msp,nope]"],
                                  ["--preset", "ci", "--set", "distill.alpha=-1"]])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, argv):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall time: the shared test machine's load stretches wall time several-fold.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 20, f"bad input took {cpu:.1f} CPU s: it must fail before Ray starts"
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "valid" in lines[0] or "expected" in lines[0] or "no such file" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_resources_the_local_ray_lacks_exit_2_before_writing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--preset", "ci", "--set",
                           "resources.gpu=1", "--address", "local", "--no-dashboard"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert "error: a trial needs 1 GPU but the Ray cluster has 0; set resources.gpu=0" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_unreachable_tracking_server_exits_2(tmp_path):
    from servers import free_port

    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--tracking-uri",
                           f"http://127.0.0.1:{free_port()}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_dir_refuses_other_settings(tmp_path):
    cfg = load_config("ci")
    run = RunDir.open(tmp_path / "run", cfg)
    run.finish("warmup", trials=3)
    again = RunDir.open(tmp_path / "run", cfg)
    assert again.done("warmup") and again.info("warmup")["trials"] == 3
    with pytest.raises(RunDirError, match="first difference: warmup.n"):
        RunDir.open(tmp_path / "run", load_config("ci", ["warmup.n=7"]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        RunDir.open(tmp_path / "other", cfg)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def fail(tmp):
        Path(tmp).write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _records(values):
    return [{"arch_hash": f"h{i}", "genotype": "{}", "checkpoint": f"/c/{i}", "auroc_msp": v, "stage": "warmup",
             "iteration": 0} for i, v in enumerate(values)]


def test_choose_teachers_top_plus_seeded_random():
    records = _records([0.5, 0.9, 0.7, math.nan, 0.8, 0.6, 0.55])
    records[6]["checkpoint"] = None  # failed: never a teacher
    chosen = choose_teachers(records, "auroc_msp", top=2, random=1, seed=0, iteration=1)
    assert [r["arch_hash"] for r in chosen[:2]] == ["h1", "h4"]
    assert chosen[2]["arch_hash"] in {"h2", "h5", "h0"}
    assert chosen == choose_teachers(records, "auroc_msp", top=2, random=1, seed=0, iteration=1)
    draws = {choose_teachers(records, "auroc_msp", 2, 1, seed, 1)[2]["arch_hash"] for seed in range(20)}
    assert len(draws) > 1
    assert len(choose_teachers(records, "auroc_msp", top="40%", random="0%", seed=0, iteration=1)) == 2
    with pytest.raises(RuntimeError, match="no evaluated architecture"):
        choose_teachers(_records([math.nan]), "auroc_msp", 1, 0, 0, 1)


def test_parse_count():
    assert parse_count(3, 100) == 3 and parse_count("0.5%", 2000) == 10 and parse_count("0.01%", 10) == 1
    assert parse_count("0%", 10) == 0


def test_between_trials_measures_gaps_per_worker():
    records = [{"worker_pid": 1, "started_at": 0.0, "finished_at": 1.0},
               {"worker_pid": 1, "started_at": 1.5, "finished_at": 2.0},
               {"worker_pid": 2, "started_at": 0.0, "finished_at": 3.0},
               {"worker_pid": 2, "started_at": 3.1, "finished_at": 4.0}]
    assert between_trials(records) == pytest.approx(0.3)
    assert math.isnan(between_trials(records[:1]))


def test_run_uid_is_stable_per_directory_and_distinct_between_directories(tmp_path):
    from pipelines.common.rundir import RunDir, run_uid

    a = run_uid(tmp_path / "a")
    assert a == run_uid(tmp_path / "a") and len(a) == 32
    assert run_uid(tmp_path / "b") != a
    run = RunDir.open(tmp_path / "a", {"x": 1})  # the uid file does not make the directory "not empty"
    assert run.uid == a and run.manifest["uid"] == a
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".run_uid.")] == []


@pytest.mark.parametrize("saved_state", [False, True])
def test_a_stage_is_restored_only_once_tune_saved_its_state_and_with_its_param_space(tmp_path, monkeypatch,
                                                                                    saved_state):
    """A driver killed between Tune writing tuner.pkl and its first experiment state leaves nothing to restore:
    the stage starts afresh. Once a state exists it is restored, with the param space given again (tuner.pkl
    does not hold it)."""
    from ray import tune

    from pipelines.nas import tune_stage

    calls = []

    class FakeTuner:
        def __init__(self, trainable, param_space, **kwargs):
            calls.append(("new", param_space))

        @classmethod
        def can_restore(cls, path):
            return True  # tuner.pkl is there

        @classmethod
        def restore(cls, path, trainable, param_space=None, **kwargs):
            calls.append(("restore", param_space))
            return cls.__new__(cls)

        def fit(self):
            return []

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    monkeypatch.setattr(tune, "with_parameters", lambda f, **kw: f)
    monkeypatch.setattr(tune, "with_resources", lambda f, resources: f)
    cfg = load_config("ci")
    run = RunDir.open(tmp_path / "run", cfg)
    (run.path / "tune" / "warmup").mkdir(parents=True)
    if saved_state:
        (run.path / "tune" / "warmup" / "experiment_state-2026-11-30.json").write_text("{}")
    stage = tune_stage.Stage("warmup", "warmup", 0, {"epochs": 1}, genotypes=['{"g": 1}'])
    tune_stage.run_stage(run, cfg, stage, "dcsod-test", f"sqlite:///{tmp_path / 'mlflow.db'}")
    kind, space = calls[0]
    assert kind == ("restore" if saved_state else "new") and len(calls) == 1
    assert space["stage"] == "warmup" and space["genotype"] == tune.grid_search(['{"g": 1}'])


def test_error_line_names_the_innermost_exception():
    import traceback

    from ray.tune.error import TuneError

    from pipelines.common.ray_session import error_line

    try:
        raise ConnectionError("the tracking server refused the connection")
    except ConnectionError:
        text = traceback.format_exc()
    wrapped = TuneError(text)  # how Tune reports a callback's exception
    assert error_line(wrapped) == "ConnectionError: the tracking server refused the connection"
    assert error_line(ValueError("first\nsecond")) == "ValueError: first"
    tune_text = "Failure # 1 (occurred at 2026-11-30_07-38-38)\n" + text  # a Result.error as Tune may give it
    assert error_line(tune_text) == "ConnectionError: the tracking server refused the connection"
    oom = ("Failure # 1 (occurred at 2026-11-30_07-39-49)\n"
           "1 worker(s) were killed due to the node running low on memory.")
    assert error_line(oom) == "1 worker(s) were killed due to the node running low on memory."


def test_a_run_keeps_the_tracking_store_it_started_with(tmp_path):
    cfg = load_config("ci")
    run = RunDir.open(tmp_path / "run", cfg, tracking_uri="sqlite:///a.db")
    assert run.manifest["tracking_uri"] == "sqlite:///a.db"
    assert RunDir.open(tmp_path / "run", cfg, tracking_uri="sqlite:///a.db").path == run.path
    with pytest.raises(RunDirError, match=r"records into the MLflow store sqlite:///a.db; rerun with --tracking-uri"):
        RunDir.open(tmp_path / "run", cfg, create=False, tracking_uri="http://127.0.0.1:5000")


@pytest.mark.parametrize("given, environ, expected", [(None, None, "local"), ("local", None, "local"),
                                                      (None, "10.0.0.1:6379", "10.0.0.1:6379"),
                                                      ("auto", "10.0.0.1:6379", "auto")])
def test_only_the_named_cluster_is_joined(monkeypatch, given, environ, expected):
    """Without --address or RAY_ADDRESS a pipeline starts its own Ray: ``ray.init(address=None)`` would join a
    cluster that ``ray start`` left running on the machine."""
    import ray

    from pipelines.common import ray_session

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    if environ is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", environ)
    ray_session.start_ray(given, dashboard=False)
    assert calls[0]["address"] == expected


def test_help_describes_stages_outputs_and_run_time():
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for fragment in ("1. `warmup`", "6. `compare`", "best.json", "exits 2 before anything is written", "Run time:"):
        assert fragment in proc.stdout, fragment


def test_a_ray_job_without_a_tracking_uri_keeps_mlflow_under_its_output(tmp_path, monkeypatch, capsys):
    """``ray job submit`` runs the driver in a temporary copy of the working directory: MLflow's default store
    there would be deleted with the job."""
    from pipelines import dcsod
    from pipelines.common.mlflow_runs import artifact_location

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    out = tmp_path / "out"
    cfg, output, uri = dcsod.prepare(dcsod.parse_args(["--preset", "ci", "--output", str(out)]))
    assert uri == f"sqlite:///{(out / 'mlflow' / 'mlflow.db').resolve()}"
    assert "no MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert RunDir.open(out, cfg, tracking_uri=uri).manifest["tracking_uri"] == uri  # the store dir is allowed
    assert artifact_location(uri, "dcsod-digits") == (out / "mlflow" / "mlruns" / "dcsod-digits").resolve().as_uri()
    assert artifact_location("http://127.0.0.1:5000", "x") is None
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    _, _, uri = dcsod.prepare(dcsod.parse_args(["--preset", "ci", "--output", str(tmp_path / "local")]))
    assert "local" not in uri  # outside a job: MLflow's default store
