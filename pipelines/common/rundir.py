"""The run directory (``--output DIR``): atomic files and a manifest of finished stages.

``DIR/manifest.json`` records the settings the run was started with and, per finished stage, when it finished,
how long it took and what it produced. A stage is finished exactly when the manifest says so; the manifest is
rewritten atomically (temporary file in the same directory + ``os.replace``) after the stage's own outputs,
so a crash at any moment leaves either the old or the new manifest, never a partial one.

>>> run = RunDir.open("runs/quick", config)              # doctest: +SKIP
>>> if not run.done("warmup"):                            # doctest: +SKIP
...     run.finish("warmup", seconds=12.5, trials=10)
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.common.settings import fingerprint

MANIFEST = "manifest.json"
RUN_UID_FILE = ".run_uid"
LOCK_FILE = ".lock"
JOB_STORE = "mlflow"  # a Ray job's default MLflow store inside its --output (mlflow_runs.default_tracking_uri)
_held_locks: dict[Path, int] = {}  # run directory -> the descriptor holding its lock in this process


class RunDirError(ValueError):
    """The directory holds a different run (other settings) or an unreadable manifest."""


class RunStopped(RuntimeError):
    """The run cannot go on now, for a reason its one-line message states; everything finished so far is kept
    and rerunning the same command resumes. Commands print the message and exit with status 1."""


def stop_reason(err: BaseException) -> str | None:
    """The one line a command prints for ``err`` when it means "the run cannot go on now; rerunning resumes":
    a :class:`RunStopped`, or the disk filling up under the driver (its files or a SQLite MLflow store); and
    a result refused by a table for its data lineage (:class:`trainables.image.lineage.LineageError`: a wiring
    error, named in one line). None for anything else (a bug: its traceback is shown)."""
    from trainables.image.lineage import LineageError

    if isinstance(err, (RunStopped, LineageError)):
        return str(err)
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {err.filename}" if err.filename else ""
        return f"the disk is full ({err.strerror}{where}); free space and rerun the same command to resume"
    if "database or disk is full" in str(err):
        return "the disk holding the MLflow store is full; free space and rerun the same command to resume"
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def run_uid(directory: str | os.PathLike) -> str:
    """The identity of the run kept in ``directory``: 32 hex digits, created on first use, stable for the
    directory's lifetime. MLflow runs are matched by it (with the candidate's key), so two run directories in
    one tracking store never share runs, and a directory deleted and recreated at the same path starts afresh.
    Created atomically (a complete file is linked into place; the first of two concurrent callers wins)."""
    path = Path(directory) / RUN_UID_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{RUN_UID_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()


def hold_lock(directory: str | os.PathLike) -> None:
    """Hold the exclusive lock of the run directory ``directory`` for the rest of this process, or raise a
    one-line :class:`RunDirError` naming the process that holds it (two jobs must never write one run).

    An advisory ``flock`` on ``DIR/.lock``: the kernel drops it when the holding process ends, however it ends
    (``kill -9`` included), so a crashed run never leaves it stuck. Reentrant within a process. Shared file
    systems: ``flock`` holds across NFSv4 clients; on file systems without it the lock only guards one machine."""
    path = Path(directory).resolve()
    if path in _held_locks:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(f"{path} is in use by a running job ({holder}); wait for it to end or stop it, "
                          "or choose another --output") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
              .encode(), 0)
    _held_locks[path] = fd


#: Settings keys added after run directories were written (dotted path -> the value every run before the key
#: behaved as): a stored run whose settings lack such a key resumes when the new settings hold exactly that value
#: there; any other value is a difference. A path matches at any depth (``search.searcher`` also matches the
#: experiments' ``dcsod.search.searcher``). Add a key here when a pipeline's ``defaults`` gain one.
ADDED_KEYS: dict[str, Any] = {
    "search.searcher": "predictor-evolution",  # search_space.searchers.SEARCHERS: DCSOD's searcher before the key
    "noise.protocol": "scratch",  # fig-4.3 trained every objective from scratch before the thesis's fine-tunes
    "noise.finetune_epochs": 5,
    "noise.finetune_lr": 0.001,
    "landscape.loss": "ce",  # fig-4.5 measured both networks under cross-entropy before `own`
    "sa_steps": 10,  # text VAE: SA-VAE's settings (used only by the `sa` posterior)
    "sa_lr": 0.1,
    "downstream": "logistic",  # text VAE: Yelp's label probe before the eq. 2.19 fine-tune option
    "finetune_steps": 300,
    "bow": [True],  # dialog CVAE: the bag-of-words loss was always on before the bow axis
}


def _is_added_default(dotted: str, value: Any) -> bool:
    return any((dotted == key or dotted.endswith(f".{key}")) and value == default
               for key, default in ADDED_KEYS.items())


def comparable(config: Any, stored: Any, prefix: str = "") -> Any:
    """``config`` as the run directory compares it with the ``stored`` settings: without the :data:`ADDED_KEYS`
    that ``stored`` lacks and ``config`` holds at their old default, so adding a key never orphans a run dir."""
    if not (isinstance(config, dict) and isinstance(stored, dict)):
        return config
    return {key: comparable(value, stored.get(key), f"{prefix}{key}.") for key, value in config.items()
            if key in stored or not _is_added_default(f"{prefix}{key}", value)}


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "(root)"


class RunDir:
    """A run directory and its manifest. Use :meth:`open`."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike, config: dict, create: bool = True,
             tracking_uri: str | None = None) -> RunDir | None:
        """Open ``path`` for ``config``: a new directory is created with a fresh manifest; an existing run
        must have been started with the same settings (else :class:`RunDirError` naming the first differing key;
        a key added since, at its old default, is no difference: :data:`ADDED_KEYS`).
        ``create=False`` only checks: it returns None instead of creating anything. Either way an existing
        directory is locked for this process (:func:`hold_lock`): a second job on it is refused.
        ``tracking_uri``: the MLflow store the run records into, kept in the manifest; a rerun must name the same
        one (a restored Tune stage keeps the callbacks, and so the store, it was started with)."""
        path = Path(path).resolve()
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path} is a file, not a run directory; choose another --output")
        manifest_path = path / MANIFEST
        if create or path.exists():
            hold_lock(path)
        if manifest_path.exists():
            try:
                manifest = read_json(manifest_path)
            except (OSError, json.JSONDecodeError) as err:
                raise RunDirError(f"{manifest_path}: unreadable manifest ({err})") from None
            stored = manifest.get("config")
            wanted = fingerprint(comparable(config, stored))
            if fingerprint(stored) != wanted:
                key = _first_difference(json.loads(fingerprint(stored)), json.loads(wanted))
                raise RunDirError(f"{path} holds a run with other settings (first difference: {key}); "
                                  "rerun with the same preset and --set values, or choose another --output")
            run = cls(path, manifest)
            known = manifest.get("tracking_uri")
            if tracking_uri is not None and known is not None and known != tracking_uri:
                raise RunDirError(f"{path} records into the MLflow store {known}; rerun with --tracking-uri "
                                  f"{known} (or MLFLOW_TRACKING_URI), or choose another --output")
            if tracking_uri is not None and known is None and create:
                run.note(tracking_uri=tracking_uri)
            return run
        if path.exists() and any(p for p in path.iterdir() if not p.name.startswith(".") and p.name != JOB_STORE):
            raise RunDirError(f"{path} exists, is not empty and has no {MANIFEST}; choose another --output")
        if not create:
            return None
        run = cls(path, {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "uid": run_uid(path),
                         "config": config, "stages": {}, **({"tracking_uri": tracking_uri} if tracking_uri else {})})
        run._save()
        return run

    @property
    def uid(self) -> str:
        """:func:`run_uid` of this directory."""
        return run_uid(self.path)

    def done(self, stage: str) -> bool:
        return stage in self.manifest["stages"]

    def info(self, stage: str) -> dict:
        return self.manifest["stages"][stage]

    def finish(self, stage: str, **info: Any) -> None:
        """Mark ``stage`` finished (after its outputs are written) with ``info`` (JSON-serialisable)."""
        self.manifest["stages"][stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
        self._save()

    def note(self, **values: Any) -> None:
        """Store run-level facts (e.g. ``total_seconds``) in the manifest."""
        self.manifest.update(values)
        self._save()

    def _save(self) -> None:
        write_json(self.path / MANIFEST, self.manifest, sort_keys=False)  # stages in the order they finished

    def __truediv__(self, name: str) -> Path:
        return self.path / name
