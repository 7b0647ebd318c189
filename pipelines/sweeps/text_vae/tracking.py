"""Driver-side tracking of the text-VAE sweep: one ``results.parquet`` row and one MLflow run per configuration.

Trials never touch a store. :class:`TextVAERecorder` is a Ray Tune callback in the driver: it keeps each trial's
per-epoch results and, when the trial ends (completed, stopped early by a scheduler, diverged or crashed),
records it once: the MLflow run first (an :class:`pipelines.common.mlflow_runs.MLflowRecorder` run tagged with the
row's key, found again by that tag after a crash instead of being created twice; params = the configuration,
metric histories per epoch, final metrics, tags ``status``/``error``; its start and end times are the training's,
from Tune's ``timestamp`` and ``time_total_s``; nested under the sweep's parent run when the recorder's tags say
so), then the row in :class:`ResultsTable` (a :class:`pipelines.common.journal.JournaledTable`, O(1) fsynced appends,
compacted into ``results.parquet``). :class:`SweepProgress` shows the recorded rows as one progress bar.

The key of a row is the trial's identity: the configuration and training seed ``(schedule, posterior, aggressive,
seed)`` (``schedule`` is the sweep's entry, e.g. ``cyclical@0.5``; the row's ``beta_max`` column holds its
effective β_max) for the grid search, the Tune trial id (kept by ``Tuner.restore``) for Optuna. A trial
re-reported after a restore, or recorded again by :meth:`TextVAERecorder.reconcile` from Tune's own results after
``fit()``, is recorded once.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.journal import JournaledTable
from pipelines.sweeps.tracking import (
    SweepProgress,
    SweepRecorder,
    as_number,
    outcome,
    trial_id_of,
    trial_identity,
    trial_times,
)
from pipelines.sweeps.tracking import curve_points as _curve_points
from pipelines.sweeps.tracking import epoch_point as _epoch_point
from trainables.text.beta_schedules import schedule_entry
from trainables.text.vae_model import TRACE_KEYS

__all__ = ["ResultsTable", "SweepProgress", "TextVAERecorder", "curve_points", "epoch_point", "outcome", "result_row",
           "run_name", "trial_dirname", "trial_id_of", "trial_identity", "trial_times"]

#: Columns of ``results.parquet`` required by DESIGN.md, "Output contract", in order.
RESULT_COLUMNS = ("schedule", "posterior", "aggressive", "elbo", "rec", "kl", "ppl", "iw_ppl", "au", "mi")
#: Per-epoch keys kept for learning curves and logged as MLflow metric histories.
EPOCH_KEYS = ("beta", "k", "inner_steps", "train_rec", "train_kl", "train_elbo", "val_rec", "val_kl",
              "val_elbo", "val_ppl", "val_au", "val_mi")
#: Final keys logged as MLflow metrics (besides the RESULT_COLUMNS metrics); a column when some row has one.
EXTRA_KEYS = ("iw_nll", "mi_upper", "tokens_per_s", "train_seconds", "knn_acc", "acc_1pct", "acc_10pct",
              "acc_100pct")
#: The columns after the metrics, with their dtypes.
TAIL_COLUMNS: dict[str, Any] = {
    "val_elbo": "float64", "epochs_run": "int64", "cycles": "int64", "ratio": "float64", "monotonic_ratio": "float64",
    "beta_max": "float64", "k_max": "int64",
    "lr": "float64", "epochs": "int64", "seed": "int64", "workers": "int64", "status": str, "error": str,
    "trial_id": str, "mlflow_run_id": str,
}
HEAD_COLUMNS: dict[str, Any] = {"schedule": str, "posterior": str, "aggressive": bool,
                                **{m: "float64" for m in RESULT_COLUMNS[3:]}}
STATUSES = ("complete", "stopped", "failed")


def run_name(config: Mapping[str, Any]) -> str:
    """``<schedule>-<posterior>[-aggressive]-s<seed>`` (searched configurations share it; the tag
    ``ray.trial_id`` tells them apart)."""
    train, model = config["train"], config["model"]
    return (f"{train['schedule']}-{model['posterior']}" + ("-aggressive" if train["aggressive"] else "")
            + f"-s{train.get('seed', 0)}")


def run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The MLflow params of a configuration: its settings, flat."""
    return {"dataset": config["dataset"], "workers": config.get("workers", 1),
            **{f"model.{k}": v for k, v in config["model"].items()},
            **{f"train.{k}": v for k, v in config["train"].items()}, **config.get("data", {})}


def trial_dirname(trial) -> str:
    """``<trial_id>-<run name>``: Tune's name and folder of a trial (:func:`trial_id_of` reads the id back)."""
    return f"{trial.trial_id}-{run_name(trial.config)}"


def curve_name(row: Mapping[str, Any], search: str, with_seed: bool = False) -> str:
    """The label of a configuration in curves.parquet and the plots (Optuna: with the trial id's tail;
    ``with_seed``, for sweeps of several training seeds: with ``-s<seed>``)."""
    name = f"{row['schedule']}-{row['posterior']}" + ("-aggr" if row["aggressive"] else "")
    name += f"-s{row['seed']}" if with_seed else ""
    return name + (f"-{str(row['trial_id'])[-5:]}" if search == "optuna" else "")


# --- rows -------------------------------------------------------------------------------------------
def result_row(config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               error: str | None = None) -> dict[str, Any]:
    """One results row of a finished trial (its Tune config and last result); test metrics only if complete."""
    status, error = outcome(result, error)
    final = status == "complete"
    train = config["train"]
    _, beta_max = schedule_entry(train["schedule"], train.get("beta_max", 1.0))
    return {
        "schedule": train["schedule"], "posterior": config["model"]["posterior"], "aggressive": train["aggressive"],
        **{m: as_number(result.get(m)) if final else None for m in RESULT_COLUMNS[3:]},
        **{k: x for k in EXTRA_KEYS if final and (x := as_number(result.get(k))) is not None},
        "val_elbo": as_number(result.get("val_elbo")), "epochs_run": int(result.get("epoch", 0) or 0),
        **{k: train[k] for k in ("cycles", "ratio", "k_max", "lr", "epochs", "seed")},
        "monotonic_ratio": train.get("monotonic_ratio", 0.25), "beta_max": beta_max,
        "workers": int(config.get("workers", 1)), "status": status, "error": error, "trial_id": str(trial_id),
    }


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check one results row and coerce its values (one-line ``ValueError``)."""
    known = {*HEAD_COLUMNS, *EXTRA_KEYS, *TAIL_COLUMNS}
    unknown = sorted(set(row) - known)
    if unknown:
        raise ValueError(f"results row: unknown column(s) {unknown}; valid: {', '.join(known)}")
    missing = [c for c in (*RESULT_COLUMNS[:3], "status", "trial_id") if row.get(c) is None]
    if missing:
        raise ValueError(f"results row: missing {missing}")
    if row["status"] not in STATUSES:
        raise ValueError(f"results row: status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
    out: dict[str, Any] = {"schedule": str(row["schedule"]), "posterior": str(row["posterior"]),
                           "aggressive": bool(row["aggressive"])}
    for col in (*RESULT_COLUMNS[3:], *[k for k in EXTRA_KEYS if k in row], "val_elbo", "ratio", "monotonic_ratio",
                "beta_max", "lr"):
        out[col] = as_number(row.get(col))
    for col in ("epochs_run", "cycles", "k_max", "epochs", "seed", "workers"):
        out[col] = int(row.get(col) or 0)
    for col in ("status", "error", "trial_id", "mlflow_run_id"):
        out[col] = str(row.get(col) or "")
    return out


def typed_results(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in order (RESULT_COLUMNS, the extras some row has, then :data:`TAIL_COLUMNS`) with their dtypes;
    rows sorted by posterior, schedule, aggressive and trial id."""
    extras = [k for k in EXTRA_KEYS if k in df.columns]
    df = df.reindex(columns=[*HEAD_COLUMNS, *extras, *TAIL_COLUMNS])
    df = df.astype({**HEAD_COLUMNS, **{k: "float64" for k in extras}, **TAIL_COLUMNS})
    return df.sort_values(["posterior", "schedule", "aggressive", "trial_id"], kind="stable").reset_index(drop=True)


def configuration_key(row: Mapping[str, Any]) -> tuple[str, str, bool, int]:
    """Grid search: a row is its configuration and training seed."""
    return str(row["schedule"]), str(row["posterior"]), bool(row["aggressive"]), int(row.get("seed") or 0)


def trial_key(row: Mapping[str, Any]) -> tuple[str]:
    """Optuna search: a row is its Tune trial."""
    return (str(row["trial_id"]),)


ROW_KEYS = {"grid": configuration_key, "optuna": trial_key}


class ResultsTable(JournaledTable):
    """``results.parquet``: one row per configuration (grid) or trial (optuna), unique by :data:`ROW_KEYS`."""

    def __init__(self, path: str | os.PathLike, search: str) -> None:
        super().__init__(path, key=ROW_KEYS[search], normalize=normalize_row, typed=typed_results)


# --- curves -----------------------------------------------------------------------------------------
def epoch_point(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The learning-curve point of one reported result (None for a result without an epoch, or a failure)."""
    return _epoch_point(result, EPOCH_KEYS)


def curve_points(results: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per-epoch points of a trial from its reported results (e.g. Tune's ``Result.metrics_dataframe``), by
    epoch; a trial restarted after a crash reports its epochs again, and the last report of an epoch wins."""
    return _curve_points(results, EPOCH_KEYS)


# --- the callback -------------------------------------------------------------------------------------
class TextVAERecorder(SweepRecorder):
    """Ray Tune callback: one MLflow run and one :class:`ResultsTable` row per finished trial
    (:class:`pipelines.sweeps.tracking.SweepRecorder`).

    Args:
        output_dir: the run directory; rows go to ``output_dir/results.parquet``.
        experiment_name: e.g. ``text-vae-toy`` (created if missing).
        search: ``grid`` or ``optuna`` (the row key, :data:`ROW_KEYS`).
        tracking_uri: default ``MLFLOW_TRACKING_URI`` else MLflow's default; checked here (one-line
            :class:`pipelines.common.mlflow_runs.TrackingUnavailable`) and again in ``setup``, before any trial runs.
        extra_tags: added to every run (e.g. ``preset``, ``search``, and
            :meth:`pipelines.common.mlflow_runs.RunTree.nest_under` of the sweep's parent run).
        progress: when given, opened in ``setup`` and ticked by every recorded row.
    """

    EPOCH_KEYS = EPOCH_KEYS
    TRACE_KEYS = TRACE_KEYS
    result_row, run_name, run_params = staticmethod(result_row), staticmethod(run_name), staticmethod(run_params)
    FINAL_KEYS = (*RESULT_COLUMNS[3:], *EXTRA_KEYS)

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, search: str,
                 tracking_uri: str | None = None, extra_tags: Mapping[str, Any] | None = None,
                 progress: SweepProgress | None = None) -> None:
        super().__init__(output_dir, experiment_name, ResultsTable(Path(output_dir) / "results.parquet", search),
                         tracking_uri, extra_tags, progress)
        self.search = search
