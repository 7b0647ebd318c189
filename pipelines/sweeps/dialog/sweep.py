"""Dialog CVAE sweep on Ray Tune: β schedules × posteriors × seeds for a kgCVAE-style conditional VAE on Switchboard.

``python pipelines/dialog.py [--preset swda-small|swda] [--set key=value ...] [--data-dir DIR] [--output DIR]
[--resume] [--tracking-uri URI] [--address ADDR] [--no-dashboard]``, locally or through ``ray job submit
--working-dir . -- python pipelines/dialog.py ...``.

Stages:

1. **prepare** (the driver, before Ray starts): the preset of ``pipelines/presets/dialog.yaml`` with the ``--set``
   overrides (YAML values) checked by :func:`validate`; the dialogs loaded from ``--data-dir``, else
   ``$DCSOD_DATA_DIR``, else ``../shared/data`` next to the repository (``swda/{train,valid,test}.jsonl``, or
   ``swda/valid.jsonl`` alone, split by dialog with ``seed``); the tracking URI and an existing run directory
   checked. Any problem is one line ``error: ...`` on stderr and exit status 2, with nothing written.
2. **sweep**: one Tune experiment in ``DIR/tune/sweep``, shown as one progress bar: every configuration of
   ``schedules × posteriors`` is trained once per entry of ``seeds`` (one trial each, ``trainables.text.dialog_tune``,
   on reused actors, ``concurrency`` at a time). The driver records every finished trial once
   (:class:`pipelines.sweeps.dialog.tracking.DialogRecorder`): a row of ``results.parquet`` and an MLflow run in
   experiment ``dialog-swda``, nested under the run directory's parent run (every setting as a param, the code
   and package versions; found again, not duplicated, by a rerun).
3. **outputs**, written atomically into ``--output`` (default ``runs/dialog/<preset>``): ``results.parquet`` (one
   row per configuration and seed: ``schedule, posterior, seed``, the test metrics ``rec, kl, elbo, rec_ppl,
   ppl, mi, bleu{1..4}_{p,r}, bow_avg, bow_extrema, bow_greedy, distinct_1, distinct_2, act_acc``, the
   settings, ``status``, ``error``, ``trial_id``, ``mlflow_run_id``), ``curves.parquet`` (per epoch),
   ``examples.json`` (generated responses), ``learning_curves.png`` (validation KL, rec and β per epoch),
   ``beta_schedules.png``, ``report.md`` (a table like the thesis's Table 2.3 with mean ± sd over seeds and a
   plain-words reading with Welch's test over seeds) and ``manifest.json``.

Resume: rerun the same command (or add ``--resume``) after a crash or ``kill -9``: the Tune experiment continues
with ``Tuner.restore`` and no row or MLflow run is written twice; once the sweep is finished a rerun trains
nothing and only rewrites the outputs. Other settings on an existing ``--output`` are refused.

Run time: trainings (configurations × seeds) × epochs × updates per epoch (training pairs / batch_size) × the
cost of one update (model sizes, context_window, max_utt_len), divided by ``concurrency``, plus the test
generation (``samples`` per context) and Ray's start-up.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.mlflow_runs import RunTree, check_tracking_uri, default_tracking_uri
from pipelines.common.ray_session import check_resources, is_local, quiet_libraries, start_ray
from pipelines.common.rundir import RunDir, RunDirError, atomic_write, read_json, write_json
from pipelines.common.settings import PRESETS_DIR, ConfigError, PresetFile, check, is_int
from pipelines.sweeps import cli as sweep_cli
from pipelines.sweeps.cli import SWEEP_STAGE, Prepared
from pipelines.sweeps.text_vae.sweep import resolve_data_dir, training_seeds

DATA_KEYS = ("context_window", "max_utt_len", "min_freq", "val_frac", "test_frac", "max_dialogs", "seed")
MODEL_KEYS = ("emb_dim", "utt_hidden", "ctx_hidden", "dec_hidden", "mlp_hidden", "latent_dim", "act_dim",
              "act_knowledge", "bow_weight", "act_weight", "word_dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "monotonic_ratio", "beta_max", "shape", "k_max",
              "k_min", "j_samples", "aggressive", "aggressive_max_steps", "eval_components", "mi_rows", "samples",
              "gen_max_len")
INTEGERS = {"context_window": 1, "max_utt_len": 1, "min_freq": 1, "max_dialogs": 0, "emb_dim": 1, "utt_hidden": 1,
            "ctx_hidden": 1, "dec_hidden": 1, "mlp_hidden": 1, "latent_dim": 1, "act_dim": 1, "si_noise_dim": 1,
            "epochs": 1, "batch_size": 1, "cycles": 1, "k_max": 0, "k_min": 0, "j_samples": 1,
            "aggressive_max_steps": 1, "seed": 0, "eval_components": 1, "mi_rows": 2, "samples": 1,
            "gen_max_len": 1, "vector_dim": 2, "concurrency": 1}
FLOATS = ("val_frac", "test_frac", "bow_weight", "act_weight", "word_dropout", "lr", "ratio", "monotonic_ratio",
          "beta_max", "cpus_per_trial", "gpus_per_trial")
EXPERIMENT = "dialog-swda"


# --- settings -----------------------------------------------------------------------------------------
def _names(cfg: dict, key: str) -> None:
    value = [cfg[key]] if isinstance(cfg[key], str) else cfg[key]
    check(isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
          f"{key}: expected a non-empty list of names, e.g. --set '{key}=[a, b]', got {cfg[key]!r}")
    check(len(set(value)) == len(value), f"{key}: duplicate entries in {value}")
    cfg[key] = value


def validate(cfg: dict) -> None:
    """Check every value (types, ranges, registry names through their registries); one-line :class:`ConfigError`.
    Normalises in place: ints for float keys become floats, a single grid entry becomes a list of one."""
    from search_space.registry import RegistryError
    from trainables.text.beta_schedules import make_schedule
    from trainables.text.posteriors import make_posterior

    for key, low in INTEGERS.items():
        check(is_int(cfg[key], low), f"{key}: expected an integer >= {low}, got {cfg[key]!r}")
    for key in FLOATS:
        v = cfg[key]
        check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              f"{key}: expected a number, got {v!r}")
        cfg[key] = float(v)
    for key in ("act_knowledge", "aggressive"):
        check(isinstance(cfg[key], bool), f"{key}: expected true or false, got {cfg[key]!r}")
    check(isinstance(cfg["seeds"], list) and all(is_int(s, 0) for s in cfg["seeds"])
          and len(set(cfg["seeds"])) == len(cfg["seeds"]),
          f"seeds: expected a list of distinct integers >= 0, e.g. --set 'seeds=[0, 1, 2]', got {cfg['seeds']!r}")
    _names(cfg, "schedules")
    _names(cfg, "posteriors")
    check(isinstance(cfg["shape"], str), f"shape: expected a name, got {cfg['shape']!r}")
    try:
        for entry in cfg["schedules"]:
            make_schedule(entry, cfg["cycles"], cycles=cfg["cycles"], ratio=cfg["ratio"],
                          monotonic_ratio=cfg["monotonic_ratio"], beta_max=cfg["beta_max"], shape=cfg["shape"])
        for name in cfg["posteriors"]:
            options = {"noise_dim": cfg["si_noise_dim"]} if name == "semi-implicit" else {}
            make_posterior(name, cfg["ctx_hidden"], cfg["latent_dim"], **options)
    except RegistryError as err:
        raise ConfigError(str(err)) from None
    check(cfg["k_min"] <= cfg["k_max"], f"need k_min <= k_max, got k_min={cfg['k_min']}, k_max={cfg['k_max']}")
    check(cfg["lr"] > 0, f"lr: expected a number > 0, got {cfg['lr']}")
    check(0.0 <= cfg["word_dropout"] <= 1.0, f"word_dropout: expected a number in [0, 1], got {cfg['word_dropout']}")
    check(min(cfg["bow_weight"], cfg["act_weight"]) >= 0, "bow_weight, act_weight: expected numbers >= 0")
    check(cfg["cpus_per_trial"] > 0 and cfg["gpus_per_trial"] >= 0,
          f"cpus_per_trial > 0 and gpus_per_trial >= 0 expected, got {cfg['cpus_per_trial']}, {cfg['gpus_per_trial']}")
    fracs = cfg["val_frac"], cfg["test_frac"]
    check(min(fracs) > 0 and sum(fracs) < 1, f"val_frac, test_frac: expected two numbers > 0 with a sum < 1, "
          f"got {fracs[0]}, {fracs[1]}")


DIALOG_PRESETS = PresetFile(PRESETS_DIR / "dialog.yaml", validate=validate)


def load_config(preset: str = "swda-small", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key=value``, YAML values) applied."""
    return DIALOG_PRESETS.load(preset, overrides)


# --- the Tune experiment --------------------------------------------------------------------------------
def base_trial_config(cfg: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The trial config of ``trainables.text.dialog_tune`` before the grid entries are filled in."""
    return {"data_dir": str(data_dir), "data": {k: cfg[k] for k in DATA_KEYS},
            "model": {**{k: cfg[k] for k in MODEL_KEYS},
                      "posterior_options": {"semi-implicit": {"noise_dim": cfg["si_noise_dim"]}}},
            "train": {k: cfg[k] for k in TRAIN_KEYS}, "vector_dim": cfg["vector_dim"],
            "threads": max(1, int(cfg["cpus_per_trial"])), "device": "cuda" if cfg["gpus_per_trial"] > 0 else "cpu"}


def param_space(cfg: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Nested ``grid_search`` over posteriors × schedules × seeds."""
    from ray import tune

    space = base_trial_config(cfg, data_dir)
    space["model"]["posterior"] = tune.grid_search(cfg["posteriors"])
    space["train"]["schedule"] = tune.grid_search(cfg["schedules"])
    space["train"]["seed"] = tune.grid_search(training_seeds(cfg))
    return space


def run_sweep(run: RunDir, cfg: dict[str, Any], data_dir: Path, recorder):
    """Fit (or restore and continue) the sweep's Tuner in ``DIR/tune/sweep``; its ResultGrid."""
    from ray import tune

    from pipelines.sweeps.dialog.tracking import trial_dirname
    from trainables.text.dialog_tune import dialog_trainable

    trainable = tune.with_resources(dialog_trainable, {"cpu": cfg["cpus_per_trial"], "gpu": cfg["gpus_per_trial"]})
    space, path = param_space(cfg, data_dir), run / "tune" / SWEEP_STAGE
    if tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json")):
        print(f"continuing the interrupted sweep in {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=space, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False).fit()
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cfg["concurrency"],
                                                   trial_name_creator=trial_dirname,
                                                   trial_dirname_creator=trial_dirname),
                       run_config=tune.RunConfig(name=SWEEP_STAGE, storage_path=str(run / "tune"),
                                                 callbacks=[recorder], verbose=0))
    return tuner.fit()


def tune_outputs(grid) -> tuple[pd.DataFrame, dict[str, list]]:
    """``(curves, examples)`` from Tune's per-trial results: per-epoch points of every trial, and the generated
    examples of each configuration's first complete seed (configuration label -> examples)."""
    from pipelines.sweeps.dialog.tracking import EPOCH_KEYS, curve_points
    from pipelines.sweeps.tracking import trial_identity

    curves, examples = [], {}
    for result in sorted(grid, key=lambda r: str(r.path)):
        config, trial_id = trial_identity(result)
        if config is None:
            continue
        train, model = config["train"], config["model"]
        label = f"{train['schedule']} / {model['posterior']}"
        curves += [{"trial_id": trial_id, "configuration": label, "seed": int(train["seed"]), **p}
                   for p in curve_points(result.metrics_dataframe)]
        metrics = result.metrics or {}
        if result.error is None and metrics.get("final") and metrics.get("examples") and (
                label not in examples or int(train["seed"]) < examples[label][0]):
            examples[label] = (int(train["seed"]), json.loads(metrics["examples"]))
    df = pd.DataFrame(curves, columns=["trial_id", "configuration", "seed", "epoch", *EPOCH_KEYS])
    return (df.sort_values(["configuration", "seed", "epoch"], kind="stable").reset_index(drop=True),
            {k: v[1] for k, v in examples.items()})


# --- command line -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return sweep_cli.sweep_parser("python pipelines/dialog.py", __doc__, {
        "--preset": {"default": "swda-small", "help": f"one of {', '.join(DIALOG_PRESETS.names())}"},
        "--set": {"help": "override a setting, e.g. --set epochs=5 --set 'seeds=[0, 1]' (values are YAML)"},
        "--data-dir": {"help": "folder holding swda/ (default $DCSOD_DATA_DIR, else ../shared/data)"},
        "--output": {"default": None, "help": "run directory (default runs/dialog/<preset>)"},
        "--resume": {},
        "--tracking-uri": {"help": "MLflow tracking URI (default MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in "
                                   "the working directory)"},
        "--address": {}, "--no-dashboard": {},
    }).parse_args(argv)


def prepare(args: argparse.Namespace) -> Prepared:
    """Validate everything that can be checked before Ray starts and load the dialogs; nothing is written."""
    from trainables.text.dialog_data import load_swda

    cfg = load_config(args.preset, args.sets)
    data_dir = resolve_data_dir(args.data_dir)
    output = Path(args.output or Path("runs") / "dialog" / args.preset)
    tracking_uri = check_tracking_uri(args.tracking_uri or default_tracking_uri(output))
    settings = {**cfg, "data_dir": str(data_dir)}
    sweep_cli.check_output(args, output, settings, tracking_uri)
    data = sweep_cli.load_corpus(lambda: load_swda(data_dir, **{k: cfg[k] for k in DATA_KEYS}))
    return Prepared(cfg, settings, output, tracking_uri, data_dir, len(data.train), data.describe())


@dataclass
class FinishedDialog:
    run: RunDir
    results: pd.DataFrame
    curves: pd.DataFrame
    examples: dict
    seconds: float
    parent_id: str | None
    tree: RunTree | None = None


def train_sweep(args: argparse.Namespace, p: Prepared, start: float) -> FinishedDialog | int:
    """Run (or resume) the sweep with a progress bar under the MLflow parent run; the exit status if it stopped."""
    from pipelines.sweeps.dialog.tracking import DialogRecorder, DialogResultsTable, SweepProgress

    cfg = p.cfg
    try:
        quiet_libraries()
        start_ray(args.address, dashboard=not args.no_dashboard)
        need = {"CPU": cfg["cpus_per_trial"], **({"GPU": cfg["gpus_per_trial"]} if cfg["gpus_per_trial"] else {})}
        check_resources(need, local=is_local(args.address), what="a configuration",
                        hints={"GPU": "set gpus_per_trial=0 to train on CPUs"})
        run = RunDir.open(p.output, p.settings, tracking_uri=p.tracking_uri)
    except (ConfigError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tags = {"preset": cfg["preset"], "dialog.run_dir": str(run.path)}
    tree = sweep_cli.parent_run_or_exit(run, p, EXPERIMENT, tags, f"dialog ({cfg['preset']})")
    if isinstance(tree, int):
        return tree
    trial_tags = {**tags, **RunTree.nest_under(tree.root)}

    def recorder(progress: SweepProgress | None = None) -> DialogRecorder:
        return DialogRecorder(run.path, EXPERIMENT, p.tracking_uri, extra_tags=trial_tags, progress=progress)

    total = len(cfg["schedules"]) * len(cfg["posteriors"]) * len(training_seeds(cfg))
    grid = sweep_cli.fit_or_exit(lambda: run_sweep(run, cfg, p.data_dir, recorder(SweepProgress(total))), tree,
                                 "trainings")
    if isinstance(grid, int):
        return grid
    recorder().reconcile(grid)
    results = DialogResultsTable(run / "results.parquet").read()
    curves, examples = tune_outputs(grid)
    return FinishedDialog(run, results, curves, examples, time.perf_counter() - start, tree.root, tree)


def stored_sweep(run: RunDir) -> FinishedDialog:
    """A finished sweep's rows, curves and examples read back (nothing trains, MLflow is not touched)."""
    from pipelines.sweeps.dialog.tracking import DialogResultsTable

    info = run.info(SWEEP_STAGE)
    print(f"the sweep in {run.path} finished on {info['finished']}: nothing to train; rewriting the outputs")
    return FinishedDialog(run, DialogResultsTable(run / "results.parquet").read(),
                          pd.read_parquet(run / "curves.parquet"), read_json(run / "examples.json"),
                          float(info.get("seconds", 0.0)), info.get("mlflow_parent_run"))


def write_outputs(done: FinishedDialog, p: Prepared) -> list[Path]:
    """curves.parquet, examples.json, the plots and report.md; returns the paths written."""
    from pipelines.sweeps.dialog.plots import plot_curves
    from pipelines.sweeps.dialog.report import write_report
    from pipelines.sweeps.text_vae.plots import plot_schedules

    run, cfg = done.run, p.cfg
    atomic_write(run / "curves.parquet", lambda tmp: done.curves.to_parquet(tmp, index=False))
    write_json(run / "examples.json", done.examples)
    per_config: dict[str, list] = {}
    for (label, _), points in done.curves.groupby(["configuration", "seed"], sort=True):
        per_config.setdefault(label, []).append(points.to_dict("records"))
    batches = math.ceil(p.train_size / cfg["batch_size"])
    plots = [plot_curves(run / "learning_curves.png", per_config),
             plot_schedules(run / "beta_schedules.png", cfg["schedules"], cfg["epochs"] * batches, cycles=cfg["cycles"],
                            ratio=cfg["ratio"], shape=cfg["shape"], monotonic_ratio=cfg["monotonic_ratio"],
                            beta_max=cfg["beta_max"])]
    results = done.results
    parent = f" (parent run {done.parent_id})" if done.parent_id else ""
    facts = {"data": p.data_description, "seeds": training_seeds(cfg), "seconds": done.seconds, "rows": len(results),
             "failed": int((results["status"] == "failed").sum()), "batches_per_epoch": batches,
             "mlflow": f"experiment {EXPERIMENT}{parent} at {p.tracking_uri}"}
    report = write_report(run / "report.md", p.settings, results, facts, plots, done.examples)
    return [run / "curves.parquet", run / "examples.json", *plots, report]


def summary(results: pd.DataFrame) -> str:
    cols = ["schedule", "posterior", "seed", "rec_ppl", "kl", "bleu4_p", "bleu4_r", "bow_avg", "distinct_2",
            "act_acc", "status"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        return results[cols].to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = sweep_cli.prepare_and_run(args, prepare, lambda run, p: stored_sweep(run),
                                        lambda p, start: train_sweep(args, p, start))
    if isinstance(outcome, int):
        return outcome
    p, done, start = outcome
    written = write_outputs(done, p)
    return sweep_cli.finish_sweep(done, p, written, summary(done.results), EXPERIMENT, start)
