"""Driver-side tracking of the text-VAE sweep: one ``results.parquet`` row and one MLflow run per configuration.

Trials never touch a store. :class:`TextVAERecorder` is a Ray Tune callback in the driver: it keeps each trial's
per-epoch results and, when the trial ends (completed, stopped early by a scheduler, diverged or crashed),
records it once: the MLflow run first (an :class:`pipelines.mlflow_runs.MLflowRecorder` run tagged with the
row's key, found again by that tag after a crash instead of being created twice; params = the configuration,
metric histories per epoch, final metrics, tags ``status``/``error``; its start and end times are the training's,
from Tune's ``timestamp`` and ``time_total_s``; nested under the sweep's parent run when the recorder's tags say
so), then the row in :class:`ResultsTable` (a :class:`pipelines.journal.JournaledTable`, O(1) fsynced appends,
compacted into ``results.parquet``). :class:`SweepProgress` shows the recorded rows as one progress bar.

The key of a row is the trial's identity: the configuration and training seed ``(schedule, posterior, aggressive,
seed)`` (``schedule`` is the sweep's entry, e.g. ``cyclical@0.5``; the row's ``beta_max`` column holds its
effective β_max) for the grid search, the Tune trial id (kept by ``Tuner.restore``) for Optuna. A trial
re-reported after a restore, or recorded again by :meth:`TextVAERecorder.reconcile` from Tune's own results after
``fit()``, is recorded once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from trainables.beta_schedules import schedule_entry

from .journal import JournaledTable
from .mlflow_runs import MLflowRecorder, check_tracking_uri, one_line

log = logging.getLogger(__name__)

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


def trial_dirname(trial) -> str:
    """``<trial_id>-<run name>``: Tune's name and folder of a trial (:func:`trial_id_of` reads the id back)."""
    return f"{trial.trial_id}-{run_name(trial.config)}"


def trial_id_of(path: str | os.PathLike) -> str:
    """The trial id of a trial folder named by :func:`trial_dirname`."""
    return Path(path).name.split("-", 1)[0]


def trial_identity(result) -> tuple[dict[str, Any] | None, str]:
    """``(config, trial_id)`` of a Tune ``Result``. A trial that failed before reporting anything has no
    metrics (hence no ``Result.config``) after a restore; its config is then read from the ``params.json``
    Tune wrote into its folder when it started (None if that is missing too)."""
    metrics = result.metrics or {}
    trial_id = str(metrics.get("trial_id") or trial_id_of(result.path))
    config = result.config
    params = Path(result.path) / "params.json"
    if config is None and params.exists():
        config = json.loads(params.read_text())
    return config, trial_id


def curve_name(row: Mapping[str, Any], search: str, with_seed: bool = False) -> str:
    """The label of a configuration in curves.parquet and the plots (Optuna: with the trial id's tail;
    ``with_seed``, for sweeps of several training seeds: with ``-s<seed>``)."""
    name = f"{row['schedule']}-{row['posterior']}" + ("-aggr" if row["aggressive"] else "")
    name += f"-s{row['seed']}" if with_seed else ""
    return name + (f"-{str(row['trial_id'])[-5:]}" if search == "optuna" else "")


def trial_times(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``(start, end)`` of a trial's training in Unix seconds, from its last Tune result: end = ``timestamp``
    (when the result was reported; Tune keeps whole seconds), start = end − ``time_total_s`` (the trial's
    running time). ``(None, None)`` when the result has neither (a trial that crashed before reporting)."""
    end, total = _number(result.get("timestamp")), _number(result.get("time_total_s"))
    if end is None or total is None:
        return None, None
    return end - total, end


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


# --- rows -------------------------------------------------------------------------------------------
def outcome(result: Mapping[str, Any], error: str | None = None) -> tuple[str, str]:
    """``(status, error)`` of a finished trial from its last result: ``failed`` (a crash, ``error``, or a
    reported ``error`` such as divergence), ``complete`` (the final result arrived) or ``stopped`` (ASHA)."""
    if error:
        return "failed", one_line(error)
    if result.get("error"):
        return "failed", one_line(result["error"])
    return ("complete" if result.get("final") else "stopped"), ""


def result_row(config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               error: str | None = None) -> dict[str, Any]:
    """One results row of a finished trial (its Tune config and last result); test metrics only if complete."""
    status, error = outcome(result, error)
    final = status == "complete"
    train = config["train"]
    _, beta_max = schedule_entry(train["schedule"], train.get("beta_max", 1.0))
    return {
        "schedule": train["schedule"], "posterior": config["model"]["posterior"], "aggressive": train["aggressive"],
        **{m: _number(result.get(m)) if final else None for m in RESULT_COLUMNS[3:]},
        **{k: x for k in EXTRA_KEYS if final and (x := _number(result.get(k))) is not None},
        "val_elbo": _number(result.get("val_elbo")), "epochs_run": int(result.get("epoch", 0) or 0),
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
        out[col] = _number(row.get(col))
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
    epoch = _number(result.get("epoch"))
    if epoch is None or result.get("error"):
        return None
    return {"epoch": int(epoch), **{k: _number(result.get(k)) for k in EPOCH_KEYS}}


def curve_points(results: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per-epoch points of a trial from its reported results (e.g. Tune's ``Result.metrics_dataframe``), by
    epoch; a trial restarted after a crash reports its epochs again, and the last report of an epoch wins."""
    if results is None or not len(results):
        return []
    points: dict[int, dict[str, Any]] = {}
    for result in results.to_dict("records"):
        point = epoch_point(result)
        if point is not None:
            points[point["epoch"]] = point
    return [points[e] for e in sorted(points)]


# --- progress ---------------------------------------------------------------------------------------
class SweepProgress:
    """A tqdm bar (stderr) over the sweep's configurations: rows recorded (failed ones counted in the postfix),
    the best test ELBO and the lowest test PPL so far (nats per sentence; PPL per word); one ``warning:`` line per
    failed configuration. Opened by :meth:`start` with the rows a previous driver already recorded, so a resumed
    sweep continues the count."""

    def __init__(self, total: int, desc: str = "sweep") -> None:
        self.total, self.desc = total, desc
        self.done, self.failed = 0, 0
        self.best_elbo, self.best_ppl = -math.inf, math.inf
        self._bar = None

    def __getstate__(self) -> dict:  # pickled with the Tuner's callbacks: a tqdm bar does not pickle
        return {**self.__dict__, "_bar": None}

    def start(self, rows: list[Mapping[str, Any]]) -> None:
        """Open the bar, counting ``rows`` (already recorded) as done."""
        from tqdm.auto import tqdm

        self.done = self.failed = 0
        self.best_elbo, self.best_ppl = -math.inf, math.inf
        for row in rows:
            self._count(row)
        self._bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit="config", dynamic_ncols=True)
        self._show()

    def update(self, row: Mapping[str, Any], name: str) -> None:
        """Count one newly recorded row (``name``: the configuration's run name, for a failure's warning line)."""
        self._count(row)
        if row["status"] == "failed":
            line = f"warning: {self.desc}: {name} ({row['trial_id']}) failed: {row['error'] or 'unknown error'}"
            if self._bar is not None:
                self._bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
        self._show()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _count(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if (elbo := _number(row.get("elbo"))) is not None:
            self.best_elbo = max(self.best_elbo, elbo)
        if (ppl := _number(row.get("ppl"))) is not None:
            self.best_ppl = min(self.best_ppl, ppl)

    def _show(self) -> None:
        if self._bar is None:
            return
        postfix = {}
        if math.isfinite(self.best_elbo):
            postfix["best elbo"] = f"{self.best_elbo:.3f}"
        if math.isfinite(self.best_ppl):
            postfix["lowest ppl"] = f"{self.best_ppl:.3f}"
        if self.failed:
            postfix["failed"] = self.failed
        self._bar.n = self.done
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()


# --- the callback -------------------------------------------------------------------------------------
class TextVAERecorder(MLflowRecorder, Callback):
    """Ray Tune callback: one MLflow run and one :class:`ResultsTable` row per finished trial.

    Args:
        output_dir: the run directory; rows go to ``output_dir/results.parquet``.
        experiment_name: e.g. ``text-vae-toy`` (created if missing).
        search: ``grid`` or ``optuna`` (the row key, :data:`ROW_KEYS`).
        tracking_uri: default ``MLFLOW_TRACKING_URI`` else MLflow's default; checked here (one-line
            :class:`pipelines.mlflow_runs.TrackingUnavailable`) and again in ``setup``, before any trial runs.
        extra_tags: added to every run (e.g. ``preset``, ``search``, and
            :meth:`pipelines.mlflow_runs.RunTree.nest_under` of the sweep's parent run).
        progress: when given, opened in ``setup`` and ticked by every recorded row.
    """

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, search: str,
                 tracking_uri: str | None = None, extra_tags: Mapping[str, Any] | None = None,
                 progress: SweepProgress | None = None) -> None:
        super().__init__(output_dir, experiment_name, tracking_uri, extra_tags)
        self.search, self.progress = search, progress
        self.table = ResultsTable(Path(output_dir) / "results.parquet", search)
        self._points: dict[str, dict[int, dict[str, Any]]] = {}  # trial id -> epoch -> point

    def __getstate__(self) -> dict:  # pickled with the Tuner: no client, no curves of this driver's trials
        return {**super().__getstate__(), "_points": {}}

    # --- hooks --------------------------------------------------------------------------------------
    def setup(self, **info) -> None:
        check_tracking_uri(self.tracking_uri)
        _ = self.experiment_id  # create or fetch the experiment before the first trial starts
        if self.progress is not None:
            self.progress.start(self.table.read().to_dict("records"))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        point = epoch_point(result)
        if point is not None:
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

    # --- rows and runs ------------------------------------------------------------------------------
    def record(self, config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
               curve: list[dict[str, Any]] | None = None, error: str | None = None) -> str:
        """Record one finished trial (its config, last result and per-epoch points) and return its MLflow run
        id. Idempotent: a key already in the table returns the stored run id and writes nothing."""
        row = result_row(config, result, trial_id, error)
        key = self.table.key(row)
        stored = self.table.get(key)
        if stored is not None:
            return str(stored["mlflow_run_id"])
        run_id = self._log_run(key, row, config, curve or [], trial_times(result))
        self.table.append({**row, "mlflow_run_id": run_id})
        if self.progress is not None:
            self.progress.update(row, run_name(config))
        return run_id

    def reconcile(self, grid) -> int:
        """Record every trial of a Tune ``ResultGrid`` that is not in the table yet (e.g. one that finished
        while the driver was being killed), from Tune's own results on disk; then compact the table. Returns
        the number of rows added."""
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

    def _log_run(self, key: tuple, row: Mapping[str, Any], config: Mapping[str, Any],
                 curve: list[dict[str, Any]], times: tuple[float | None, float | None] = (None, None)) -> str:
        """The MLflow run of ``key``: a complete one found by its key tag, else a new one (params, metric
        histories, final metrics, status) whose start and end are ``times`` (Unix seconds, the training's;
        None: when logged); a run left unfinished by a crash mid-logging is deleted first."""
        from mlflow.entities import Metric, Param

        for run in self.find_runs(key):
            if run.info.status in ("FINISHED", "FAILED"):
                return run.info.run_id
            self.client.delete_run(run.info.run_id)
        tags = {"ray.trial_id": row["trial_id"], "status": row["status"]}
        if row["error"]:
            tags["error"] = one_line(row["error"])
        started, ended = times
        run_id = self.create_run(key, run_name(config), tags, start_time=started)
        flat = {"dataset": config["dataset"], "workers": config.get("workers", 1),
                **{f"model.{k}": v for k, v in config["model"].items()},
                **{f"train.{k}": v for k, v in config["train"].items()}, **config.get("data", {})}
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        now = int(1000 * (ended or time.time()))
        metrics = [Metric(k, x, now, 0) for k in (*RESULT_COLUMNS[3:], *EXTRA_KEYS)
                   if (x := _number(row.get(k))) is not None]
        for point in curve:
            metrics += [Metric(k, x, now, point["epoch"]) for k in EPOCH_KEYS if (x := point.get(k)) is not None]
        for start in range(0, max(len(metrics), 1), 900):  # MLflow takes at most 1000 entities per batch
            self.client.log_batch(run_id, metrics=metrics[start:start + 900], params=params if start == 0 else [])
        self.terminate(run_id, "FAILED" if row["status"] == "failed" else "FINISHED", end_time=ended)
        return run_id
