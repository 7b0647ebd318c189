"""DCSOD's driver-side tracking of candidate evaluations: ``history.parquet`` and one MLflow run per candidate.

Trials never touch a store. They report ``arch_hash``, ``genotype``, ``seed`` and their metrics through
``tune.report``; :class:`MLflowHistoryCallback`, running in the Tune driver, turns every completed trial
into exactly one MLflow run (:class:`pipelines.common.mlflow_runs.MLflowRecorder`, found again by its key tag) and
one row of :class:`HistoryStore` (a :class:`pipelines.common.journal.JournaledTable`), keyed by
``(arch_hash, stage, iteration, seed)``. A Tune run that is restored and re-reports a trial, or a driver
that crashed between creating the MLflow run and writing the row, neither duplicates the run nor the row.

>>> cb = MLflowHistoryCallback("out", "dcsod-digits", stage="warmup")        # doctest: +SKIP
>>> tune.Tuner(trainable, run_config=tune.RunConfig(callbacks=[cb])).fit()   # doctest: +SKIP
>>> HistoryStore("out/history.parquet").read()                               # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
from ray.tune import Callback

from pipelines.common.journal import JournaledTable
from pipelines.common.mlflow_runs import MLflowRecorder, one_line

log = logging.getLogger(__name__)

#: The fixed columns of ``history.parquet`` and their dtypes (``str`` columns never hold nulls; ``lineage``:
#: :class:`trainables.image.lineage.Lineage` as a string, "" for rows recorded before it existed). Every other
#: metric the trainer reports for the configured scores (:func:`trainables.image.ood.metric_names`, e.g.
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
    "lineage": str,
}
KEY_COLUMNS = ("arch_hash", "stage", "iteration", "seed")
REQUIRED_COLUMNS = (*KEY_COLUMNS, "genotype")
#: History stages: the pipeline's (``compare``: report.md's per-seed comparison retrains), and the experiments'
#: (``retrain-plain`` / ``retrain-outliers``: final-budget retrains without / with auxiliary outliers; ``retrain``:
#: with the method's own objective; ``noise``: the noise study's trainings, iteration = objective index).
STAGES = ("warmup", "distill", "search", "final", "compare", "retrain-plain", "retrain-outliers", "retrain", "noise")

Key = tuple[str, str, int, int]


# --- history.parquet ------------------------------------------------------------------------------
def is_metric(name: str) -> bool:
    """A metric column: ``train_seconds`` or a name of :func:`trainables.image.ood.metric_names` with a registered
    score."""
    from trainables.image.ood import is_metric_name

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
                         "and the metrics of trainables.image.ood.metric_names")
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
    out["lineage"] = str(row.get("lineage") or "")
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """:data:`HISTORY_COLUMNS` first with their dtypes (missing ones added empty), extra metrics after as float64."""
    extra = [c for c in df.columns if c not in HISTORY_COLUMNS]
    df = df.reindex(columns=[*HISTORY_COLUMNS, *extra])
    df["lineage"] = df["lineage"].astype(object).fillna("")  # rows journaled before the column existed
    return df.astype({**HISTORY_COLUMNS, **{c: "float64" for c in extra}}).reset_index(drop=True)


class HistoryStore(JournaledTable):
    """``history.parquet``: one row per completed candidate evaluation, unique by :data:`KEY_COLUMNS`, with the
    columns of :data:`HISTORY_COLUMNS` and every extra metric column (:func:`normalize_row`). O(1) per recorded
    row; see :class:`pipelines.common.journal.JournaledTable` for the journal and its compaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, key=row_key, normalize=normalize_row, typed=_typed)

    def run_id(self, key: Key) -> str | None:
        """The ``mlflow_run_id`` stored for ``key``, or None if the key is not stored."""
        row = self.get(key)
        return None if row is None else str(row["mlflow_run_id"])


def row_key(row: Mapping[str, Any]) -> Key:
    """``(arch_hash, stage, iteration, seed)`` of a history row."""
    return str(row["arch_hash"]), str(row["stage"]), int(row["iteration"]), int(row["seed"])


def _genotype_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "to_json"):
        return value.to_json()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def stopped_early(result: Mapping[str, Any]) -> bool:
    """Whether a trial's last result is a per-epoch report before its last epoch (a scheduler stopped it)."""
    try:
        return int(result["epoch"]) < int(result["epochs"])
    except (KeyError, TypeError, ValueError):
        return False


def curve_metrics(result: Mapping[str, Any]) -> list:
    """MLflow metrics, one per epoch (``step`` = epoch, timestamp = when the epoch ended), from a result's
    ``epoch_curve`` (JSON list of per-epoch entries); [] without one. Non-numbers and NaN are skipped."""
    from mlflow.entities import Metric

    try:
        curve = json.loads(result.get("epoch_curve") or "[]")
    except (TypeError, ValueError):
        return []
    clock = _seconds(result, "started_at") or time.time()
    out = []
    for entry in curve:
        clock += float(entry.get("epoch_seconds") or 0.0)
        for name, value in entry.items():
            if name in ("epoch", "epochs") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                out.append(Metric(name, float(value), int(1000 * clock), int(entry["epoch"])))
    return out


def _seconds(result: Mapping[str, Any], name: str) -> float | None:
    """``result[name]`` as Unix seconds, or None when absent or not a finite number."""
    try:
        x = float(result.get(name))
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


class MLflowHistoryCallback(MLflowRecorder, Callback):
    """Ray Tune callback: one MLflow run and one ``history.parquet`` row per completed trial.

    Args:
        output_dir: run directory; the history goes to ``output_dir/history.parquet``.
        experiment_name: MLflow experiment (created if missing), e.g. ``dcsod-digits``.
        stage, iteration: the part of the key fixed by the driver (``warmup``, ``distill``, ...).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or MLflow's default.
        extra_tags: tags added to every run.
        log_genotype_artifact: also store the genotype as artifact ``genotype.json`` (it is always
            stored as the tag ``genotype``, so ``tags.genotype LIKE '%sep_conv_3x3%'`` finds it).
        label: the first part of each run's name ``<label>/<arch_hash>`` (default ``stage``, or
            ``stage-iteration`` for iterations > 0; a pipeline passes its stage name, e.g. ``distill-2``).
        seed_in_name: append ``/seed<n>`` to run names (stages that train each architecture once per seed).

    A run starts and ends when its training did (the trial's ``started_at``/``finished_at``, Unix seconds;
    now where a result lacks them).

    Trials report ``arch_hash``, ``genotype`` (JSON), ``seed`` and their metrics (every name of
    :func:`trainables.image.ood.metric_names` and ``train_seconds``: all become history columns and MLflow
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
        label: str | None = None,
        seed_in_name: bool = False,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {', '.join(STAGES)}, got {stage!r}")
        super().__init__(output_dir, experiment_name, tracking_uri, extra_tags)
        self.history = HistoryStore(os.path.join(output_dir, "history.parquet"))
        self.stage = stage
        self.iteration = _as_int("iteration", iteration)
        self.log_genotype_artifact = log_genotype_artifact
        self.label = label or (stage if self.iteration == 0 else f"{stage}-{self.iteration}")
        self.seed_in_name = seed_in_name

    def setup(self, **info) -> None:
        from pipelines.common.mlflow_runs import check_tracking_uri

        check_tracking_uri(self.tracking_uri)
        _ = self.experiment_id  # create or fetch the experiment before the first trial starts

    def on_experiment_end(self, trials: list, **info) -> None:
        self.history.compact()

    # --- keys and lookups ---------------------------------------------------------------------------
    def _identity(self, result: Mapping, config: Mapping, trial_id: str, strict: bool) -> tuple[Key, str | None]:
        """``(key, genotype_json)`` of a trial from its last result, falling back to its config."""

        def pick(name):
            return result.get(name, config.get(name))

        genotype = _genotype_json(pick("genotype"))
        arch_hash, seed = pick("arch_hash"), pick("seed")
        if arch_hash is None and genotype is not None:
            try:
                from search_space import arch_hash_of

                arch_hash = arch_hash_of(genotype)
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

    # --- hooks --------------------------------------------------------------------------------------
    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Record a completed trial once: MLflow run first (or the one found by its key tag), then the row.

        A trial that completed but reports a non-empty ``error`` (e.g. ``trainables.image.tune_trainable`` reports a
        diverged candidate instead of raising, so Tune does not retry it) is recorded like a failed trial."""
        result = trial.last_result or {}
        if result.get("error"):
            self._record_failure(trial, one_line(str(result["error"])))
            return
        if stopped_early(result):
            self._record_stopped(trial, result)
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
        row = normalize_row({**metrics, **dict(zip(KEY_COLUMNS, key)), "genotype": genotype,
                             "lineage": result.get("lineage")})
        done = [r for r in self.find_runs(key) if r.info.status != "FAILED"]
        if done and done[0].info.status == "FINISHED":
            run_id = done[0].info.run_id
        else:
            run_id = done[0].info.run_id if done else self._create_run(trial_id, key, genotype,
                                                                       start_time=_seconds(result, "started_at"))
            if before_finish is None:
                self._log_run(run_id, key, result)
            else:  # metrics first: before_finish may end the run (mlflow.start_run's context does)
                self._log_run(run_id, key, result, status=None)
                before_finish(run_id)
                self.terminate(run_id, "FINISHED")
        self.history.append({**row, "mlflow_run_id": run_id})
        return run_id

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """Record a failed trial as one MLflow run with status FAILED and tag ``error``; no history row."""
        self._record_failure(trial, self.error_message(trial))

    def _record_failure(self, trial, reason: str) -> None:
        key, genotype = self._identity(trial.last_result or {}, trial.config or {}, str(trial.trial_id), strict=False)
        if any(r.info.status == "FAILED" for r in self.find_runs(key)):
            return
        result = trial.last_result or {}
        run_id = self._create_run(str(trial.trial_id), key, genotype, error=reason,
                                  start_time=_seconds(result, "started_at"))
        self._log_run(run_id, key, result, status="FAILED")

    def _record_stopped(self, trial, result: Mapping[str, Any]) -> None:
        """A trial a scheduler stopped early: one KILLED MLflow run with its last epoch's metrics and the tag
        ``stopped_early``; no history row (its metrics are not at the stage's budget)."""
        key, genotype = self._identity(result, trial.config or {}, str(trial.trial_id), strict=False)
        if any(r.info.status == "KILLED" for r in self.find_runs(key)):
            return
        why = f"stopped by the scheduler after epoch {result['epoch']} of {result['epochs']}"
        run_id = self._create_run(str(trial.trial_id), key, genotype, start_time=_seconds(result, "started_at"))
        self.client.set_tag(run_id, "stopped_early", why)
        self._log_run(run_id, key, result, status="KILLED")

    # --- MLflow writes ------------------------------------------------------------------------------
    def run_name(self, key: Key) -> str:
        """``<label>/<arch_hash>`` (``/seed<n>`` appended with ``seed_in_name``)."""
        return f"{self.label}/{key[0]}" + (f"/seed{key[3]}" if self.seed_in_name else "")

    def _create_run(self, trial_id: str, key: Key, genotype: str | None, error: str | None = None,
                    start_time: float | None = None) -> str:
        tags = {"dcsod.stage": self.stage, "arch_hash": key[0]}
        if trial_id:
            tags["ray.trial_id"] = trial_id
        if genotype is not None:
            tags["genotype"] = genotype
        if error is not None:
            tags["error"] = error
        run_id = self.create_run(key, run_name=self.run_name(key), tags=tags, start_time=start_time)
        if genotype is not None and self.log_genotype_artifact:
            try:
                self.client.log_text(run_id, genotype, "genotype.json")
            except Exception as e:  # any failure: the genotype tag suffices
                log.warning("genotype.json not logged for run %s: %s", run_id, one_line(e))
        return run_id

    def _log_run(self, run_id: str, key: Key, result: Mapping[str, Any], status: str | None = "FINISHED") -> None:
        """Log the key as params, the metrics and the tag ``lineage``; then end the run with ``status`` (None:
        leave it open)."""
        from mlflow.entities import Metric, Param, RunTag

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
        metrics += curve_metrics(result)
        for i in range(0, max(1, len(metrics)), 1000):
            tags = [RunTag("lineage", str(result["lineage"]))] if i == 0 and result.get("lineage") else []
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000], params=params if i == 0 else [], tags=tags)
        if status is not None:
            self.terminate(run_id, status, end_time=_seconds(result, "finished_at"))
