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

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import fingerprint

MANIFEST = "manifest.json"
RUN_UID_FILE = ".run_uid"


class RunDirError(ValueError):
    """The directory holds a different run (other settings) or an unreadable manifest."""


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
    def open(cls, path: str | os.PathLike, config: dict, create: bool = True) -> RunDir | None:
        """Open ``path`` for ``config``: a new directory is created with a fresh manifest; an existing run
        must have been started with the same settings (else :class:`RunDirError` naming the first differing key).
        ``create=False`` only checks: it returns None instead of creating anything."""
        path = Path(path).resolve()
        manifest_path = path / MANIFEST
        if manifest_path.exists():
            try:
                manifest = read_json(manifest_path)
            except (OSError, json.JSONDecodeError) as err:
                raise RunDirError(f"{manifest_path}: unreadable manifest ({err})") from None
            if fingerprint(manifest.get("config")) != fingerprint(config):
                key = _first_difference(json.loads(fingerprint(manifest.get("config"))),
                                        json.loads(fingerprint(config)))
                raise RunDirError(f"{path} holds a run with other settings (first difference: {key}); "
                                  "rerun with the same preset and --set values, or choose another --output")
            return cls(path, manifest)
        if path.exists() and any(p for p in path.iterdir() if not p.name.startswith(".")):
            raise RunDirError(f"{path} exists, is not empty and has no {MANIFEST}; choose another --output")
        if not create:
            return None
        run = cls(path, {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "uid": run_uid(path),
                         "config": config, "stages": {}})
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
