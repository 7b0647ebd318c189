"""What the genotype searchers (:mod:`search_space.baseline_searchers`, :mod:`search_space.searcher`) share to store
their state as plain JSON — never pickle, so reading a checkpoint back (``Tuner.restore``) cannot run code.

Ray-free and importing nothing of ``search_space``, so both searcher modules import it without a cycle.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

#: Version of the JSON state every genotype searcher writes.
STATE_FORMAT = 1


def state_header(searcher, settings: dict) -> dict[str, Any]:
    """The keys every searcher state starts with: ``format``, ``searcher`` (class name), ``metric``, ``mode``,
    ``space`` (its fields), ``settings`` (as JSON would give them back), ``max_concurrent``, ``rng`` (the numpy
    Generator's state)."""
    import dataclasses

    return {"format": STATE_FORMAT, "searcher": type(searcher).__name__, "metric": searcher.metric,
            "mode": searcher.mode, "space": dataclasses.asdict(searcher.space),
            "settings": json.loads(json.dumps(settings)), "max_concurrent": searcher.max_concurrent,
            "rng": searcher.rng.bit_generator.state}


def check_mode(mode: str | None) -> None:
    if mode not in (None, "max", "min"):
        raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")


def one_line(err: BaseException) -> str:
    """``err`` as one line: ``missing field 'x'`` for a ``KeyError``, else ``Type: first line``."""
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def finite(value: Any) -> bool:
    """Whether ``value`` converts to a finite float."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def write_json_atomic(path: str | os.PathLike, state: Any) -> None:
    """Write ``state`` as JSON (no NaN/inf) to ``path`` atomically: a temporary file in the same directory,
    fsync, then ``os.replace``; a failure leaves ``path`` as it was and no temporary file behind."""
    path = os.fspath(path)
    text = json.dumps(state, allow_nan=False)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json_state(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; anything that is not UTF-8 JSON (a pickle, a truncated file) raises a one-line
    ``ValueError`` naming the file. Nothing is ever unpickled."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: absurd nesting
        raise ValueError(f"{os.fspath(path)}: not a JSON searcher state ({one_line(err)})") from None
