"""Driver-side tracking of the dialog sweep: one ``results.parquet`` row and one MLflow run per training.

:class:`DialogRecorder` is a Ray Tune callback in the driver (trials never touch a store), a
:class:`pipelines.sweeps.tracking.SweepRecorder` like the text-VAE's ``TextVAERecorder``: when a trial ends it
logs the MLflow run first (tagged with the row's key and found again by it after a crash; params = the
configuration, per-epoch metric histories, final metrics, tags ``status``/``error``, start and end = the
training's) and then appends the row to :class:`DialogResultsTable`
(a :class:`pipelines.common.journal.JournaledTable`).
A row's key is the grid axes' values (``pipelines.sweeps.dialog.axes.AXES``: schedule, posterior, bow) and the
seed; a trial recorded again (after ``Tuner.restore``, or by
:meth:`DialogRecorder.reconcile` from Tune's results) is recorded once. The progress bar is the sweeps'
``SweepProgress`` (rows carry ``elbo`` and ``ppl``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.journal import JournaledTable
from pipelines.sweeps.dialog import axes
from pipelines.sweeps.tracking import SweepProgress, SweepRecorder, as_number, outcome
from pipelines.sweeps.tracking import curve_points as _curve_points
from pipelines.sweeps.tracking import epoch_point as _epoch_point
from trainables.text.beta_schedules import schedule_entry
from trainables.text.dialog_tune import TEST_METRICS

__all__ = ["DialogRecorder", "DialogResultsTable", "SweepProgress", "curve_points", "result_row", "run_name"]

#: Per-epoch keys kept for the learning curves and logged as MLflow metric histories (nats per response).
EPOCH_KEYS = ("beta", "k", "inner_steps", "train_rec", "train_kl", "train_bow", "train_act", "val_rec", "val_kl",
              "val_elbo", "val_rec_ppl", "val_mi")
HEAD_COLUMNS: dict[str, Any] = {**{a.column: a.dtype for a in axes.AXES}, "seed": "int64",
                                **{m: "float64" for m in TEST_METRICS}}
TAIL_COLUMNS: dict[str, Any] = {
    "val_elbo": "float64", "epochs_run": "int64", "beta_max": "float64", "cycles": "int64", "ratio": "float64",
    "monotonic_ratio": "float64", "k_max": "int64", "lr": "float64", "epochs": "int64", "act_knowledge": bool,
    "aggressive": bool, "train_seconds": "float64", "status": str, "error": str, "trial_id": str,
    "mlflow_run_id": str,
}


def run_name(config: Mapping[str, Any]) -> str:
    """``<schedule>-<posterior>-<bow|no-bow>-s<seed>`` (:func:`pipelines.sweeps.dialog.axes.run_name`)."""
    return axes.run_name(config)


def run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The MLflow params of a configuration: its settings, flat."""
    return {**{f"model.{k}": v for k, v in config["model"].items()},
            **{f"train.{k}": v for k, v in config["train"].items()}, **config.get("data", {})}


def trial_dirname(trial) -> str:
    """``<trial_id>-<run name>``: Tune's name and folder of a trial."""
    return f"{trial.trial_id}-{run_name(trial.config)}"


def result_row(config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               error: str | None = None) -> dict[str, Any]:
    """One results row of a finished trial (its Tune config and last result); test metrics only if complete."""
    status, error = outcome(result, error)
    final = status == "complete"
    train, model = config["train"], config["model"]
    return {**axes.values_of(config), "seed": int(train["seed"]),
            **{m: as_number(result.get(m)) if final else None for m in TEST_METRICS},
            "val_elbo": as_number(result.get("val_elbo")), "epochs_run": int(result.get("epoch", 0) or 0),
            "beta_max": schedule_entry(train["schedule"], train.get("beta_max", 1.0))[1],
            **{k: train[k] for k in ("cycles", "ratio", "monotonic_ratio", "k_max", "lr", "epochs", "aggressive")},
            "act_knowledge": bool(model["act_knowledge"]), "train_seconds": as_number(result.get("train_seconds")),
            "status": status, "error": error, "trial_id": str(trial_id)}


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check one row and coerce its values (one-line ``ValueError``)."""
    unknown = sorted(set(row) - {*HEAD_COLUMNS, *TAIL_COLUMNS})
    if unknown:
        raise ValueError(f"results row: unknown column(s) {unknown}")
    if row.get("status") not in ("complete", "stopped", "failed") or any(row.get(c) is None for c in axes.COLUMNS):
        raise ValueError(f"results row: needs {', '.join(axes.COLUMNS)} and a status complete/stopped/failed, got "
                         f"{dict(row)}")
    out: dict[str, Any] = {}
    for col, dtype in {**HEAD_COLUMNS, **TAIL_COLUMNS}.items():
        value = row.get(col)
        if dtype == "float64":
            out[col] = as_number(value)
        elif dtype == "int64":
            out[col] = int(value or 0)
        elif dtype is bool:
            out[col] = bool(value)
        else:
            out[col] = str(value or "")
    return out


def typed_results(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in order with their dtypes; rows sorted by the axes (last axis first) and the seed."""
    df = df.reindex(columns=[*HEAD_COLUMNS, *TAIL_COLUMNS]).astype({**HEAD_COLUMNS, **TAIL_COLUMNS})
    return df.sort_values([*reversed(axes.COLUMNS), "seed"], kind="stable").reset_index(drop=True)


def row_key(row: Mapping[str, Any]) -> tuple:
    """The axes' values (each as its column's type) and the seed."""
    return (*(a.dtype(row[a.column]) for a in axes.AXES), int(row.get("seed") or 0))


class DialogResultsTable(JournaledTable):
    """``results.parquet``: one row per configuration and seed, unique by :func:`row_key`."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, key=row_key, normalize=normalize_row, typed=typed_results)


def epoch_point(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The learning-curve point of one reported result (None without an epoch, or for a failure)."""
    return _epoch_point(result, EPOCH_KEYS)


def curve_points(results: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per-epoch points of a trial from its reported results, by epoch (the last report of an epoch wins)."""
    return _curve_points(results, EPOCH_KEYS)


class DialogRecorder(SweepRecorder):
    """Ray Tune callback: one MLflow run and one :class:`DialogResultsTable` row per finished trial.

    ``output_dir``: the run directory (rows go to ``results.parquet``); ``experiment_name``: e.g. ``dialog-swda``;
    ``extra_tags``: added to every run (e.g. the parent run's ``RunTree.nest_under``); ``progress``: opened in
    ``setup`` and ticked by every recorded row."""

    EPOCH_KEYS = EPOCH_KEYS
    result_row, run_name, run_params = staticmethod(result_row), staticmethod(run_name), staticmethod(run_params)
    FINAL_KEYS = (*TEST_METRICS, "train_seconds")

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, tracking_uri: str | None = None,
                 extra_tags: Mapping[str, Any] | None = None, progress: SweepProgress | None = None) -> None:
        super().__init__(output_dir, experiment_name, DialogResultsTable(Path(output_dir) / "results.parquet"),
                         tracking_uri, extra_tags, progress)
