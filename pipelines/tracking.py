"""Driver-side tracking of candidate evaluations: ``history.parquet`` and one MLflow run per candidate.

Trials never touch a store. They report ``arch_hash``, ``genotype``, ``seed`` and their metrics through
``tune.report``; :class:`MLflowHistoryCallback`, running in the Tune driver, turns every completed trial
into exactly one MLflow run and one row of :class:`HistoryStore`, keyed by
``(arch_hash, stage, iteration, seed)``. A Tune run that is restored and re-reports a trial, or a driver
that crashed between creating the MLflow run and writing the row, neither duplicates the run nor the row:
the run carries the tag ``dcsod.key`` and is looked up before a new one is created.

>>> cb = MLflowHistoryCallback("out", "dcsod-digits", stage="warmup")        # doctest: +SKIP
>>> tune.Tuner(trainable, run_config=tune.RunConfig(callbacks=[cb])).fit()   # doctest: +SKIP
>>> HistoryStore("out/history.parquet").read()                               # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from .rundir import atomic_write

log = logging.getLogger(__name__)

#: Columns of ``history.parquet`` and their dtypes (``str`` columns never hold nulls).
HISTORY_COLUMNS: dict[str, Any] = {
    "arch_hash": str,
    "genotype": str,
    "stage": str,
    "iteration": "int64",
    "seed": "int64",
    "auroc_msp": "float64",
    "auroc_energy": "float64",
    "auroc_maha": "float64",
    "fpr95_msp": "float64",
    "id_acc": "float64",
    "train_seconds": "float64",
    "mlflow_run_id": str,
}
KEY_COLUMNS = ("arch_hash", "stage", "iteration", "seed")
REQUIRED_COLUMNS = (*KEY_COLUMNS, "genotype")
STAGES = ("warmup", "distill", "search", "final")
FRACTION_COLUMNS = ("auroc_msp", "auroc_energy", "auroc_maha", "fpr95_msp", "id_acc")
METRIC_COLUMNS = (*FRACTION_COLUMNS, "train_seconds")
#: Result keys logged as MLflow metrics besides METRIC_COLUMNS (all OOD scores the trainer reports).
MLFLOW_METRIC_PREFIXES = ("auroc_", "aupr_", "fpr95_")
KEY_TAG = "dcsod.key"

Key = tuple[str, str, int, int]


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached; raised before any trial starts."""


# --- history.parquet ------------------------------------------------------------------------------
def empty_history() -> pd.DataFrame:
    """A history frame with no rows and the dtypes of :data:`HISTORY_COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in HISTORY_COLUMNS.items()})


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return int(value)


def _as_metric(name: str, value: Any) -> float:
    """Float metric; None (not computed) becomes NaN; fractions must lie in [0, 1]."""
    if value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if name in FRACTION_COLUMNS and not math.isnan(x) and not 0.0 <= x <= 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1], got {x!r}")
    return x


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one history row and coerce it to :data:`HISTORY_COLUMNS` (one-line ``ValueError``)."""
    unknown = sorted(set(row) - set(HISTORY_COLUMNS))
    if unknown:
        raise ValueError(f"history row: unknown column(s) {unknown}; valid: {', '.join(HISTORY_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"history row: missing required column(s) {missing}")
    out: dict[str, Any] = {}
    for col in ("arch_hash", "genotype", "stage"):
        if not isinstance(row[col], str) or not row[col]:
            raise ValueError(f"{col}: expected a non-empty string, got {row[col]!r}")
        out[col] = row[col]
    if out["stage"] not in STAGES:
        raise ValueError(f"stage: expected one of {', '.join(STAGES)}, got {out['stage']!r}")
    try:
        json.loads(out["genotype"])
    except json.JSONDecodeError as e:
        raise ValueError(f"genotype: expected a JSON string ({e})") from None
    out["iteration"] = _as_int("iteration", row["iteration"])
    out["seed"] = _as_int("seed", row["seed"])
    for col in METRIC_COLUMNS:
        out[col] = _as_metric(col, row.get(col))
    out["mlflow_run_id"] = str(row.get("mlflow_run_id") or "")
    return out


class HistoryStore:
    """``history.parquet``: one row per completed candidate evaluation, unique by :data:`KEY_COLUMNS`.

    Single writer (the Tune driver). Every write goes to a temporary file in the same directory and is
    moved into place with ``os.replace``, so readers and a crash never see a partial table. The last table
    read or written is kept in memory and reused while the file's (mtime, size) is unchanged, so recording a
    trial does not parse the whole file again.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int], pd.DataFrame] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}

    def _signature(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def read(self) -> pd.DataFrame:
        """The table with :data:`HISTORY_COLUMNS` dtypes; empty if the file does not exist yet."""
        if not self.path.exists():
            return empty_history()
        signature = self._signature()
        if self._cache is None or self._cache[0] != signature:
            df = pd.read_parquet(self.path)
            self._cache = signature, df[list(HISTORY_COLUMNS)].astype(HISTORY_COLUMNS).reset_index(drop=True)
        return self._cache[1].copy()

    def keys(self) -> set[Key]:
        """``{(arch_hash, stage, iteration, seed), ...}`` of the stored rows."""
        return self.keys_of(self.read())

    def append(self, row: Mapping[str, Any]) -> bool:
        """Validate and append one row atomically; a row whose key is already stored is rejected
        (nothing is written) and ``False`` returned. Missing metrics are stored as NaN."""
        new = normalize_row(row)
        current = self.read()
        if (new["arch_hash"], new["stage"], new["iteration"], new["seed"]) in self.keys_of(current):
            return False
        frame = pd.DataFrame([new]).astype(HISTORY_COLUMNS)
        self._write(frame if current.empty else pd.concat([current, frame], ignore_index=True))
        return True

    @staticmethod
    def keys_of(df: pd.DataFrame) -> set[Key]:
        """Key tuples of the rows of a history frame."""
        return {(str(a), str(s), int(i), int(sd)) for a, s, i, sd in df[list(KEY_COLUMNS)].itertuples(index=False)}

    def _write(self, df: pd.DataFrame) -> None:
        atomic_write(self.path, lambda tmp: df.to_parquet(tmp, index=False))
        self._cache = self._signature(), df[list(HISTORY_COLUMNS)].astype(HISTORY_COLUMNS).reset_index(drop=True)


# --- MLflow -----------------------------------------------------------------------------------------
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
                raise TrackingUnavailable(f"MLflow tracking server {uri} is unavailable (HTTP {e.code})") from None
        except (urllib.error.URLError, OSError) as e:
            reason = " ".join(str(getattr(e, "reason", e)).split())
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it or set MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if str(db) != ":memory:" and not db.parent.is_dir():
            raise TrackingUnavailable(f"MLflow tracking store {uri}: directory {db.parent} does not exist")
    return uri


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


def _genotype_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "to_json"):
        return value.to_json()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class MLflowHistoryCallback(Callback):
    """Ray Tune callback: one MLflow run and one ``history.parquet`` row per completed trial.

    Args:
        output_dir: run directory; the history goes to ``output_dir/history.parquet``.
        experiment_name: MLflow experiment (created if missing), e.g. ``dcsod-digits``.
        stage, iteration: the part of the key fixed by the driver (``warmup``, ``distill``, ...).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or MLflow's default.
        extra_tags: tags added to every run.
        log_genotype_artifact: also store the genotype as artifact ``genotype.json`` (it is always
            stored as the tag ``genotype``).

    Trials report ``arch_hash``, ``genotype`` (JSON), ``seed`` and the metrics of
    :data:`METRIC_COLUMNS`; ``genotype``, ``arch_hash`` and ``seed`` may instead come from
    ``trial.config``. The tracking store is checked in the constructor and again in ``setup``, so an
    unreachable server raises :class:`TrackingUnavailable` before any trial starts.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        experiment_name: str,
        stage: str,
        iteration: int = 0,
        tracking_uri: str | None = None,
        extra_tags: Mapping[str, Any] | None = None,
        log_genotype_artifact: bool = True,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {', '.join(STAGES)}, got {stage!r}")
        self.history = HistoryStore(Path(output_dir) / "history.parquet")
        self.experiment_name = experiment_name
        self.stage = stage
        self.iteration = _as_int("iteration", iteration)
        self.tracking_uri = check_tracking_uri(tracking_uri)
        self.extra_tags = {str(k): str(v) for k, v in (extra_tags or {}).items()}
        self.log_genotype_artifact = log_genotype_artifact
        self._client = None
        self._experiment_id: str | None = None

    # Tune pickles the run config (callbacks included) for Tuner.restore; the client is rebuilt lazily.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def setup(self, **info) -> None:
        check_tracking_uri(self.tracking_uri)
        _ = self.experiment_id  # create or fetch the experiment before the first trial starts

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
                    self._experiment_id = self.client.create_experiment(self.experiment_name)
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

    # --- keys and lookups ---------------------------------------------------------------------------
    def _identity(self, result: Mapping, config: Mapping, trial_id: str, strict: bool) -> tuple[Key, str | None]:
        """``(key, genotype_json)`` of a trial from its last result, falling back to its config."""

        def pick(name):
            return result.get(name, config.get(name))

        genotype = _genotype_json(pick("genotype"))
        arch_hash, seed = pick("arch_hash"), pick("seed")
        if arch_hash is None and genotype is not None:
            try:
                from search_space import Genotype

                arch_hash = Genotype.from_dict(json.loads(genotype)).arch_hash
            except ValueError:
                if strict:
                    raise
        if strict and (arch_hash is None or seed is None or genotype is None):
            missing = [n for n, v in (("arch_hash", arch_hash), ("genotype", genotype), ("seed", seed)) if v is None]
            raise ValueError(f"trial {trial_id}: result and config lack {', '.join(missing)}")
        key = (
            str(arch_hash if arch_hash is not None else f"trial-{trial_id}"),
            self.stage,
            self.iteration,
            _as_int("seed", seed) if seed is not None else -1,
        )
        return key, genotype

    @staticmethod
    def key_tag(key: Key) -> str:
        """``<arch_hash>/<stage>/<iteration>/<seed>``, the value of the ``dcsod.key`` run tag."""
        return "/".join(map(str, key))

    def find_runs(self, key: Key) -> list:
        """MLflow runs of this experiment tagged with ``key`` (any status)."""
        return list(
            self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{self.key_tag(key)}'", max_results=100
            )
        )

    # --- hooks --------------------------------------------------------------------------------------
    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Record a completed trial once: MLflow run first (or the one found by its key tag), then the row.

        A trial that completed but reports a non-empty ``error`` (e.g. ``trainables.tune_trainable`` reports a
        diverged candidate instead of raising, so Tune does not retry it) is recorded like a failed trial."""
        result = trial.last_result or {}
        if result.get("error"):
            self._record_failure(trial, _one_line(str(result["error"])))
            return
        self.record(result, trial.config or {}, str(trial.trial_id))

    def record(self, result: Mapping[str, Any], config: Mapping[str, Any] | None = None, trial_id: str = "",
               before_finish=None) -> str:
        """Record one completed evaluation (a trial's last result, or e.g. the final retrain's metrics) and
        return its MLflow run id. Idempotent: a key already in the history returns the stored run id.
        ``before_finish(run_id)`` runs before a newly written run is marked FINISHED (e.g. to log a model), so
        a crash in it leaves an unfinished run that the next call completes."""
        key, genotype = self._identity(result, config or {}, trial_id, strict=True)
        stored = self.history.read()
        match = stored[(stored["arch_hash"] == key[0]) & (stored["stage"] == key[1])
                       & (stored["iteration"] == key[2]) & (stored["seed"] == key[3])]
        if len(match):
            return str(match["mlflow_run_id"].iloc[0])
        if not any(result.get(c) is not None for c in METRIC_COLUMNS):
            raise ValueError(f"trial {trial_id} completed without reporting any of {', '.join(METRIC_COLUMNS)}")
        row = normalize_row({**{c: result.get(c) for c in METRIC_COLUMNS}, **dict(zip(KEY_COLUMNS, key)),
                             "genotype": genotype})
        done = [r for r in self.find_runs(key) if r.info.status != "FAILED"]
        if done and done[0].info.status == "FINISHED":
            run_id = done[0].info.run_id
        else:
            run_id = done[0].info.run_id if done else self._create_run(trial_id, key, genotype)
            if before_finish is None:
                self._log_run(run_id, key, result)
            else:  # metrics first: before_finish may end the run (mlflow.start_run's context does)
                self._log_run(run_id, key, result, status=None)
                before_finish(run_id)
                with no_run_urls():
                    self.client.set_terminated(run_id, status="FINISHED")
        self.history.append({**row, "mlflow_run_id": run_id})
        return run_id

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """Record a failed trial as one MLflow run with status FAILED and tag ``error``; no history row."""
        self._record_failure(trial, self.error_message(trial))

    def _record_failure(self, trial, reason: str) -> None:
        key, genotype = self._identity(trial.last_result or {}, trial.config or {}, str(trial.trial_id), strict=False)
        if any(r.info.status == "FAILED" for r in self.find_runs(key)):
            return
        run_id = self._create_run(str(trial.trial_id), key, genotype, error=reason)
        self._log_run(run_id, key, trial.last_result or {}, status="FAILED")

    @staticmethod
    def error_message(trial) -> str:
        """One line: ``ExceptionType: message`` of the trial's last error.

        Read from the trial's local error files (written just before ``on_trial_error``); the copies in
        Tune's storage path are synced later, so ``trial.get_pickled_error()`` may not find them yet.
        """
        exc = None
        path = getattr(trial, "pickled_error_file", None)
        if path and os.path.exists(path):
            try:
                import cloudpickle

                with open(path, "rb") as f:
                    exc = cloudpickle.load(f)
            except Exception:  # noqa: BLE001  unreadable pickle: fall back to the text file
                exc = None
        if exc is not None:
            cause = getattr(exc, "cause", None) or exc
            lines = [ln for ln in str(cause).splitlines() if ln.strip()]
            return _one_line(f"{type(cause).__name__}: {lines[0] if lines else ''}")
        path = getattr(trial, "error_file", None)
        text = Path(path).read_text(errors="replace") if path and os.path.exists(path) else ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return _one_line(lines[-1]) if lines else "unknown error"

    # --- MLflow writes ------------------------------------------------------------------------------
    def _create_run(self, trial_id: str, key: Key, genotype: str | None, error: str | None = None) -> str:
        tags = {**self.extra_tags, KEY_TAG: self.key_tag(key), "dcsod.stage": self.stage, "arch_hash": key[0]}
        if trial_id:
            tags["ray.trial_id"] = trial_id
        if genotype is not None:
            tags["genotype"] = genotype
        if error is not None:
            tags["error"] = error
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=key[0])
        if genotype is not None and self.log_genotype_artifact:
            try:
                self.client.log_text(run.info.run_id, genotype, "genotype.json")
            except Exception as e:  # noqa: BLE001  the genotype tag suffices; not fatal
                log.warning("genotype.json not logged for run %s: %s", run.info.run_id, _one_line(e))
        return run.info.run_id

    def _log_run(self, run_id: str, key: Key, result: Mapping[str, Any], status: str | None = "FINISHED") -> None:
        """Log the key as params and the metrics; then end the run with ``status`` (None: leave it open)."""
        from mlflow.entities import Metric, Param

        now = int(1000 * time.time())
        params = [Param(n, str(v)) for n, v in zip(KEY_COLUMNS, key)]
        metrics = []
        for name, value in result.items():
            if name in METRIC_COLUMNS or name.startswith(MLFLOW_METRIC_PREFIXES):
                try:
                    x = float(value)
                except (TypeError, ValueError):
                    continue
                if not math.isnan(x):
                    metrics.append(Metric(name, x, now, 0))
        self.client.log_batch(run_id, metrics=metrics, params=params)
        if status is not None:
            with no_run_urls():
                self.client.set_terminated(run_id, status=status)


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
