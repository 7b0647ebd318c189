"""Driver-side tracking of the dialog sweep: one ``results.parquet`` row and one MLflow run per training.

:class:`DialogRecorder` is a Ray Tune callback in the driver (trials never touch a store), built like the
text-VAE's ``TextVAERecorder``: when a trial ends it logs the MLflow run first (tagged with the row's key and
found again by it after a crash; params = the configuration, per-epoch metric histories, final metrics, tags
``status``/``error``, start and end = the training's) and then appends the row to :class:`ResultsTable` (a
:class:`pipelines.journal.JournaledTable`). A row's key is ``(schedule, posterior, seed)``; a trial recorded
again (after ``Tuner.restore``, or by :meth:`DialogRecorder.reconcile` from Tune's results) is recorded once.
The progress bar is the text-VAE's ``SweepProgress`` (rows carry ``elbo`` and ``ppl``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from trainables.beta_schedules import schedule_entry
from trainables.dialog_tune import TEST_METRICS

from .journal import JournaledTable
from .mlflow_runs import MLflowRecorder, check_tracking_uri, one_line
from .text_vae_tracking import SweepProgress, outcome, trial_identity, trial_times

log = logging.getLogger(__name__)

__all__ = ["DialogRecorder", "ResultsTable", "SweepProgress", "curve_points", "result_row", "run_name"]

#: Per-epoch keys kept for the learning curves and logged as MLflow metric histories (nats per response).
EPOCH_KEYS = ("beta", "k", "inner_steps", "train_rec", "train_kl", "train_bow", "train_act", "val_rec", "val_kl",
              "val_elbo", "val_rec_ppl", "val_mi")
HEAD_COLUMNS: dict[str, Any] = {"schedule": str, "posterior": str, "seed": "int64",
                                **{m: "float64" for m in TEST_METRICS}}
TAIL_COLUMNS: dict[str, Any] = {
    "val_elbo": "float64", "epochs_run": "int64", "beta_max": "float64", "cycles": "int64", "ratio": "float64",
    "monotonic_ratio": "float64", "k_max": "int64", "lr": "float64", "epochs": "int64", "act_knowledge": bool,
    "aggressive": bool, "train_seconds": "float64", "status": str, "error": str, "trial_id": str,
    "mlflow_run_id": str,
}


def run_name(config: Mapping[str, Any]) -> str:
    """``<schedule>-<posterior>-s<seed>``."""
    return f"{config['train']['schedule']}-{config['model']['posterior']}-s{config['train']['seed']}"


def trial_dirname(trial) -> str:
    """``<trial_id>-<run name>``: Tune's name and folder of a trial."""
    return f"{trial.trial_id}-{run_name(trial.config)}"


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def result_row(config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               error: str | None = None) -> dict[str, Any]:
    """One results row of a finished trial (its Tune config and last result); test metrics only if complete."""
    status, error = outcome(result, error)
    final = status == "complete"
    train, model = config["train"], config["model"]
    return {"schedule": train["schedule"], "posterior": model["posterior"], "seed": int(train["seed"]),
            **{m: _number(result.get(m)) if final else None for m in TEST_METRICS},
            "val_elbo": _number(result.get("val_elbo")), "epochs_run": int(result.get("epoch", 0) or 0),
            "beta_max": schedule_entry(train["schedule"], train.get("beta_max", 1.0))[1],
            **{k: train[k] for k in ("cycles", "ratio", "monotonic_ratio", "k_max", "lr", "epochs", "aggressive")},
            "act_knowledge": bool(model["act_knowledge"]), "train_seconds": _number(result.get("train_seconds")),
            "status": status, "error": error, "trial_id": str(trial_id)}


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check one row and coerce its values (one-line ``ValueError``)."""
    unknown = sorted(set(row) - {*HEAD_COLUMNS, *TAIL_COLUMNS})
    if unknown:
        raise ValueError(f"results row: unknown column(s) {unknown}")
    if row.get("status") not in ("complete", "stopped", "failed") or row.get("schedule") is None:
        raise ValueError(f"results row: needs a schedule and a status complete/stopped/failed, got {dict(row)}")
    out: dict[str, Any] = {}
    for col, dtype in {**HEAD_COLUMNS, **TAIL_COLUMNS}.items():
        value = row.get(col)
        if dtype == "float64":
            out[col] = _number(value)
        elif dtype == "int64":
            out[col] = int(value or 0)
        elif dtype is bool:
            out[col] = bool(value)
        else:
            out[col] = str(value or "")
    return out


def typed_results(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in order with their dtypes; rows sorted by posterior, schedule and seed."""
    df = df.reindex(columns=[*HEAD_COLUMNS, *TAIL_COLUMNS]).astype({**HEAD_COLUMNS, **TAIL_COLUMNS})
    return df.sort_values(["posterior", "schedule", "seed"], kind="stable").reset_index(drop=True)


def row_key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    return str(row["schedule"]), str(row["posterior"]), int(row.get("seed") or 0)


class ResultsTable(JournaledTable):
    """``results.parquet``: one row per configuration and seed, unique by :func:`row_key`."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, key=row_key, normalize=normalize_row, typed=typed_results)


def epoch_point(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The learning-curve point of one reported result (None without an epoch, or for a failure)."""
    epoch = _number(result.get("epoch"))
    if epoch is None or result.get("error"):
        return None
    return {"epoch": int(epoch), **{k: _number(result.get(k)) for k in EPOCH_KEYS}}


def curve_points(results: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per-epoch points of a trial from its reported results, by epoch (the last report of an epoch wins)."""
    points: dict[int, dict[str, Any]] = {}
    for result in ([] if results is None else results.to_dict("records")):
        if (point := epoch_point(result)) is not None:
            points[point["epoch"]] = point
    return [points[e] for e in sorted(points)]


class DialogRecorder(MLflowRecorder, Callback):
    """Ray Tune callback: one MLflow run and one :class:`ResultsTable` row per finished trial.

    ``output_dir``: the run directory (rows go to ``results.parquet``); ``experiment_name``: e.g. ``dialog-swda``;
    ``extra_tags``: added to every run (e.g. the parent run's ``RunTree.nest_under``); ``progress``: opened in
    ``setup`` and ticked by every recorded row."""

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, tracking_uri: str | None = None,
                 extra_tags: Mapping[str, Any] | None = None, progress: SweepProgress | None = None) -> None:
        super().__init__(output_dir, experiment_name, tracking_uri, extra_tags)
        self.progress = progress
        self.table = ResultsTable(Path(output_dir) / "results.parquet")
        self._points: dict[str, dict[int, dict[str, Any]]] = {}

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_points": {}}

    def setup(self, **info) -> None:
        check_tracking_uri(self.tracking_uri)
        _ = self.experiment_id
        if self.progress is not None:
            self.progress.start(self.table.read().to_dict("records"))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if (point := epoch_point(result)) is not None:
            self._points.setdefault(str(trial.trial_id), {})[point["epoch"]] = point

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.record(trial.config, trial.last_result or {}, str(trial.trial_id), self._curve(trial))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.record(trial.config, trial.last_result or {}, str(trial.trial_id), self._curve(trial),
                    error=self.error_message(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self.table.compact()
        if self.progress is not None:
            self.progress.close()

    def _curve(self, trial) -> list[dict[str, Any]]:
        points = self._points.pop(str(trial.trial_id), {})
        return [points[e] for e in sorted(points)]

    def record(self, config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               curve: list[dict[str, Any]] | None = None, error: str | None = None) -> str:
        """Record one finished trial once; returns its MLflow run id (the stored one if the key is known)."""
        row = result_row(config, result, trial_id, error)
        stored = self.table.get(self.table.key(row))
        if stored is not None:
            return str(stored["mlflow_run_id"])
        run_id = self._log_run(self.table.key(row), row, config, curve or [], trial_times(result))
        self.table.append({**row, "mlflow_run_id": run_id})
        if self.progress is not None:
            self.progress.update(row, run_name(config))
        return run_id

    def reconcile(self, grid) -> int:
        """Record every trial of a Tune ``ResultGrid`` missing from the table (e.g. one that finished while the
        driver was being killed), then compact; returns the rows added."""
        before = len(self.table.keys())
        for result in grid:
            config, trial_id = trial_identity(result)
            if config is None:
                log.warning("trial %s: no config in Tune's results; not recorded", trial_id)
                continue
            error = None
            if result.error is not None:
                lines = [ln for ln in str(result.error).splitlines() if ln.strip()]
                error = f"{type(result.error).__name__}: {lines[0] if lines else ''}"
            self.record(config, result.metrics or {}, trial_id, curve_points(result.metrics_dataframe), error)
        self.table.compact()
        return len(self.table.keys()) - before

    def _log_run(self, key: tuple, row: Mapping[str, Any], config: Mapping[str, Any], curve: list[dict[str, Any]],
                 times: tuple[float | None, float | None]) -> str:
        from mlflow.entities import Metric, Param

        for run in self.find_runs(key):
            if run.info.status in ("FINISHED", "FAILED"):
                return run.info.run_id
            self.client.delete_run(run.info.run_id)  # left unfinished by a crash mid-logging
        tags = {"ray.trial_id": row["trial_id"], "status": row["status"]}
        if row["error"]:
            tags["error"] = one_line(row["error"])
        started, ended = times
        run_id = self.create_run(key, run_name(config), tags, start_time=started)
        flat = {**{f"model.{k}": v for k, v in config["model"].items()},
                **{f"train.{k}": v for k, v in config["train"].items()}, **config.get("data", {})}
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        now = int(1000 * (ended or time.time()))
        metrics = [Metric(k, x, now, 0) for k in (*TEST_METRICS, "train_seconds")
                   if (x := _number(row.get(k))) is not None]
        for point in curve:
            metrics += [Metric(k, x, now, point["epoch"]) for k in EPOCH_KEYS if (x := point.get(k)) is not None]
        for start in range(0, max(len(metrics), 1), 900):
            self.client.log_batch(run_id, metrics=metrics[start:start + 900], params=params if start == 0 else [])
        self.terminate(run_id, "FAILED" if row["status"] == "failed" else "FINISHED", end_time=ended)
        return run_id
