"""The MLflow side shared by every pipeline's driver-side tracking: the tracking-URI check, and
:class:`MLflowRecorder`, which finds or creates one MLflow run per recorded key of one run directory.

Trials never touch MLflow: a Tune callback in the driver records each finished trial. Every run carries the
tag ``dcsod.key`` = ``<run_uid>/<key...>``: the run directory's :func:`pipelines.common.rundir.run_uid` and the
pipeline's key of the result (e.g. arch_hash/stage/iteration/seed). A driver that crashed after creating a run
finds it again by that tag instead of creating a second one, and two run directories sharing one tracking store
never match each other's runs.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.common.rundir import RunStopped, run_uid

KEY_TAG = "dcsod.key"
RUN_UID_TAG = "dcsod.run_uid"


class TrackingUnavailable(RunStopped):
    """The MLflow tracking store cannot be reached: before Ray starts, a bad-input error (exit 2); found during a
    run (a recorder built for the next stage), a one-line stop (exit 1) that the same command resumes."""


class TrackingLost(RunStopped):
    """The MLflow tracking store failed during a run (after the client's own retries): the command stops with one
    line; finished work is kept and the same command resumes."""


@contextlib.contextmanager
def tracking_calls(uri: str | None):
    """Turn an MLflow client failure inside the block (a :class:`~mlflow.exceptions.MlflowException`, a network
    or file-system error) into :class:`TrackingLost`; anything else passes unchanged."""
    try:
        yield
    except RunStopped:
        raise
    except Exception as err:
        from mlflow.exceptions import MlflowException

        if not isinstance(err, (MlflowException, OSError, ConnectionError)):
            raise
        raise TrackingLost(f"the MLflow tracking store {uri} failed ({one_line(err, 300)}); finished work is kept, "
                           "rerun the same command to resume") from err


#: Set by Ray in the driver of a job submitted with ``ray job submit``.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def default_tracking_uri(output: Path) -> str | None:
    """The store a command uses when neither ``--tracking-uri`` nor ``MLFLOW_TRACKING_URI`` names one: MLflow's
    default (None) on a machine, but inside a Ray job — whose working directory is a temporary copy Ray
    deletes — ``sqlite:///<output>/mlflow/mlflow.db``, with a warning, so runs and registry survive the job."""
    if os.environ.get("MLFLOW_TRACKING_URI") or not os.environ.get(RAY_JOB_ENV):
        return None
    store = Path(output).resolve() / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    print(f"warning: this Ray job has no MLFLOW_TRACKING_URI; MLflow runs, models and the registry go to {uri} "
          "(MLflow's default would be the job's temporary working directory). Set MLFLOW_TRACKING_URI in "
          "--runtime-env-json to use a shared tracking server.", file=sys.stderr)
    return uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: next to a SQLite store's file (``<dir>/mlruns/<experiment>``,
    not MLflow's ``./mlruns`` in whatever directory the driver runs in); None (the server's or MLflow's
    default) for other stores."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns" / experiment).as_uri()


def check_tracking_uri(uri: str | None = None, timeout: float = 5.0) -> str:
    """Resolve the tracking URI (``uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default) and
    make sure it is usable: an http(s) server must answer ``GET <uri>/health`` within ``timeout``
    seconds, a SQLite file's directory must exist. Returns the URI; raises :class:`TrackingUnavailable`.
    """
    if not uri:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except urllib.error.HTTPError as e:  # the server answered: only a 5xx means it is not usable
            if e.code >= 500:
                raise TrackingUnavailable(f"MLflow tracking server {uri} is unavailable (HTTP {e.code}); rerun the "
                                         "same command once it answers (finished work is kept)") from None
        except (urllib.error.URLError, OSError) as e:
            reason = one_line(getattr(e, "reason", e))
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it or set MLFLOW_TRACKING_URI, then "
                "rerun the same command (finished work is kept)"
            ) from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if str(db) != ":memory:" and not db.parent.is_dir():
            raise TrackingUnavailable(f"MLflow tracking store {uri}: directory {db.parent} does not exist")
    return uri


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` with its whitespace collapsed, cut at ``limit`` characters (tags, error messages)."""
    return " ".join(str(text).split())[:limit]


@contextlib.contextmanager
def no_run_urls():
    """MLflow 3's ``set_terminated`` prints two "View run/experiment at" lines per run (and fetches the
    run to do so); thousands of candidates would flood the driver log. Suppressed for the call only."""
    name = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    saved = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


#: A traceback's ``ExceptionType: message`` line (``ValueError: ...``, ``ray.exceptions.RayTaskError(X): ...``).
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure|Warning)"
                            r"(?:\([\w.]+\))?: ")


class MLflowRecorder:
    """MLflow runs of one run directory in one experiment, found again by key.

    Args:
        output_dir: the run directory (its :func:`~pipelines.common.rundir.run_uid` goes into every key tag).
        experiment_name: created if missing (concurrently safe); a deleted one is a one-line ``ValueError``.
        tracking_uri: checked here (:class:`TrackingUnavailable`), so a bad store fails before any trial.
        extra_tags: added to every run.
    """

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, tracking_uri: str | None = None,
                 extra_tags: Mapping[str, Any] | None = None) -> None:
        self.experiment_name = experiment_name
        self.tracking_uri = check_tracking_uri(tracking_uri)
        self.run_uid = run_uid(output_dir)
        self.extra_tags = {str(k): str(v) for k, v in (extra_tags or {}).items()}
        self._client = None
        self._experiment_id: str | None = None

    # Tune pickles the run config (callbacks included) for Tuner.restore; the client is rebuilt lazily.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=artifact_location(self.tracking_uri,
                                                                                  self.experiment_name))
                except MlflowException:  # created concurrently by another driver
                    exp = self.client.get_experiment_by_name(self.experiment_name)
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise ValueError(
                        f"MLflow experiment {self.experiment_name!r} is deleted; restore it or use another name"
                    )
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def key_tag(self, key: tuple) -> str:
        """``<run_uid>/<key[0]>/<key[1]>/...``, the value of the ``dcsod.key`` run tag."""
        return "/".join(map(str, (self.run_uid, *key)))

    def find_runs(self, key: tuple) -> list:
        """This run directory's MLflow runs tagged with ``key`` (any status)."""
        return list(self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{self.key_tag(key)}'", max_results=100))

    def create_run(self, key: tuple, run_name: str, tags: Mapping[str, Any] | None = None,
                   start_time: float | None = None) -> str:
        """A new run tagged with ``key`` (plus ``extra_tags`` and ``tags``); returns its id. ``start_time``:
        Unix seconds (e.g. when a trial's training began; default now)."""
        all_tags = {**self.extra_tags, **{k: str(v) for k, v in (tags or {}).items()},
                    KEY_TAG: self.key_tag(key), RUN_UID_TAG: self.run_uid}
        start = None if start_time is None else int(1000 * start_time)
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name,
                                      start_time=start).info.run_id

    def terminate(self, run_id: str, status: str = "FINISHED", end_time: float | None = None) -> None:
        """End a run with ``status``; ``end_time``: Unix seconds (default now)."""
        with no_run_urls():
            self.client.set_terminated(run_id, status=status,
                                       end_time=None if end_time is None else int(1000 * end_time))

    @staticmethod
    def error_message(trial) -> str:
        """One line: ``ExceptionType: message`` of a Tune trial's last error, the last line of the trial's local
        error text file (written just before ``on_trial_error``; the copies in Tune's storage path are synced
        later). Tune's pickled error file is never read: unpickling a file from a run directory could run code."""
        path = getattr(trial, "error_file", None)
        text = Path(path).read_text(errors="replace") if path and os.path.exists(path) else ""
        lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
        raised = [ln for ln in lines if EXCEPTION_LINE.match(ln)]  # the innermost raise comes last
        return one_line(raised[-1] if raised else lines[-1]) if lines else "unknown error"


# --- run trees: a pipeline run's parent run, its nested runs, and what produced them ---------------------------
#: Packages whose versions every parent run records (``version.<name>`` params), besides Python's.
TRACKED_PACKAGES = ("dcsod-platform", "torch", "torchvision", "ray", "mlflow", "numpy", "pandas", "scikit-learn")
#: MLflow's limit on one param value (characters); longer values are cut.
PARAM_VALUE_LIMIT = 6000


def code_version(repo: str | os.PathLike | None = None) -> str:
    """The code that runs: ``git describe --always --dirty`` of the repository holding this file (a commit, with
    ``-dirty`` when the work tree has changes), else the installed ``dcsod-platform`` version, else ``unknown``."""
    import subprocess
    from importlib import metadata

    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]
    if (repo / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"dcsod-platform {metadata.version('dcsod-platform')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def package_versions() -> dict[str, str]:
    """``{"version.python": "3.11.7", "version.torch": "2.14.1", ...}`` for :data:`TRACKED_PACKAGES`
    (``not installed`` for a missing one)."""
    import platform as std_platform
    from importlib import metadata

    out = {"version.python": std_platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[f"version.{name}"] = "not installed"
    return out


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Log ``params`` on a run in batches of 100 (MLflow's limit), each value cut at :data:`PARAM_VALUE_LIMIT`.
    Params already logged are skipped (MLflow refuses to change a param), so a rerun may call this again."""
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    items = [Param(str(k), str(v)[:PARAM_VALUE_LIMIT]) for k, v in params.items() if str(k) not in logged]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


class RunTree:
    """One pipeline run in MLflow: a parent run holding the settings (flattened, one param per key), the code
    version (tag ``dcsod.code_version``) and package versions (``version.*`` params), and nested runs under it
    (a pipeline's stages, an experiment's methods), each created once and found again by its key on a rerun.

    Runs below a nested run carry its id in the tag ``mlflow.parentRunId`` (:meth:`nest_under`); the MLflow UI
    then shows parent > stage > trial. Start and end times are real: a run starts when it is first created and
    ends when :meth:`end` is called (a resumed run keeps its first start time and runs again until then).
    :meth:`attach` makes a tree whose root is an existing run (e.g. an experiment command's method run).

    >>> tree = RunTree(MLflowRecorder("out", "dcsod-digits"), "dcsod (quick)", {"seed": 0})   # doctest: +SKIP
    >>> tags = tree.nest_under(tree.child("warmup"))    # tags for the stage's trial runs      # doctest: +SKIP
    >>> tree.end(tree.child("warmup")); tree.end()                                              # doctest: +SKIP
    """

    def __init__(self, recorder: MLflowRecorder, name: str, settings: Mapping[str, Any],
                 tags: Mapping[str, Any] | None = None, parent_id: str | None = None) -> None:
        """``settings``: flattened into params (``a.b.c``); ``parent_id``: nest this tree's root under an
        existing run (e.g. an experiment command's method run)."""
        from pipelines.common.settings import flatten

        self.recorder = recorder
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        root_tags = {**self.tags, "dcsod.code_version": code_version()}
        if parent_id:
            root_tags["mlflow.parentRunId"] = parent_id
        with tracking_calls(recorder.tracking_uri):
            self.root = self._find_or_create(("run",), name, root_tags)
            log_params(recorder.client, self.root, {**flatten(dict(settings)), **package_versions()})
        self._children: dict[str, str] = {}
        self._open: set[str] = set()

    @classmethod
    def attach(cls, recorder: MLflowRecorder, root_id: str, tags: Mapping[str, Any] | None = None) -> RunTree:
        """A tree whose root is the existing run ``root_id`` (its owner logs its settings and ends it)."""
        tree = cls.__new__(cls)
        tree.recorder, tree.root, tree._children, tree._open = recorder, root_id, {}, set()
        tree.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        return tree

    def _find_or_create(self, key: tuple, name: str, tags: Mapping[str, str]) -> str:
        found = self.recorder.find_runs(key)
        if found:
            run = found[0]
            if run.info.status != "RUNNING":  # a rerun continues it: open again, keep the first start time
                self.recorder.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        return self.recorder.create_run(key, name, tags)

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> str:
        """The nested run ``name`` under the root (created on first use, found again by key on a rerun)."""
        if name not in self._children:
            all_tags = {**self.tags, **{k: str(v) for k, v in (tags or {}).items()},
                        "mlflow.parentRunId": self.root, "dcsod.child": name}
            with tracking_calls(self.recorder.tracking_uri):
                self._children[name] = self._find_or_create(("child", name), name, all_tags)
            self._open.add(self._children[name])
        return self._children[name]

    @staticmethod
    def nest_under(run_id: str) -> dict[str, str]:
        """Tags that put a new run under ``run_id``."""
        return {"mlflow.parentRunId": run_id}

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Log the finite numbers of ``metrics`` on ``run_id`` (None, NaN and non-numbers are skipped)."""
        import math
        import time

        from mlflow.entities import Metric

        now, values = int(1000 * time.time()), []
        for k, v in metrics.items():
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                values.append(Metric(str(k), x, now, 0))
        with tracking_calls(self.recorder.tracking_uri):
            for i in range(0, len(values), 1000):
                self.recorder.client.log_batch(run_id, metrics=values[i:i + 1000])

    def end(self, run_id: str | None = None, status: str = "FINISHED") -> None:
        """End a nested run (or, with no id, the root) now."""
        with tracking_calls(self.recorder.tracking_uri):
            self.recorder.terminate(run_id or self.root, status)
        self._open.discard(run_id or self.root)

    def end_open(self, status: str = "FAILED", root: bool = True) -> None:
        """End every nested run this tree opened and has not ended (e.g. when a stage stops the run), and the
        root too with ``root``."""
        for run_id in sorted(self._open):
            self.end(run_id, status)
        if root:
            self.end(status=status)
