"""The DCSOD main job end to end, at the ``ci`` preset's budget (digits, 1-epoch trainings):

* submitted with ``ray job submit --working-dir .`` to a head started by ``ray start --head`` on 127.0.0.1
  with token authentication on (and stopped by its own pid afterwards);
* its outputs (DESIGN.md contract), MLflow runs == history rows, the registry CLI and the registered model;
* kill -9 of a trial's worker process, then of the driver once in every stage (warmup, distill, predictor,
  search, compare, final, registration), each attempt resuming the last: the same row keys as the uninterrupted
  job, no duplicate row or MLflow run, one registered version;
* the MLflow server stopped mid-run and started again: one line, then a rerun that records every row once;
* a second run directory in the same tracking store gets its own runs and champion.

Both runs use one trial at a time, so the searcher sees results in the same order and the two runs must
propose the same architectures.
"""
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from servers import MlflowServer, free_port, kill_session, session_processes

pytest.importorskip("ray")
pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parent.parent
SETS = ["--preset", "ci", "--set", "max_concurrent=1"]
EXPECTED_FILES = ["history.parquet", "predictor/metrics.json", "best.json", "report.md", "manifest.json",
                  "champion_cells.png", "predicted_vs_measured.png", "metric_by_stage.png", "search_trajectory.png"]


def cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def base_env(**extra) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OMP_NUM_THREADS": "1", **extra}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


@contextlib.contextmanager
def ray_head(env: dict):
    """``ray start --head --block`` on 127.0.0.1 in its own session; yields the dashboard URL; stopped by pid."""
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    dash = free_port()
    cmd = [cli("ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2", "--temp-dir", temp_dir,
           "--disable-usage-stats"]
    # Fixed default ports (agent 52365, client server 10001, ...) may be taken by another Ray on this machine.
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--ray-client-server-port",
                 "--metrics-export-port", "--runtime-env-agent-port"):
        cmd += [flag, str(free_port())]
    log = open(Path(temp_dir) / "head.log", "wb")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert head.poll() is None, (Path(temp_dir) / "head.log").read_text()[-3000:]
            listed = subprocess.run([cli("ray"), "job", "list", "--address", url], env=env, capture_output=True)
            if listed.returncode == 0:
                break
            assert time.monotonic() < deadline, "ray head did not answer in 180 s"
            time.sleep(2)
        yield url
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            head.kill()
        kill_session(head.pid)  # anything left of that head (its processes share the session it was started in)
        log.close()


def mlflow_runs(uri: str, trials: bool = True) -> list:
    """The MLflow runs of experiment dcsod-digits: the candidates' (tag ``arch_hash``), or with ``trials=False``
    the others (each pipeline run's parent and stage runs)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dcsod-digits")
    runs = list(client.search_runs([exp.experiment_id], max_results=1000)) if exp else []
    return [r for r in runs if ("arch_hash" in r.data.tags) == trials]


def history(out: Path):
    from pipelines.nas.tracking import HistoryStore

    return HistoryStore(out / "history.parquet").read()


def keys(df) -> list:
    return sorted(map(tuple, df[["arch_hash", "stage", "iteration", "seed"]].astype(str).values.tolist()))


@pytest.fixture(scope="module")
def job_run(tmp_path_factory):
    """The ci preset submitted as a Ray job; (output dir, tracking URI, job log)."""
    root = tmp_path_factory.mktemp("job")
    out, uri = root / "out", f"sqlite:///{root / 'mlflow.db'}"
    token = secrets.token_hex(32)
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    with ray_head(env) as url:
        no_token = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        denied = subprocess.run([cli("ray"), "job", "list", "--address", url], env=no_token, capture_output=True,
                                text=True)
        runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri}})
        submit = [cli("ray"), "job", "submit", "--address", url, "--working-dir", ".", "--runtime-env-json",
                  runtime_env, "--", "python", "pipelines/dcsod.py", *SETS, "--output", str(out)]
        for _ in range(10):  # the job API answers before the node's agent accepts jobs ("No available agent")
            job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in job.stderr:
                break
            time.sleep(3)
    return out, uri, job, denied


def test_job_submit_succeeds_with_token_auth(job_run):
    out, uri, job, denied = job_run
    assert denied.returncode != 0, "the head accepted a client with a wrong token"
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", job.stdout + job.stderr)
    assert "succeeded" in text.lower() and "champion " in text, text[-3000:]


def test_outputs_follow_the_contract(job_run):
    from mlflow import MlflowClient

    out, uri, job, _ = job_run
    for name in EXPECTED_FILES:
        assert (out / name).is_file(), name
    writable = [str(p) for p in [out, *out.rglob("*")] if not p.is_symlink() and p.stat().st_mode & 0o002]
    assert not writable, f"world-writable in the run directory: {writable[:5]}"
    df = history(out)
    assert len(keys(df)) == len(set(keys(df)))
    assert set(df.stage) == {"warmup", "distill", "search", "final", "compare"}
    assert (df.stage == "warmup").sum() == 6 and (df.stage == "distill").sum() == 6
    assert (df.stage == "search").sum() == 2 and (df.stage == "final").sum() == 1
    compare = df[df.stage == "compare"]  # champion, median warmup architecture, ResNet-8; seeds 0 and 1
    assert set(compare.seed) == {0, 1} and len(compare) == 2 * compare.arch_hash.nunique()
    assert {"resnet-depth8", df[df.stage == "final"].arch_hash.iloc[0]} <= set(compare.arch_hash)
    report = (out / "report.md").read_text()
    assert "## Did the search help?" in report
    assert "- **In-distribution (ID)**: 0, 1, 2, 3, 4, 5 (6 classes)." in report  # the task, from the protocol
    assert "- **OOD test classes**: 8, 9 (2 classes)." in report
    assert "- `auroc_msp` = " in report and "of the time; 0.5 is chance" in report  # the metric in plain words
    assert "## The search against the architectures before it" in report and "## Warnings" in report
    assert "- Small validation split: candidates are ranked on " in report  # digits: a few hundred images
    for col in ("auroc_msp", "auroc_energy", "auroc_maha", "fpr95_msp", "id_acc"):
        assert df[col].between(0, 1).all(), col
    predictor = json.loads((out / "predictor" / "metrics.json").read_text())
    assert {"kendall_tau", "pearson_rho", "n_train", "n_val"} <= set(predictor)
    best = json.loads((out / "best.json").read_text())
    final = df[df.stage == "final"].iloc[0]
    assert best["arch_hash"] == final.arch_hash and best["model"]["name"] == "dcsod-digits"
    assert best["measured_test"]["auroc_msp"] == pytest.approx(final.auroc_msp)
    runs = mlflow_runs(uri)
    assert len(runs) == len(df)
    assert sorted(r.info.run_id for r in runs) == sorted(df.mlflow_run_id)
    # data lineage: the search trains on the seeded half with outlier exposure (warmup) or from OE teachers with
    # the outlier term (distill, search); the final and compare retrains on train+val, scored on the test split
    lineage = dict(zip(df.stage, df.lineage))
    assert lineage["warmup"] == "id=digits/train[50%];outliers=direct;eval=val"
    assert lineage["search"] == "id=digits/train[50%];outliers=direct+teachers;eval=val"
    retrained = "id=digits/train+val;outliers=direct+teachers;eval=test"
    assert set(df[df.stage.isin(["final", "compare"])].lineage) == {retrained}
    assert best["lineage"] == lineage["final"] and all(r.data.tags["lineage"] == df.lineage[df.mlflow_run_id ==
                                                       r.info.run_id].iloc[0] for r in runs)
    assert MlflowClient(uri).get_model_version("dcsod-digits", best["model"]["version"]).tags["lineage"] == \
        lineage["final"]
    assert "- data lineage of the final retrain: ID images `digits/train+val`" in report
    assert best["thesis"]["method"]["differ"]["space.residual"] == {"thesis": False, "run": True}
    tree = {r.data.tags.get("dcsod.stage", "parent"): r for r in mlflow_runs(uri, trials=False)}
    parent = tree.pop("parent")  # one parent run: settings, code and package versions, champion, report
    assert parent.info.run_name == "dcsod (ci)" and parent.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == "1" and parent.data.params["version.torch"].startswith("2.")
    assert parent.data.tags["dcsod.code_version"] and parent.data.tags["dcsod.champion"] == best["arch_hash"]
    assert {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)} >= {"report.md", "best.json"}
    assert set(tree) == {"warmup", "distill-1", "predictor", "search", "compare", "final"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
               for r in tree.values())
    assert tree["predictor"].data.metrics["kendall_tau"] == pytest.approx(predictor["kendall_tau"])
    for run in runs:  # trials nest under their stage's run, named <stage>/<arch_hash>, timed as trained
        stage = next(name for name, r in tree.items() if r.info.run_id == run.data.tags["mlflow.parentRunId"])
        assert run.info.run_name.startswith(f"{stage}/{run.data.tags['arch_hash']}")
        row = df[df.mlflow_run_id == run.info.run_id].iloc[0]
        assert (run.info.end_time - run.info.start_time) / 1000 >= row.train_seconds - 0.01 or stage == "final"
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["warmup", "distill-1", "predictor", "search", "compare", "final"]
    assert any((out / "tune" / "warmup").rglob("events.out.tfevents*")), "no TensorBoard files"


def test_registry_show_and_load_model(job_run):
    import mlflow
    import torch

    out, uri, _, _ = job_run
    shown = subprocess.run([sys.executable, "-m", "pipelines.nas.model_registry", "show", "dcsod-digits@champion",
                            "--tracking-uri", uri, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    best = json.loads((out / "best.json").read_text())
    assert info["arch_hash"] == best["arch_hash"] and info["genotype"] == best["genotype"]
    assert "champion" in info["aliases"] and 0 <= info["metrics"]["auroc_msp"] <= 1
    missing = subprocess.run([sys.executable, "-m", "pipelines.nas.model_registry", "show", "dcsod-nothing@champion",
                              "--tracking-uri", uri], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1

    from trainables.image import make_protocol

    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/dcsod-digits@champion")
    protocol = make_protocol("digits")
    images = protocol.id_test[0][:16]
    logits = model(images)
    assert logits.shape == (16, protocol.num_classes)
    scores = model.score(images.float() / 255.0)
    assert scores.shape == (16,) and torch.all((scores > 0) & (scores <= 1))  # MSP
    assert torch.allclose(model.score(images), scores.to(model.score(images).dtype))  # uint8 == [0, 1] floats


def test_guide_snippet_runs_verbatim_against_the_registered_champion(job_run, tmp_path):
    """The Python snippet of docs/dcsod.md's "The registered champion", run as written."""
    out, uri, job, _ = job_run
    assert job.returncode == 0
    guide = (ROOT / "docs" / "dcsod.md").read_text()
    section = guide[guide.index("### The registered champion"):]
    start = section.index("```python") + len("```python")
    snippet = section[start:section.index("```", start)]
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**base_env(), "MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines())
    assert json.loads(lines["digits"]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert len(json.loads(lines["predicted"])) == 8
    assert all(0 < s <= 1 for s in json.loads(lines["MSP"]))


def test_score_cli_measures_a_users_own_image_folders(job_run, tmp_path):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    _, uri, job, _ = job_run
    assert job.returncode == 0
    digits = load_digits()
    for name, classes in (("id", range(6)), ("ood", (8, 9))):
        for n in np.flatnonzero(np.isin(digits.target, list(classes)))[:60]:
            folder = tmp_path / name / str(digits.target[n])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(digits.images[n] * 255 / 16).astype(np.uint8), "L").save(folder / f"{n}.png")
    cmd = [sys.executable, "-m", "pipelines.score", "models:/dcsod-digits@champion", "--id", str(tmp_path / "id"),
           "--ood", str(tmp_path / "ood"), "--out", str(tmp_path / "score.json"), "--tracking-uri", uri]
    done = subprocess.run(cmd, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "score.json").read_text())
    assert report["n_id"] == 60 and report["n_ood"] == 60 and set(report["metrics"]) == {"msp", "energy"}
    for values in report["metrics"].values():
        assert {"auroc", "fpr95", "openood_fpr95", "aupr_in"} <= set(values)
        assert all(0 <= v <= 1 for v in values.values())
    assert "msp |" in done.stdout
    bad = subprocess.run([*cmd[:-4], "--scores", "maha"], cwd=ROOT, env=base_env(), capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --scores: unknown ['maha']; valid: msp, energy"]
    missing = subprocess.run([*cmd[:6], "--ood", str(tmp_path / "nope"), "--tracking-uri", uri], cwd=ROOT,
                             env=base_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def stage_rows(out: Path, stage: str) -> int:
    try:
        return int((history(out).stage == stage).sum()) if (out / "history.parquet").exists() else 0
    except Exception:  # the file is replaced atomically; a reader may race the rename
        return 0


def finished_stages(out: Path) -> list:
    try:
        return list(json.loads((out / "manifest.json").read_text())["stages"])
    except (OSError, ValueError):
        return []


#: Where the driver is killed, in order: (name, condition on the run directory). Each kill leaves the run
#: directory as it is; the next attempt resumes it and runs until the next condition holds.
KILL_POINTS = [
    ("warmup", lambda out: stage_rows(out, "warmup") >= 2),
    ("distill", lambda out: stage_rows(out, "distill") >= 2),
    ("predictor", lambda out: "distill-1" in finished_stages(out)),
    ("search", lambda out: stage_rows(out, "search") >= 1),
    ("compare", lambda out: "search" in finished_stages(out)),
    ("final", lambda out: "compare" in finished_stages(out)),
    ("registration", lambda out: "final" in finished_stages(out) and not (out / "best.json").exists()),
]


def test_kill_minus_9_in_every_stage_then_the_same_command_completes(job_run, tmp_path):
    """The driver is killed with SIGKILL once in each stage (7 kills, each attempt resuming the last), and before
    that, in the warmup, the Ray worker process training a trial (Tune retries the trial). The final rerun
    completes with the same rows as the uninterrupted job: no row lost or duplicated, no FAILED trial, one
    FINISHED MLflow run per row, one registered version."""
    from mlflow import MlflowClient

    reference, _, job, _ = job_run
    assert job.returncode == 0
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *SETS, "--output", str(out), "--address", "local",
           "--no-dashboard", "--tracking-uri", uri]
    env, killed_in, worker_killed = base_env(), [], False
    for name, reached in KILL_POINTS:
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 600
            while name == "warmup" and not worker_killed:  # first the worker process of a training trial
                assert proc.poll() is None and time.monotonic() < deadline, "no training worker to kill"
                victims = session_processes(proc.pid, "ray::ImplicitFunc.train") if stage_rows(out, name) else []
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    worker_killed = True
                time.sleep(0.1)
            while proc.poll() is None and not reached(out):
                assert time.monotonic() < deadline, f"{name}: not reached within 600 s"
                time.sleep(0.1)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # kill -9 the driver
                proc.wait(30)
                killed_in.append(name)
            kill_session(proc.pid)  # and the local Ray it had started
        assert proc.returncode in (0, -signal.SIGKILL), log_path.read_text()[-3000:]
        json.loads((out / "manifest.json").read_text())  # whole after every kill
        history(out)
    assert len(killed_in) >= 5, f"the driver was killed only in {killed_in}"

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = history(out)
    assert len(keys(resumed)) == len(set(keys(resumed))), "duplicate history rows"
    assert keys(resumed) == keys(history(reference)), f"rows differ from the uninterrupted job (killed in {killed_in})"
    runs = [r for r in mlflow_runs(uri) if r.info.status == "FINISHED" and r.data.tags.get("dcsod.key")]
    tags = [r.data.tags.get("dcsod.key") for r in runs]
    assert len(tags) == len(set(tags)) == len(resumed), "duplicate or missing MLflow runs"
    assert not [r for r in mlflow_runs(uri) if r.info.status == "FAILED"], "the killed worker's trial was not retried"
    assert len(MlflowClient(uri).search_model_versions("name='dcsod-digits'")) == 1


def test_tracking_server_down_mid_run_stops_cleanly_and_the_rerun_records_every_row_once(job_run, tmp_path):
    """The MLflow server dies during the warmup: the job stops with one line; while it is down the same command
    is refused before Ray starts; once it is back (same store) the rerun completes, and MLflow holds exactly one
    FINISHED run per history row, the rows being the uninterrupted job's. The client's HTTP retries are
    shortened (MLFLOW_HTTP_REQUEST_*) to keep the test bounded."""
    reference, _, job, _ = job_run
    assert job.returncode == 0
    server = MlflowServer(tmp_path / "mlflow").start().wait()
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *SETS, "--output", str(out), "--address", "local",
           "--no-dashboard", "--tracking-uri", server.uri]
    env = base_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                   MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        with open(tmp_path / "first.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 600
            while stage_rows(out, "warmup") < 2:
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no warmup rows within 600 s"
                time.sleep(0.1)
            server.stop()
            try:
                proc.wait(600)
            finally:
                kill_session(proc.pid)
        text = (tmp_path / "first.log").read_text(errors="replace")
        assert proc.returncode == 1, text[-3000:]
        last = [line for line in re.split(r"[\r\n]", text) if line.startswith("error:")][-1]
        assert "rerun the same command" in last and "Traceback" not in text[text.index(last):], text[-3000:]

        down = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 2 and "error: " in down.stderr and "Started a local Ray" not in down.stderr
    finally:
        server.stop()
    back = MlflowServer(tmp_path / "mlflow")
    back.port, back.uri = server.port, server.uri  # the same server address and store
    back.start().wait()
    try:
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        done = history(out)
        assert keys(done) == keys(history(reference))
        runs = [r for r in mlflow_runs(server.uri) if r.info.status == "FINISHED" and r.data.tags.get("dcsod.key")]
        assert sorted(r.data.tags["dcsod.key"] for r in runs) == sorted(set(r.data.tags["dcsod.key"] for r in runs))
        assert len(runs) == len(done), "history rows and FINISHED MLflow runs differ"
    finally:
        back.stop()


def test_second_run_directory_in_the_same_store_gets_its_own_runs_and_champion(job_run, tmp_path):
    """Two run directories with the same candidate keys in one tracking store: B never reuses A's MLflow runs,
    B's retrained model is logged and becomes @champion, and rerunning the finished A changes nothing.
    B ranks by a score outside the default set (``auroc_knn``): it reaches history.parquet and picks the champion."""
    from mlflow import MlflowClient

    first, uri, job, _ = job_run
    assert job.returncode == 0
    client = MlflowClient(uri)
    versions_before = {str(v.version) for v in client.search_model_versions("name='dcsod-digits'")}
    runs_before = {r.info.run_id for r in mlflow_runs(uri)}
    second = tmp_path / "second"
    common = ["--address", "local", "--no-dashboard", "--tracking-uri", uri]
    done = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *SETS, "--set", "final.epochs=3",
                           "--set", "metric=auroc_knn", "--set", "train.scores=[msp, knn]",
                           "--set", "final.promote=always",  # another metric than A's champion: not comparable
                           "--output", str(second),
                           *common], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a, b = history(first), history(second)
    assert set(a.mlflow_run_id).isdisjoint(b.mlflow_run_id), "B reused A's MLflow runs"
    assert set(b.mlflow_run_id).isdisjoint(runs_before)
    assert len(mlflow_runs(uri)) == len(a) + len(b)
    best_b = json.loads((second / "best.json").read_text())
    searched = b[b.stage.isin(["distill", "search"])]
    assert searched.auroc_knn.notna().all() and b.aupr_in_knn.between(0, 1).all() and b.auroc_energy.isna().all()
    top = searched.sort_values(["auroc_knn", "arch_hash"], ascending=[False, True]).iloc[0]
    assert best_b["metric"] == "auroc_knn" and best_b["arch_hash"] == top.arch_hash
    assert 0 <= best_b["measured_test"]["auroc_knn"] <= 1
    assert best_b["model"]["version"] not in versions_before
    champion = client.get_model_version_by_alias("dcsod-digits", "champion")
    assert str(champion.version) == best_b["model"]["version"]
    assert champion.run_id == b[b.stage == "final"].mlflow_run_id.iloc[0]
    assert client.get_run(champion.run_id).data.tags.get("dcsod.model_uri"), "B's model was not logged"

    again = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dcsod.py"), *SETS, "--output", str(first),
                            *common], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert str(client.get_model_version_by_alias("dcsod-digits", "champion").version) == best_b["model"]["version"]
    assert len(client.search_model_versions("name='dcsod-digits'")) == len(versions_before) + 1
    assert len(mlflow_runs(uri)) == len(a) + len(b)
    parents = [r for r in mlflow_runs(uri, trials=False) if "dcsod.stage" not in r.data.tags]
    assert len(parents) == 2
    assert {r.data.tags["dcsod.run_dir"] for r in parents} == {str(first.resolve()), str(second.resolve())}
