"""Test helpers: a throw-away MLflow tracking server and a small local Ray.

>>> server = MlflowServer(tmp_path).start()      # returns at once; the server boots (~15 s on 2 cores)
>>> with local_ray(num_cpus=2):                   # overlap Ray's start with the server's
...     server.wait()
...     run_things(server.uri)
>>> server.stop()

Both stop only what they started: the server by its own process group (it was started in a new
session, so the group holds just the server and its uvicorn workers), Ray only if it was not already
initialised by the caller.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Set before Ray starts: workers must not be started through ``uv run`` (Ray >= 2.45 propagates it).
RAY_TEST_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (also usable as a 'closed port')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_cli() -> str:
    """The ``mlflow`` executable of the running interpreter's environment."""
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.exists() else (shutil.which("mlflow") or "mlflow")


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 and a free port, SQLite backend and artifacts under ``root``."""

    def __init__(self, root: str | os.PathLike, workers: int = 1) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = self.root / "mlflow.db"
        self.log_path = self.root / "server.log"
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [mlflow_cli(), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.db}",
               "--artifacts-destination", str(self.root / "artifacts"), "--workers", str(self.workers)]
        # MLflow 3 otherwise also starts a job runner with ~7 huey consumer processes.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait(self, timeout: float = 120.0) -> MlflowServer:
        """Block until ``/health`` answers; raise with the log's tail if the server dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM the server's own process group, SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def mlflow_server(root: str | os.PathLike, workers: int = 1) -> Iterator[MlflowServer]:
    """A started, healthy :class:`MlflowServer`, stopped on exit."""
    server = MlflowServer(root, workers).start()
    try:
        yield server.wait()
    finally:
        server.stop()


@contextlib.contextmanager
def local_ray(num_cpus: int = 2, **kwargs) -> Iterator[None]:
    """``ray.init`` a local Ray without dashboard (unless one is running already); shut it down after."""
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {k: os.environ.get(k) for k in RAY_TEST_ENV}
    os.environ.update(RAY_TEST_ENV)
    # "local": a new instance; None would join a cluster that another test started with `ray start`
    ray.init(**{"address": "local", "num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False,
                **kwargs})
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (Linux /proc): e.g. a driver started with
    ``start_new_session=True`` and the local Ray it started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)


def session_processes(sid: int, title: str) -> list[int]:
    """Pids of session ``sid`` whose command line starts with ``title`` (e.g. ``ray::ImplicitFunc.train``, the
    process title of a Ray Tune trial's actor while it trains)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if int(fields[3]) == sid and cmdline.startswith(title):
                pids.append(int(stat.parent.name))
    return pids


class ModelServer:
    """``mlflow models serve -m MODEL_URI --env-manager local`` on 127.0.0.1 and a free port, one worker, reading
    the registry at ``tracking_uri``; its log goes to ``root/serve.log``. Stopped like :class:`MlflowServer`."""

    def __init__(self, model_uri: str, tracking_uri: str, root: str | os.PathLike) -> None:
        self.model_uri, self.tracking_uri, self.root = model_uri, tracking_uri, Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ModelServer:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [mlflow_cli(), "models", "serve", "-m", self.model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait(self, timeout: float = 120.0) -> ModelServer:
        """Block until ``/ping`` answers; raise with the log's tail if the server dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited early:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"mlflow models serve not answering after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def invoke(self, payload: dict, timeout: float = 60.0) -> tuple[int, dict]:
        """POST ``payload`` as JSON to ``/invocations``; ``(HTTP status, decoded JSON answer)``, errors included."""
        import json

        request = urllib.request.Request(self.url + "/invocations", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    stop = MlflowServer.stop
