"""Driver-side tracking shared by the sweeps on Ray Tune (text VAE, dialog CVAE): one results row and one MLflow
run per finished trial.

:class:`SweepRecorder` is the Ray Tune callback a sweep subclasses: it keeps each trial's per-epoch results and,
when the trial ends (completed, stopped early by a scheduler, diverged or crashed), records it once: the MLflow
run first (an :class:`pipelines.common.mlflow_runs.MLflowRecorder` run tagged with the row's key, found again by that
tag after a crash instead of being created twice; params = the configuration, metric histories per epoch, final
metrics, tags ``status``/``error``; its start and end times are the training's, from Tune's ``timestamp`` and
``time_total_s``), then the row in the subclass's table (a :class:`pipelines.common.journal.JournaledTable`). A trial
re-reported after a restore, or recorded again by :meth:`SweepRecorder.reconcile` from Tune's own results after
``fit()``, is recorded once. A subclass says what a row, a run name, the params and the metrics are.

:class:`SweepProgress` shows the recorded rows as one progress bar; the helpers below read Tune's results.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from pipelines.common.journal import JournaledTable
from pipelines.common.mlflow_runs import MLflowRecorder, check_tracking_uri, one_line

log = logging.getLogger(__name__)


def as_number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (missing, text, NaN, ±inf)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def trial_id_of(path: str | os.PathLike) -> str:
    """The trial id of a trial folder named ``<trial_id>-<run name>``."""
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


def trial_times(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``(start, end)`` of a trial's training in Unix seconds, from its last Tune result: end = ``timestamp``
    (when the result was reported; Tune keeps whole seconds), start = end − ``time_total_s`` (the trial's
    running time). ``(None, None)`` when the result has neither (a trial that crashed before reporting)."""
    end, total = as_number(result.get("timestamp")), as_number(result.get("time_total_s"))
    if end is None or total is None:
        return None, None
    return end - total, end


def outcome(result: Mapping[str, Any], error: str | None = None) -> tuple[str, str]:
    """``(status, error)`` of a finished trial from its last result: ``failed`` (a crash, ``error``, or a
    reported ``error`` such as divergence), ``complete`` (the final result arrived) or ``stopped`` (ASHA)."""
    if error:
        return "failed", one_line(error)
    if result.get("error"):
        return "failed", one_line(result["error"])
    return ("complete" if result.get("final") else "stopped"), ""


def epoch_point(result: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any] | None:
    """The learning-curve point (``epoch`` and ``keys``) of one reported result (None for a result without an
    epoch, or a failure)."""
    epoch = as_number(result.get("epoch"))
    if epoch is None or result.get("error"):
        return None
    return {"epoch": int(epoch), **{k: as_number(result.get(k)) for k in keys}}


def trace_points(result: Mapping[str, Any], keys: Sequence[str]) -> list[dict[str, float]]:
    """The points of a final result's ``trace`` (a list of points, each a list of values in the order of
    ``keys``) as dicts; points of another length are skipped (none without ``keys`` or a trace)."""
    return [dict(zip(keys, point)) for point in result.get("trace") or () if keys and len(point) == len(keys)]


def curve_points(results: pd.DataFrame | None, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per-epoch points of a trial from its reported results (e.g. Tune's ``Result.metrics_dataframe``), by
    epoch; a trial restarted after a crash reports its epochs again, and the last report of an epoch wins."""
    if results is None or not len(results):
        return []
    points: dict[int, dict[str, Any]] = {}
    for result in results.to_dict("records"):
        point = epoch_point(result, keys)
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
        if (elbo := as_number(row.get("elbo"))) is not None:
            self.best_elbo = max(self.best_elbo, elbo)
        if (ppl := as_number(row.get("ppl"))) is not None:
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
class SweepRecorder(MLflowRecorder, Callback):
    """Ray Tune callback: one MLflow run and one ``table`` row per finished trial (module docstring).

    Args:
        output_dir: the run directory.
        experiment_name: the MLflow experiment (created if missing).
        table: the results table rows are appended to (its ``key`` is the row's identity).
        tracking_uri: default ``MLFLOW_TRACKING_URI`` else MLflow's default; checked here (one-line
            :class:`pipelines.common.mlflow_runs.TrackingUnavailable`) and again in ``setup``, before any trial runs.
        extra_tags: added to every run (e.g. :meth:`pipelines.common.mlflow_runs.RunTree.nest_under` of the sweep's
            parent run).
        progress: when given, opened in ``setup`` and ticked by every recorded row.

    A subclass defines :data:`EPOCH_KEYS` (per-epoch keys: learning curves and MLflow metric histories),
    :data:`FINAL_KEYS` (a row's values logged as final MLflow metrics), :meth:`result_row`, :meth:`run_name`
    and :meth:`run_params`; optionally :data:`TRACE_KEYS`, the names of the values of each point of a final
    result's ``trace`` (a list of points, each a list in this order, the first the iteration): logged as MLflow
    metric histories ``trace_<key>`` with the iteration as the step.
    """

    EPOCH_KEYS: tuple[str, ...] = ()
    FINAL_KEYS: tuple[str, ...] = ()
    TRACE_KEYS: tuple[str, ...] = ()

    def __init__(self, output_dir: str | os.PathLike, experiment_name: str, table: JournaledTable,
                 tracking_uri: str | None = None, extra_tags: Mapping[str, Any] | None = None,
                 progress: SweepProgress | None = None) -> None:
        super().__init__(output_dir, experiment_name, tracking_uri, extra_tags)
        self.progress, self.table = progress, table
        self._points: dict[str, dict[int, dict[str, Any]]] = {}  # trial id -> epoch -> point

    def __getstate__(self) -> dict:  # pickled with the Tuner: no client, no curves of this driver's trials
        return {**super().__getstate__(), "_points": {}}

    # --- what a subclass says -------------------------------------------------------------------------
    def result_row(self, config: Mapping[str, Any], result: Mapping[str, Any], trial_id: str,
                   error: str | None = None) -> dict[str, Any]:
        """The results row of a finished trial (its Tune config and last result)."""
        raise NotImplementedError

    def run_name(self, config: Mapping[str, Any]) -> str:
        """The MLflow run name (and progress-bar name) of a configuration."""
        raise NotImplementedError

    def run_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The MLflow params of a configuration, flat."""
        raise NotImplementedError

    # --- hooks --------------------------------------------------------------------------------------
    def setup(self, **info) -> None:
        check_tracking_uri(self.tracking_uri)
        _ = self.experiment_id  # create or fetch the experiment before the first trial starts
        if self.progress is not None:
            self.progress.start(self.table.read().to_dict("records"))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        point = epoch_point(result, self.EPOCH_KEYS)
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
        row = self.result_row(config, result, trial_id, error)
        key = self.table.key(row)
        stored = self.table.get(key)
        if stored is not None:
            return str(stored["mlflow_run_id"])
        run_id = self._log_run(key, row, config, curve or [], trial_times(result),
                               trace_points(result, self.TRACE_KEYS))
        self.table.append({**row, "mlflow_run_id": run_id})
        if self.progress is not None:
            self.progress.update(row, self.run_name(config))
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
            self.record(config, result.metrics or {}, trial_id,
                        curve_points(result.metrics_dataframe, self.EPOCH_KEYS), error)
        self.table.compact()
        return len(self.table.keys()) - before

    def _log_run(self, key: tuple, row: Mapping[str, Any], config: Mapping[str, Any],
                 curve: list[dict[str, Any]], times: tuple[float | None, float | None] = (None, None),
                 trace: list[dict[str, float]] = ()) -> str:
        """The MLflow run of ``key``: a complete one found by its key tag, else a new one (params, metric
        histories per epoch and per trace point, final metrics, status) whose start and end are ``times`` (Unix
        seconds, the training's; None: when logged); a run left unfinished by a crash mid-logging is deleted
        first."""
        from mlflow.entities import Metric, Param

        for run in self.find_runs(key):
            if run.info.status in ("FINISHED", "FAILED"):
                return run.info.run_id
            self.client.delete_run(run.info.run_id)
        tags = {"ray.trial_id": row["trial_id"], "status": row["status"]}
        if row["error"]:
            tags["error"] = one_line(row["error"])
        started, ended = times
        run_id = self.create_run(key, self.run_name(config), tags, start_time=started)
        params = [Param(k, str(v)[:500]) for k, v in self.run_params(config).items()]
        now = int(1000 * (ended or time.time()))
        metrics = [Metric(k, x, now, 0) for k in self.FINAL_KEYS if (x := as_number(row.get(k))) is not None]
        for point in curve:
            metrics += [Metric(k, x, now, point["epoch"]) for k in self.EPOCH_KEYS
                        if (x := point.get(k)) is not None]
        for point in trace:  # the first trace key is the iteration, the MLflow step
            step = int(point[self.TRACE_KEYS[0]])
            metrics += [Metric(f"trace_{k}", x, now, step) for k in self.TRACE_KEYS[1:]
                        if (x := as_number(point.get(k))) is not None]
        for start in range(0, max(len(metrics), 1), 900):  # MLflow takes at most 1000 entities per batch
            self.client.log_batch(run_id, metrics=metrics[start:start + 900], params=params if start == 0 else [])
        self.terminate(run_id, "FAILED" if row["status"] == "failed" else "FINISHED", end_time=ended)
        return run_id
