"""The text-VAE sweep's outputs besides ``results.parquet``: Tune's per-trial results as tables (:class:`SweepFrames`:
curves, latents, trace), read from Tune (:func:`tune_frames`) or back from a finished run (:func:`stored_frames`), and
written with table.md, the PNG plots (:func:`write_outputs`) and report.md (:func:`write_report`). Units: metrics
in nats per sentence (``trainables.text.vae_metrics``), iterations = updates of one training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write
from pipelines.sweeps.driver import SWEEP_STAGE, Finished, Prepared, mlflow_line
from pipelines.sweeps.settings import schedule_options, training_seeds

#: Row columns that say which configuration and seed a trace point belongs to.
TRACE_IDENTITY = ("schedule", "posterior", "aggressive", "seed")


@dataclass
class SweepFrames:
    """Tune's per-trial results as tables: ``curves`` (per-epoch points: trial_id, name, epoch and the
    ``EPOCH_KEYS``), ``latents`` (toy: z samples of the test sentences) and ``trace`` (one row per trace point:
    trial_id, name, schedule, posterior, aggressive, seed and ``trainables.text.vae_model.TRACE_KEYS``)."""

    curves: pd.DataFrame
    latents: pd.DataFrame
    trace: pd.DataFrame


def tune_frames(grid, search: str, with_seed: bool = False) -> SweepFrames:
    """The :class:`SweepFrames` of Tune's durable per-trial results: per-epoch points of every trial
    (``Result.metrics_dataframe``), the toy z samples and the trace of its final result (``Result.metrics``);
    ``with_seed``: the curve names carry the training seed (sweeps of several seeds)."""
    from pipelines.sweeps.text_vae.tracking import EPOCH_KEYS, curve_name, curve_points, result_row, trial_identity
    from trainables.text.vae_model import TRACE_KEYS

    curves, latents, trace = [], [], []
    for result in grid:
        metrics = result.metrics or {}
        config, trial_id = trial_identity(result)
        if config is None:
            continue
        row = result_row(config, metrics, trial_id)
        name = curve_name(row, search, with_seed)
        curves += [{"trial_id": trial_id, "name": name, **p} for p in curve_points(result.metrics_dataframe)]
        if result.error is not None or not metrics.get("final"):
            continue
        if metrics.get("latent"):
            for z, label in zip(metrics["latent"], metrics["latent_labels"]):
                latents.append({"trial_id": trial_id, "name": name, "label": int(label),
                                **{f"z{i}": float(v) for i, v in enumerate(z)}})
        who = {"trial_id": trial_id, "name": name, **{k: row[k] for k in TRACE_IDENTITY}}
        trace += [{**who, **dict(zip(TRACE_KEYS, point))} for point in metrics.get("trace") or []]
    curves_df = pd.DataFrame(curves, columns=["trial_id", "name", "epoch", *EPOCH_KEYS])
    trace_df = pd.DataFrame(trace, columns=["trial_id", "name", *TRACE_IDENTITY, *TRACE_KEYS])
    return SweepFrames(curves_df.sort_values(["name", "epoch"], kind="stable").reset_index(drop=True),
                       pd.DataFrame(latents),
                       trace_df.sort_values(["name", "iteration"], kind="stable").reset_index(drop=True))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """``df`` as parquet at ``path``, written atomically (no index)."""
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_tables_and_plots(run: RunDir, cfg: dict[str, Any], search: str, frames: SweepFrames,
                           results: pd.DataFrame, train_size: int) -> tuple[list[Path], list[Path]]:
    """curves.parquet, latents.parquet and trace.parquet (each if not empty), table.md (the results as mean ± sd
    over seeds, ``pipelines.sweeps.text_vae.table.write_table``) and the PNG plots (``train_size``: training sentences,
    for the iteration axis of the β plot); results.parquet is the tracking table's. Returns ``(tables, plots)``,
    the paths written."""
    from pipelines.sweeps.outputs import plot_schedules
    from pipelines.sweeps.text_vae.plots import (
        plot_active_units,
        plot_latents,
        plot_learning_curves,
        plot_trace,
    )
    from pipelines.sweeps.text_vae.table import write_table

    tables = [run / "curves.parquet"]
    write_parquet(tables[0], frames.curves)
    for name, frame in (("latents", frames.latents), ("trace", frames.trace)):
        if len(frame):
            tables.append(run / f"{name}.parquet")
            write_parquet(tables[-1], frame)
    tables.append(write_table(run / "table.md", results, search, cfg["dataset"], cfg["schedules"],
                              cfg["downstream"]))
    plots = [plot_schedules(run / "beta_schedules.png", cfg["schedules"] if search == "grid" else ["cyclical"],
                            cfg["epochs"] * batches_per_epoch(cfg, train_size), **schedule_options(cfg),
                            with_lr=cfg["cyclical_lr"]),
             plot_learning_curves(run / "learning_curves.png",
                                  {name: points.to_dict("records") for name, points in frames.curves.groupby("name")})]
    if len(frames.trace):
        plots.append(plot_trace(run / "kl_mi_per_iteration.png", frames.trace))
    complete = results[results["status"] == "complete"]
    if len(complete) and complete["au"].notna().any():
        plots.append(plot_active_units(run / "active_units.png", complete))
    latents = frames.latents
    if len(latents):
        zs = sorted((c for c in latents.columns if c.startswith("z")), key=lambda c: int(c[1:]))
        plots.append(plot_latents(run / "latent_toy.png",
                                  {name: {"z": df[zs].to_numpy(), "labels": df["label"].to_numpy()}
                                   for name, df in latents.groupby("name")}))
    return tables, plots


def batches_per_epoch(cfg: dict[str, Any], train_size: int) -> int:
    """Updates per epoch of one training (``train_size`` training sentences, global batch ``batch_size``)."""
    return math.ceil(train_size / cfg["batch_size"])


def stored_frames(run: RunDir, search: str, with_seed: bool = False) -> SweepFrames:
    """The :class:`SweepFrames` a finished sweep stored; rebuilt from Tune's experiment on disk (no Ray needed)
    if curves.parquet has gone."""
    if not (run / "curves.parquet").exists():
        from ray.tune import ExperimentAnalysis, ResultGrid

        return tune_frames(ResultGrid(ExperimentAnalysis(str(run / "tune" / SWEEP_STAGE))), search, with_seed)

    def read(name: str) -> pd.DataFrame:
        path = run / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()

    return SweepFrames(read("curves"), read("latents"), read("trace"))


def summary(results: pd.DataFrame) -> str:
    """The results as the console shows them at the end: one line per training, test metrics to 3 decimals."""
    cols = ["schedule", "posterior", "aggressive", "seed", "elbo", "rec", "kl", "ppl", "iw_ppl", "au", "mi"]
    cols += [c for c in ("knn_acc", "acc_1pct", "acc_10pct", "acc_100pct", "status") if c in results.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        return results[cols].to_string(index=False)


def write_report(done: Finished, p: Prepared, plots: list[Path], experiment: str) -> Path:
    """``report.md`` of the sweep (:mod:`pipelines.sweeps.text_vae.report`)."""
    from pipelines.sweeps.text_vae.report import write_report as write

    results = done.results
    facts = {"data": p.data_description, "seeds": training_seeds(p.cfg), "seconds": done.seconds,
             "batches_per_epoch": batches_per_epoch(p.cfg, p.train_size), "rows": len(results),
             "failed": int((results["status"] == "failed").sum()),
             "mlflow": mlflow_line(experiment, p.tracking_uri, done.parent_id)}
    return write(done.run / "report.md", p.settings, results, facts, plots)
