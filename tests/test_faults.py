"""The fault matrix (DESIGN.md, "What survives what"), as an operator meets it, on 127.0.0.1:

* two jobs on one ``--output``: the second is refused before Ray starts, naming the first; a job killed with
  ``kill -9`` does not leave the lock behind;
* ``--output`` naming a regular file: one line;
* the disk fills under ``--output`` (a small tmpfs; needs permission to mount one, else skipped): the job
  stops with one line, no partial manifest or parquet, and the same command resumes once space is back, with
  history rows == distinct keys == FINISHED MLflow runs and one registered version.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DCSOD = [sys.executable, str(ROOT / "pipelines" / "dcsod.py")]


def env() -> dict:
    out = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        out.pop(key, None)
    return out


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def hold_lock_in_child(directory: Path) -> subprocess.Popen:
    """A process that takes the run directory's lock the way a running job does, then waits to be killed."""
    code = ("import sys, time; from pipelines.common.rundir import hold_lock; hold_lock(sys.argv[1]); "
            "print('held', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(directory)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_job_on_one_output_is_refused_and_a_killed_jobs_lock_is_not_stuck(tmp_path):
    out = tmp_path / "out"
    holder = hold_lock_in_child(out)
    try:
        cmd = [*DCSOD, "--preset", "ci", "--output", str(out), "--address", "local", "--no-dashboard",
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        start = time.monotonic()
        second = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = error_lines(second.stderr)
        assert "in use by a running job" in line and f"pid {holder.pid}" in line
        assert "Traceback" not in second.stderr
        assert "Started a local Ray" not in second.stderr + second.stdout  # refused before Ray starts
        assert time.monotonic() - start < 60
        assert not (out / "manifest.json").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    # the kernel dropped the dead holder's lock: a new holder gets it at once
    again = hold_lock_in_child(out)
    os.kill(again.pid, signal.SIGKILL)
    again.wait(10)


def test_output_naming_a_regular_file_is_one_line(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    done = subprocess.run([*DCSOD, "--preset", "ci", "--output", str(target)], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert "is a file, not a run directory" in line and "Traceback" not in done.stderr
    assert target.read_text() == "keep me\n"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MiB tmpfs (a ci run writes ~7 MiB into --output), grown later by ``remount``; skipped without
    permission to mount."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_stops_with_one_line_then_the_same_command_resumes(small_tmpfs, tmp_path):
    pytest.importorskip("ray")
    import pandas as pd
    from mlflow import MlflowClient

    out, uri = small_tmpfs / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [*DCSOD, "--preset", "ci", "--set", "final.compare.seeds=[]", "--output", str(out), "--address",
           "local", "--no-dashboard", "--tracking-uri", uri]
    full = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)
    assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-3000:]
    (line,) = error_lines(full.stderr)
    assert "disk is full" in line or "No space left on device" in line, line
    assert "rerun the same command" in line
    # Ray may log its own failed writes above; the job itself ends on that one line, not on a traceback
    assert "Traceback" not in full.stderr[full.stderr.index(line):], full.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())  # whole, never partial
    if (out / "history.parquet").exists():
        pd.read_parquet(out / "history.parquet")
    assert "final" not in manifest["stages"]

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_tmpfs)], check=True)
    again = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    history = pd.read_parquet(out / "history.parquet")
    keys = list(zip(history.arch_hash, history.stage, history.iteration, history.seed))
    assert len(keys) == len(set(keys)), "duplicate history rows"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10_000,
                              filter_string="attributes.status = 'FINISHED' and tags.arch_hash != ''")
    finished = [r for r in runs if r.data.tags.get("dcsod.run_dir") == str(out.resolve())]
    assert len(finished) == len(history), "history rows and FINISHED MLflow runs differ"
    assert len(client.search_model_versions("name='dcsod-digits'")) == 1



@pytest.mark.parametrize("damage", ["truncated zip", "empty class folder"])
def test_bad_data_is_one_line_before_ray_starts(tmp_path, damage):
    import zipfile

    import numpy as np
    from PIL import Image

    zpath = tmp_path / "cifar.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in ("airplane", "automobile"):
            buf = tmp_path / "img.png"
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf)
            z.write(buf, f"train/{name}/0.png")
        if damage == "empty class folder":
            z.writestr("train/bird/", "")
    if damage == "truncated zip":
        zpath.write_bytes(zpath.read_bytes()[:200])
    done = subprocess.run([*DCSOD, "--preset", "cifar10-split", "--set", f"protocol_options.path={zpath}",
                           "--output", str(tmp_path / "out")], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: protocol_options.path: "), done.stderr
    assert ("not a readable zip file" if damage == "truncated zip" else "bird' holds no images") in lines[0]
    assert not (tmp_path / "out").exists()


def ray_node(env: dict, temp_dir: str, head_port: int | None = None, cpus: int = 1,
             name: str = "head") -> subprocess.Popen:
    """``ray start --block`` on 127.0.0.1 in its own session: the head (``head_port`` None) or a worker node
    joining it; every port free (two raylets share this machine)."""
    from servers import free_port

    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--disable-usage-stats"]
    if head_port is None:
        cmd += ["--head", "--port", str(free_port()), "--temp-dir", temp_dir, "--include-dashboard", "false",
                "--ray-client-server-port", str(free_port())]
    else:
        cmd += ["--address", f"127.0.0.1:{head_port}"]
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port"):
        cmd += [flag, str(free_port())]
    log = open(Path(temp_dir) / f"node-{name}.log", "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.port = int(cmd[cmd.index("--port") + 1]) if head_port is None else head_port
    return proc


def cluster_cpus(env: dict, port: int) -> float:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(ray.cluster_resources().get('CPU', 0))")
    done = subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                          timeout=120)
    return float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else -1.0


def test_worker_nodes_lost_mid_stage_and_mid_final_retrain_the_job_finishes_on_the_nodes_left(tmp_path):
    """A head without CPUs and three worker nodes (1 CPU each; separate raylets on this machine, token
    authentication on); the job runs two trials at a time. The node training a warmup trial is killed (raylet
    and workers, SIGKILL), then, during the Ray Train final retrain, the node running its training worker. Tune
    reruns the lost trials and Ray Train restarts the retrain on the nodes left (``max_failures``); the job
    completes with every history row once and one FINISHED MLflow run per row."""
    pytest.importorskip("ray")
    import secrets
    import tempfile

    import pandas as pd
    from mlflow import MlflowClient
    from servers import kill_session, session_processes

    temp_dir = tempfile.mkdtemp(prefix="rayn", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    token = secrets.token_hex(32)
    node_env = {**env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head = ray_node(node_env, temp_dir, cpus=0)
    workers = []
    try:
        deadline = time.monotonic() + 180
        while cluster_cpus(node_env, head.port) < 0:  # the head answers (with no CPU of its own)
            assert head.poll() is None and time.monotonic() < deadline, "the head did not start"
            time.sleep(2)
        for n in range(3):  # one at a time: three raylets starting at once time out on a loaded 2-core machine
            workers.append(ray_node(node_env, temp_dir, head_port=head.port, name=f"worker{n}"))
            deadline = time.monotonic() + 180
            while cluster_cpus(node_env, head.port) < n + 1:
                assert workers[-1].poll() is None, (Path(temp_dir) / f"node-worker{n}.log").read_text()[-2000:]
                assert time.monotonic() < deadline, f"worker node {n} did not join within 180 s"
                time.sleep(2)
        out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
        cmd = [*DCSOD, "--preset", "ci", "--set", "max_concurrent=2", "--set", "final.compare.seeds=[]",
               "--output", str(out), "--address", f"127.0.0.1:{head.port}", "--tracking-uri", uri]
        killed = []

        def kill_node_running(title: str) -> None:
            deadline = time.monotonic() + 600
            while True:
                assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"no {title} on a worker node within 600 s"
                node = next((w for w in workers if w not in killed and session_processes(w.pid, title)), None)
                if node is not None:
                    kill_session(node.pid)  # the node disappears: its raylet and its workers, SIGKILL
                    killed.append(node)
                    return
                time.sleep(0.1)

        with open(tmp_path / "job.log", "wb") as log:
            job = subprocess.Popen(cmd, cwd=tmp_path, env=node_env, stdout=log, stderr=subprocess.STDOUT)
            kill_node_running("ray::ImplicitFunc.train")
            kill_node_running("ray::RayTrainWorker")
            job.wait(900)
        text = (tmp_path / "job.log").read_text(errors="replace")
        assert job.returncode == 0, text[-3000:]
        assert len(killed) == 2
        history = pd.read_parquet(out / "history.parquet")
        keys = list(zip(history.arch_hash, history.stage, history.iteration, history.seed))
        assert len(keys) == len(set(keys))
        assert (history.stage == "warmup").sum() == 6 and (history.stage == "final").sum() == 1
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10_000,
                                  filter_string="attributes.status = 'FINISHED' and tags.arch_hash != ''")
        assert len(runs) == len(history)
    finally:
        for proc in (*workers, head):
            kill_session(proc.pid)


def test_workers_killed_by_rays_memory_monitor_are_failed_trials_with_their_reason(tmp_path):
    """Ray's memory monitor set to kill any worker that runs a task (threshold 1 % of this machine's memory):
    every warmup trial's worker dies by OOM on each attempt. Each trial is retried (``max_failures``) and then
    recorded FAILED in MLflow with Ray's out-of-memory reason; with no candidate left the job stops with one
    line, the stage unfinished."""
    pytest.importorskip("ray")
    from mlflow import MlflowClient

    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [*DCSOD, "--preset", "ci", "--output", str(out), "--address", "local", "--no-dashboard",
           "--tracking-uri", uri]
    oom = {**env(), "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "50"}
    done = subprocess.run(cmd, cwd=tmp_path, env=oom, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    line = error_lines(done.stderr)[-1]
    assert line.startswith("error: stage warmup: every candidate failed") and "memory" in line.lower(), line
    assert "Traceback" not in done.stderr[done.stderr.index(line):]
    assert "warmup" not in json.loads((out / "manifest.json").read_text())["stages"]
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    failed = [r for r in runs if r.info.status == "FAILED" and "arch_hash" in r.data.tags]
    assert len(failed) == 6 and all("memory" in r.data.tags.get("error", "").lower() for r in failed)


def test_a_comparison_training_that_crashes_is_named_in_report_md_and_on_the_last_console_line(tmp_path):
    """The ResNet-8 retrain of seed 1 in stage ``compare`` ends its worker the way a native crash does (the
    testing hook ``DCSOD_TESTING_CRASH_TRIALS``, on every retry): the job still finishes, but report.md's
    comparison lists the missing training with Ray's reason, and the console's last line says the comparison is
    incomplete."""
    pytest.importorskip("ray")
    from trainables.image.tune_trainable import CRASH_ENV

    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [*DCSOD, "--preset", "ci", "--output", str(out), "--address", "local", "--no-dashboard",
           "--tracking-uri", uri, "--set", "warmup.n=4", "--set", "search.trials=1", "--set", "max_failures=1"]
    done = subprocess.run(cmd, cwd=tmp_path, env={**env(), CRASH_ENV: "compare:resnet-depth8:1"},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("warning: the comparison is incomplete: 1 of 6 trainings failed (the standard "
                           "architecture ResNet-8 (`resnet-depth8`), seed 1: "), last
    report = (out / "report.md").read_text()
    assert "**The comparison is incomplete:** 1 of 6 trainings failed" in report
    assert "- the standard architecture ResNet-8 (`resnet-depth8`), seed 1: " in report
    row = next(r for r in json.loads((out / "best.json").read_text())["compare"]["rows"]
               if r["arch_hash"] == "resnet-depth8")
    assert row["seeds"] == [0] and [m["seed"] for m in row["missing"]] == [1]
