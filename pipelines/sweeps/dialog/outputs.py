"""The dialog sweep's outputs besides ``results.parquet``: Tune's per-trial results as :class:`DialogTables`
(per-epoch curves and generated examples), read from Tune (:func:`tune_tables`) or back from a finished run
(:func:`stored_tables`), and written with the plots and report.md (:func:`write_outputs`). Units: metrics in nats
per response (``trainables.text.dialog_metrics``), iterations = updates of one training.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write, read_json, write_json
from pipelines.sweeps.dialog import axes
from pipelines.sweeps.driver import Finished, Prepared, mlflow_line
from pipelines.sweeps.settings import schedule_options, training_seeds


@dataclass
class DialogTables:
    """``curves``: per-epoch points (trial_id, configuration label of ``pipelines.sweeps.dialog.axes.label``, e.g.
    ``cyclical / gaussian / bow``, seed, epoch and the tracking's ``EPOCH_KEYS``); ``examples``: configuration ->
    the generated examples of its first complete seed."""

    curves: pd.DataFrame
    examples: dict[str, list]


def tune_tables(grid) -> DialogTables:
    """The :class:`DialogTables` of Tune's per-trial results: per-epoch points of every trial, and the generated
    examples of each configuration's lowest complete seed."""
    from pipelines.sweeps.dialog.tracking import EPOCH_KEYS, curve_points
    from pipelines.sweeps.tracking import trial_identity

    curves, examples = [], {}
    for result in sorted(grid, key=lambda r: str(r.path)):
        config, trial_id = trial_identity(result)
        if config is None:
            continue
        train, label = config["train"], axes.label(axes.values_of(config))
        curves += [{"trial_id": trial_id, "configuration": label, "seed": int(train["seed"]), **p}
                   for p in curve_points(result.metrics_dataframe)]
        metrics = result.metrics or {}
        if result.error is None and metrics.get("final") and metrics.get("examples") and (
                label not in examples or int(train["seed"]) < examples[label][0]):
            examples[label] = (int(train["seed"]), json.loads(metrics["examples"]))
    df = pd.DataFrame(curves, columns=["trial_id", "configuration", "seed", "epoch", *EPOCH_KEYS])
    return DialogTables(df.sort_values(["configuration", "seed", "epoch"], kind="stable").reset_index(drop=True),
                        {k: v[1] for k, v in examples.items()})


def stored_tables(run: RunDir) -> DialogTables:
    """The :class:`DialogTables` a finished sweep wrote (curves.parquet, examples.json)."""
    return DialogTables(pd.read_parquet(run / "curves.parquet"), read_json(run / "examples.json"))


def write_outputs(done: Finished, p: Prepared, experiment: str) -> list[Path]:
    """curves.parquet, examples.json, the plots (learning curves per configuration and seed, the β schedules over
    a training's iterations) and report.md; returns the paths written."""
    from pipelines.sweeps.dialog.plots import plot_curves
    from pipelines.sweeps.dialog.report import write_report
    from pipelines.sweeps.outputs import plot_schedules

    run, cfg, tables = done.run, p.cfg, done.tables
    atomic_write(run / "curves.parquet", lambda tmp: tables.curves.to_parquet(tmp, index=False))
    write_json(run / "examples.json", tables.examples)
    per_config: dict[str, list] = {}
    for (label, _), points in tables.curves.groupby(["configuration", "seed"], sort=True):
        per_config.setdefault(label, []).append(points.to_dict("records"))
    batches = math.ceil(p.train_size / cfg["batch_size"])  # updates per epoch
    plots = [plot_curves(run / "learning_curves.png", per_config),
             plot_schedules(run / "beta_schedules.png", cfg["schedules"], cfg["epochs"] * batches,
                            **schedule_options(cfg))]
    results = done.results
    facts = {"data": p.data_description, "seeds": training_seeds(cfg), "seconds": done.seconds, "rows": len(results),
             "failed": int((results["status"] == "failed").sum()), "batches_per_epoch": batches,
             "mlflow": mlflow_line(experiment, p.tracking_uri, done.parent_id)}
    report = write_report(run / "report.md", p.settings, results, facts, plots, tables.examples)
    return [run / "curves.parquet", run / "examples.json", *plots, report]


def summary(results: pd.DataFrame) -> str:
    """The results as the console shows them at the end: one line per training, test metrics to 3 decimals."""
    cols = [*axes.COLUMNS, "seed", "rec_ppl", "kl", "bleu4_p", "bleu4_r", "bleu4_f1", "bow_avg_r", "bow_extrema_r",
            "inter_dist2", "response_len", "act_acc", "status"]
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.precision", 3):
        return results[cols].to_string(index=False)
