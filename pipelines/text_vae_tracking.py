"""Driver-side tracking of the text-VAE sweep: one MLflow run and one results row per configuration (trial).

Trials never touch MLflow. :class:`TextVAECallback` runs in the Tune driver: it keeps every per-epoch result
(learning curves) and, when a trial ends (completed, stopped early by a scheduler, or failed), creates exactly
one run in the experiment (``text-vae-<dataset>``) with the configuration as params, the per-epoch metrics as
metric histories (step = epoch) and the final test metrics, then appends one row to :attr:`rows`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback

from .mlflow_runs import check_tracking_uri, no_run_urls

#: Columns of ``results.parquet`` required by DESIGN.md, in order.
RESULT_COLUMNS = ("schedule", "posterior", "aggressive", "elbo", "rec", "kl", "ppl", "iw_ppl", "au", "mi")
#: Per-epoch keys kept for learning curves and logged as MLflow metric histories.
EPOCH_KEYS = ("beta", "k", "inner_steps", "train_rec", "train_kl", "train_elbo", "val_rec", "val_kl",
              "val_elbo", "val_ppl", "val_au", "val_mi")
#: Final keys logged as MLflow metrics (besides the RESULT_COLUMNS metrics) and copied into the row.
EXTRA_KEYS = ("iw_nll", "tokens_per_s", "train_seconds", "knn_acc", "acc_1pct", "acc_10pct", "acc_100pct")


def run_name(config: Mapping[str, Any]) -> str:
    """``<schedule>-<posterior>[-aggressive]`` (searched configurations share it; the tag ``ray.trial_id``
    tells them apart)."""
    train, model = config["train"], config["model"]
    return f"{train['schedule']}-{model['posterior']}" + ("-aggressive" if train["aggressive"] else "")


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


class TextVAECallback(Callback):
    """Ray Tune callback writing one MLflow run per trial; rows and learning curves stay on the driver.

    Args:
        experiment_name: e.g. ``text-vae-toy`` (created if missing).
        tracking_uri: default ``MLFLOW_TRACKING_URI`` else MLflow's default; checked here (one-line
            ``pipelines.mlflow_runs.TrackingUnavailable``) before any trial runs.
        tags: added to every run.
    """

    def __init__(self, experiment_name: str, tracking_uri: str | None = None,
                 tags: Mapping[str, Any] | None = None) -> None:
        self.experiment_name = experiment_name
        self.tracking_uri = check_tracking_uri(tracking_uri)
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.rows: list[dict[str, Any]] = []
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.latents: dict[str, dict[str, list]] = {}
        self._client = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def setup(self, **info) -> None:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {self.experiment_name!r} is deleted; restore it or use another name")
        self._experiment_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment_name)

    # --- hooks --------------------------------------------------------------------------------------
    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if "epoch" in result and not result.get("error"):
            self.curves.setdefault(trial.trial_id, []).append(
                {"epoch": int(result["epoch"]), **{k: result.get(k) for k in EPOCH_KEYS}})

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        error = result.get("error")
        status = "failed" if error else ("complete" if result.get("final") else "stopped")
        self._record(trial, status, error)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        from .mlflow_runs import MLflowRecorder

        self._record(trial, "failed", MLflowRecorder.error_message(trial))

    # --- rows and runs ------------------------------------------------------------------------------
    def _record(self, trial, status: str, error: str | None) -> None:
        if any(r["trial_id"] == trial.trial_id for r in self.rows):
            return
        config, result = trial.config, trial.last_result or {}
        final = status == "complete"
        row: dict[str, Any] = {
            "schedule": config["train"]["schedule"], "posterior": config["model"]["posterior"],
            "aggressive": bool(config["train"]["aggressive"]),
            **{m: (_number(result.get(m)) if final else None) for m in RESULT_COLUMNS[3:]},
            **{k: _number(result.get(k)) if final else None for k in EXTRA_KEYS},
            "val_elbo": _number(result.get("val_elbo")), "epochs_run": int(result.get("epoch", 0) or 0),
            **{k: config["train"][k] for k in ("cycles", "ratio", "k_max", "lr", "epochs", "seed")},
            "workers": int(config.get("workers", 1)),
            "status": status, "error": error or "", "trial_id": trial.trial_id,
        }
        if final and "latent" in result:
            self.latents[trial.trial_id] = {"z": result["latent"], "labels": result["latent_labels"]}
        row["mlflow_run_id"] = self._log_run(trial, row, status)
        self.rows.append(row)

    def _log_run(self, trial, row: Mapping[str, Any], status: str) -> str:
        from mlflow.entities import Metric, Param

        config = trial.config
        tags = {**self.tags, "ray.trial_id": str(trial.trial_id), "status": status}
        if row["error"]:
            tags["error"] = " ".join(str(row["error"]).split())[:500]
        run = self.client.create_run(self._experiment_id, tags=tags, run_name=run_name(config))
        flat = {"dataset": config["dataset"], "workers": config.get("workers", 1), **{f"model.{k}": v for k, v in config["model"].items()},
                **{f"train.{k}": v for k, v in config["train"].items()}, **config.get("data", {})}
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        now = int(1000 * time.time())
        metrics = [Metric(k, x, now, 0) for k in (*RESULT_COLUMNS[3:], *EXTRA_KEYS)
                   if (x := _number(row.get(k))) is not None]
        for point in self.curves.get(trial.trial_id, []):
            metrics += [Metric(k, x, now, point["epoch"]) for k in EPOCH_KEYS if (x := _number(point.get(k))) is not None]
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000],
                                  params=params if start == 0 else [])
        with no_run_urls():
            self.client.set_terminated(run.info.run_id, status="FAILED" if status == "failed" else "FINISHED")
        return run.info.run_id
