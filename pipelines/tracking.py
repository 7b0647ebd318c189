"""Driver-side tracking of candidate evaluations: ``history.parquet`` and one MLflow run per candidate.

Trials never touch a store. They report ``arch_hash``, ``genotype``, ``seed`` and their metrics through
``tune.report``; :class:`MLflowHistoryCallback`, running in the Tune driver, turns every completed trial
into exactly one MLflow run and one row of :class:`HistoryStore`, keyed by
``(arch_hash, stage, iteration, seed)``. A Tune run that is restored and re-reports a trial, or a driver
that crashed between creating the MLflow run and writing the row, neither duplicates the run nor the row:
the run carries the tag ``dcsod.key`` (the run directory's :func:`pipelines.rundir.run_uid` and the key) and
is looked up before a new one is created. The run directory is part of the tag, so many run directories
share one tracking store without ever matching each other's runs.

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

from .rundir import atomic_write, run_uid

log = logging.getLogger(__name__)

#: The fixed columns of ``history.parquet`` and their dtypes (``str`` columns never hold nulls). Every other
#: metric the trainer reports for the configured scores (:func:`trainables.ood.metric_names`, e.g.
#: ``aupr_in_msp`` or ``auroc_knn``) is an extra float64 column after these.
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
KEY_TAG = "dcsod.key"
RUN_UID_TAG = "dcsod.run_uid"

Key = tuple[str, str, int, int]


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached; raised before any trial starts."""


# --- history.parquet ------------------------------------------------------------------------------
def is_metric(name: str) -> bool:
    """A metric column: ``train_seconds`` or a name of :func:`trainables.ood.metric_names` with a registered score."""
    from trainables.ood import is_metric_name

    return name == "train_seconds" or is_metric_name(name)


def metrics_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The metric entries of a trial result (see :func:`is_metric`)."""
    return {k: v for k, v in result.items() if is_metric(k)}


def empty_history() -> pd.DataFrame:
    """A history frame with no rows and the dtypes of :data:`HISTORY_COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in HISTORY_COLUMNS.items()})


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return int(value)


def _as_metric(name: str, value: Any) -> float:
    """Float metric; None (not computed) becomes NaN; everything but ``train_seconds`` must lie in [0, 1]."""
    if value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if name != "train_seconds" and not math.isnan(x) and not 0.0 <= x <= 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1], got {x!r}")
    return x


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one history row and coerce it to :data:`HISTORY_COLUMNS` plus its extra metric columns
    (one-line ``ValueError``)."""
    unknown = sorted(c for c in row if c not in HISTORY_COLUMNS and not is_metric(c))
    if unknown:
        raise ValueError(f"history row: unknown column(s) {unknown}; valid: {', '.join(HISTORY_COLUMNS)} "
                         "and the metrics of trainables.ood.metric_names")
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
    for col in [c for c in HISTORY_COLUMNS if is_metric(c)] + [c for c in row if c not in HISTORY_COLUMNS]:
        out[col] = _as_metric(col, row.get(col))
    out["mlflow_run_id"] = str(row.get("mlflow_run_id") or "")
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """:data:`HISTORY_COLUMNS` first with their dtypes (missing ones added empty), extra metrics after as float64."""
    extra = [c for c in df.columns if c not in HISTORY_COLUMNS]
    df = df.reindex(columns=[*HISTORY_COLUMNS, *extra])
    return df.astype({**HISTORY_COLUMNS, **{c: "float64" for c in extra}}).reset_index(drop=True)


class HistoryStore:
    """``history.parquet``: one row per completed candidate evaluation, unique by :data:`KEY_COLUMNS`.

    Single writer (the Tune driver), O(1) per recorded row: :meth:`append` writes one JSON line to the journal
    ``history.journal.jsonl`` beside the table (flushed and fsynced: a crash loses at most a torn last line,
    which is ignored) and keeps the keys in memory; :meth:`compact` merges the journal into the parquet file
    (written to a temporary file and moved into place, then the journal is removed) — the pipeline compacts at
    the end of every stage. :meth:`read` always returns table + journal, so readers of this class never see a
    difference; ``pd.read_parquet`` on the file sees the rows up to the last compaction.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.stem + ".journal.jsonl")
        self._table: tuple[tuple[int, int], pd.DataFrame] | None = None
        self._run_ids: dict[Key, str] | None = None  # key -> mlflow_run_id of every stored row

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_table": None, "_run_ids": None}

    def _parquet(self) -> pd.DataFrame:
        """The compacted table, parsed again only when the file's (mtime, size) changed."""
        if not self.path.exists():
            return empty_history()
        stat = self.path.stat()
        signature = stat.st_mtime_ns, stat.st_size
        if self._table is None or self._table[0] != signature:
            self._table = signature, _typed(pd.read_parquet(self.path))
        return self._table[1]

    def _journal_rows(self) -> list[dict]:
        if not self.journal.exists():
            return []
        rows = []
        with open(self.journal) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line from a crash mid-write: never acknowledged
                    break
        return rows

    def read(self) -> pd.DataFrame:
        """The table with :data:`HISTORY_COLUMNS` dtypes (extra metric columns after them); empty if nothing
        was recorded yet. Rows are in the order they were appended."""
        table = self._parquet()
        pending = self._journal_rows()
        if not pending:
            return table.copy()
        stored = self.keys_of(table)
        pending = [r for r in pending if self._key(r) not in stored]  # a crash mid-compaction: the table wins
        pending = list({self._key(r): r for r in reversed(pending)}.values())[::-1]  # first of duplicates
        if not pending:
            return table.copy()
        return _typed(pd.concat([table, pd.DataFrame(pending)], ignore_index=True) if len(table) else pd.DataFrame(pending))

    def keys(self) -> set[Key]:
        """``{(arch_hash, stage, iteration, seed), ...}`` of the stored rows."""
        return set(self._index())

    def run_id(self, key: Key) -> str | None:
        """The ``mlflow_run_id`` stored for ``key``, or None if the key is not stored."""
        return self._index().get(key)

    def _index(self) -> dict[Key, str]:
        if self._run_ids is None:
            df = self.read()
            self._run_ids = dict(zip(self.keys_of(df, ordered=True), df["mlflow_run_id"]))
        return self._run_ids

    @staticmethod
    def _key(row: Mapping[str, Any]) -> Key:
        return str(row["arch_hash"]), str(row["stage"]), int(row["iteration"]), int(row["seed"])

    def append(self, row: Mapping[str, Any]) -> bool:
        """Validate and record one row; a row whose key is already stored is rejected (nothing is written)
        and ``False`` returned. Missing metrics are stored as NaN."""
        new = normalize_row(row)
        key = self._key(new)
        index = self._index()
        if key in index:
            return False
        line = json.dumps(new, allow_nan=True) + "\n"
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        with open(self.journal, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        index[key] = new["mlflow_run_id"]
        return True

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (a write cut short by a crash) before appending after it."""
        if not self.journal.exists() or self.journal.stat().st_size == 0:
            return
        with open(self.journal, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # rare: only after a crash, so reading the whole file is fine
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)

    def compact(self) -> None:
        """Merge the journal into ``history.parquet`` (atomic replace), then remove the journal. Idempotent;
        a crash in between leaves both, and :meth:`read` drops the journal rows the table already holds."""
        if not self.journal.exists():
            return
        df = self.read()
        atomic_write(self.path, lambda tmp: df.to_parquet(tmp, index=False))
        stat = self.path.stat()
        self._table = (stat.st_mtime_ns, stat.st_size), df
        self.journal.unlink()

    @staticmethod
    def keys_of(df: pd.DataFrame, ordered: bool = False):
        """Key tuples of the rows of a history frame (a set; a list in row order with ``ordered``)."""
        keys = [(str(a), str(s), int(i), int(sd)) for a, s, i, sd in df[list(KEY_COLUMNS)].itertuples(index=False)]
        return keys if ordered else set(keys)


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

    Trials report ``arch_hash``, ``genotype`` (JSON), ``seed`` and their metrics (every name of
    :func:`trainables.ood.metric_names` and ``train_seconds``: all become history columns and MLflow
    metrics); ``genotype``, ``arch_hash`` and ``seed`` may instead come from
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
        self.run_uid = run_uid(output_dir)
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

    def on_experiment_end(self, trials: list, **info) -> None:
        self.history.compact()

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

    def key_tag(self, key: Key) -> str:
        """``<run_uid>/<arch_hash>/<stage>/<iteration>/<seed>``, the value of the ``dcsod.key`` run tag."""
        return "/".join(map(str, (self.run_uid, *key)))

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
        stored = self.history.run_id(key)
        if stored is not None:
            return stored
        metrics = {k: v for k, v in metrics_of(result).items() if v is not None}
        if not metrics:
            raise ValueError(f"trial {trial_id} completed without reporting a metric (id_acc, auroc_<score>, ...)")
        row = normalize_row({**metrics, **dict(zip(KEY_COLUMNS, key)), "genotype": genotype})
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
        tags = {**self.extra_tags, KEY_TAG: self.key_tag(key), RUN_UID_TAG: self.run_uid, "dcsod.stage": self.stage,
                "arch_hash": key[0]}
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
        for name, value in metrics_of(result).items():
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
