"""Text-VAE sweep on Ray Tune: β schedules × posteriors × aggressive training × seeds for LSTM text VAEs.

``python pipelines/text_vae.py [--preset toy|ptb|yelp|ptb-paper|yelp-paper] [--set key=value ...] [--output DIR]
[--resume] [--search grid|optuna] [--data-dir DIR] [--tracking-uri URI] [--address ADDR] [--no-dashboard]``, locally or
through ``ray job submit --working-dir . -- python pipelines/text_vae.py ...``.

Stages:

1. **prepare** (the driver, before Ray starts): the preset of ``pipelines/presets/text_vae.yaml`` with the
   ``--set`` overrides (YAML values: ``--set epochs=5``, ``--set 'schedules=[constant, cyclical]'``) checked by
   :func:`validate`, the corpus loaded (ptb/yelp: ``--data-dir``, else ``$DCSOD_DATA_DIR``, else
   ``../shared/data`` next to the repository), the tracking URI and an existing run directory checked. Any
   problem is one line ``error: ...`` on stderr and exit status 2, with nothing written.
2. **sweep**: one Tune experiment in ``DIR/tune/sweep``, shown as one progress bar (configurations done, best
   test ELBO and lowest perplexity so far; one ``warning:`` line per failed configuration; Tune's status tables
   are off). ``--search grid`` (default): every configuration of ``schedules × posteriors × aggressive`` is
   trained once per entry of ``seeds`` (``[]``: once, with ``seed``), each training one trial (the VAE trains
   inside it, ``trainables.text.vae_tune``) on reused actors, ``concurrency`` at a time; a ``schedules`` entry is
   a schedule name (``constant``, ``monotonic``, ``cyclical``, ``ae``) or ``name@β_max`` (``cyclical@0.5``), so
   Table 2.1's rows are one sweep: ``--set 'schedules=[ae, monotonic@0.5, cyclical@0.5, monotonic, cyclical]'``.
   ``--search optuna``: Tune's ``OptunaSearch`` (TPE) proposes the cycle count M (``cycles``), the cyclical ratio
   R (``ratio``), ``k_max`` and ``lr`` of a cyclical-schedule, semi-implicit VAE (``aggressive`` = the first
   entry of the list, one seed) for ``optuna_trials`` trials; ASHA stops bad trials early on the per-epoch
   validation ELBO. ``workers`` > 1: each configuration trains data-parallel through Ray Train (a
   ``TorchTrainer`` of ``workers`` DDP workers inside its trial, each asking for ``cpus_per_trial`` CPUs and
   ``gpus_per_trial`` GPUs; the Ray Train runs' files go under ``DIR/train``). The driver records every finished
   trial once (:class:`pipelines.sweeps.text_vae.tracking.TextVAERecorder`): a row of ``results.parquet`` and an MLflow
   run in experiment ``text-vae-<dataset>``, nested under the run directory's parent run (every setting as a
   param, the code version as tag ``dcsod.code_version``, package versions as ``version.*`` params; found again,
   not duplicated, by a rerun; FINISHED when the sweep completes); a trial run starts and ends when its
   training did.
3. **outputs**, from Tune's own per-trial results (``ResultGrid``), all written atomically into ``--output``
   (default ``runs/text_vae/<preset>``): ``results.parquet`` (one row per training, i.e. per configuration and
   seed, or per trial for Optuna: ``schedule, posterior, aggressive, elbo, rec, kl, ppl, iw_ppl, au, mi`` on the
   test split, plus ``iw_nll, tokens_per_s, train_seconds``, ``knn_acc`` (toy), ``acc_1pct/acc_10pct/
   acc_100pct`` (yelp), ``val_elbo, epochs_run, seed, status, error, trial_id, mlflow_run_id``, ...; units in
   ``trainables.text.vae_metrics``), ``curves.parquet`` (per-epoch metrics), ``trace.parquet`` (with ``trace_every``
   > 0: KL, MI and AU of a validation subset every ``trace_every`` iterations), ``latents.parquet`` (toy: z
   samples of the test sentences), ``table.md`` (the thesis's Table 2.1/3.2 columns as mean ± sd over seeds,
   and a Welch test per thesis claim), ``beta_schedules.png``, ``learning_curves.png``,
   ``kl_mi_per_iteration.png`` (KL and MI against iteration, one line per schedule), ``active_units.png`` (AU
   per posterior and schedule), ``latent_toy.png`` (toy), ``report.md``
   (what was run, mean ± sd over seeds per configuration, which schedule kept the most KL/MI in z, posterior
   collapse, and whether the differences exceed seed noise; the plots embedded) and ``manifest.json`` (the
   settings, including ``search`` and the data directory, and the finished sweep). The command ends by naming
   every output it wrote, the MLflow experiment, parent run and tracking URI.

Resume: rerun the same command (or add ``--resume``) after a crash or ``kill -9``: the Tune experiment continues
with ``Tuner.restore`` (finished trials kept, unfinished ones rerun, Optuna's state included) and no result row
or MLflow run is written twice; once the manifest says the sweep is finished, a rerun trains nothing, adds no
MLflow run and only rewrites the outputs from the stored rows. Other settings on an existing ``--output`` are
refused (one line naming the first differing key).

Run time: configurations × seeds × epochs × updates per epoch (training sentences / batch_size) × the cost of one
update (model size: emb_dim, hidden_dim, j_samples, k_max; aggressive training adds up to aggressive_max_steps
encoder steps per update), divided by how many train at once (concurrency, bounded by the free CPUs/GPUs), plus
the test evaluation (iw_samples, eval_components) and Ray's start-up. The default toy preset (12
configurations, 100 epochs of 50 updates, 2 at a time) took 9 min 52 s on a loaded 2-core machine (measured
2026-11-29, 2 cores); the ptb preset (36 trainings of 8 epochs x 172 updates, half of them with aggressive
training) took 55 min 44 s and the yelp preset 24 min 57 s on 2 cores (2026-11-30); a rerun of a finished run takes
seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.mlflow_runs import RunTree, check_tracking_uri, default_tracking_uri
from pipelines.common.ray_session import check_resources, is_local, quiet_libraries, start_ray
from pipelines.common.rundir import RunDir, RunDirError, atomic_write
from pipelines.common.settings import PRESETS_DIR, ConfigError, PresetFile, check, is_int
from pipelines.sweeps.cli import (
    SWEEP_STAGE,
    Prepared,
    check_output,
    finish_sweep,
    fit_or_exit,
    load_corpus,
    mlflow_line,
    parent_run_or_exit,
    prepare_and_run,
    sweep_parser,
)

REPO = Path(__file__).resolve().parents[3]
MODEL_KEYS = ("emb_dim", "hidden_dim", "latent_dim", "word_dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "monotonic_ratio", "beta_max", "shape", "cyclical_lr",
              "k_max", "k_min", "j_samples", "aggressive_max_steps", "iw_samples", "eval_components", "mi_rows",
              "latent_samples", "trace_every", "trace_rows", "seed")
#: preset key -> loader argument, per dataset.
DATA_KEYS = {"toy": {"toy_copies": "copies"},
             "ptb": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac")},
             "yelp": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac", "limit")}}
#: integer keys and their least valid value.
INTEGERS = {"toy_copies": 1, "max_len": 1, "min_freq": 1, "limit": 0, "emb_dim": 1, "hidden_dim": 1,
            "latent_dim": 1, "si_noise_dim": 1, "epochs": 1, "batch_size": 1, "cycles": 1, "k_max": 0, "k_min": 0,
            "j_samples": 1, "aggressive_max_steps": 1, "seed": 0, "iw_samples": 0, "eval_components": 1,
            "mi_rows": 1, "latent_samples": 0, "trace_every": 0, "trace_rows": 1, "concurrency": 1, "workers": 1,
            "optuna_trials": 1, "asha_grace": 1}
FLOATS = ("word_dropout", "lr", "ratio", "monotonic_ratio", "beta_max", "val_frac", "test_frac", "cpus_per_trial",
          "gpus_per_trial")


# --- settings -----------------------------------------------------------------------------------------
def _number(cfg: dict, key: str) -> float:
    """``cfg[key]`` as a float (an int is accepted and stored as a float, so ``--set lr=1`` equals ``1.0``)."""
    value = cfg[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    check(ok, f"{key}: expected a number, got {value!r}")
    cfg[key] = float(value)
    return cfg[key]


def _names(cfg: dict, key: str, registry=None) -> None:
    """A non-empty list of distinct names (one name alone is taken as a list of one), each looked up in
    ``registry`` when one is given."""
    value = cfg[key]
    if isinstance(value, str):
        check("," not in value, f"{key}: lists are YAML, e.g. --set '{key}=[{', '.join(value.split(','))}]'")
        value = [value]
    check(isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
          f"{key}: expected a non-empty list of names, got {value!r}")
    check(len(set(value)) == len(value), f"{key}: duplicate entries in {value}")
    if registry is not None:
        for name in value:
            registry.lookup(name)
    cfg[key] = value


def _seeds(cfg: dict) -> None:
    """``seeds``: a list of distinct integers >= 0 (``[]``: train once, with ``seed``)."""
    seeds = cfg["seeds"]
    check(isinstance(seeds, list) and all(is_int(x, 0) for x in seeds),
          f"seeds: expected a list of integers >= 0, e.g. --set 'seeds=[0, 1, 2]', got {seeds!r}")
    check(len(set(seeds)) == len(seeds), f"seeds: duplicate entries in {seeds}")


def training_seeds(cfg: dict[str, Any]) -> list[int]:
    """The seeds every configuration is trained with: ``seeds``, else ``[seed]``."""
    return list(cfg["seeds"]) or [cfg["seed"]]


def validate(cfg: dict) -> None:
    """Check every value of a text-VAE configuration: types, ranges and registry names (datasets, β schedule
    entries ``name`` or ``name@β_max``, ramps, posteriors, each built through its registry). Raises a one-line
    :class:`ConfigError`. Normalises in place: ints given for float keys become floats, one grid entry given
    alone becomes a list of one."""
    from search_space.registry import RegistryError
    from trainables.text.beta_schedules import RAMPS, make_schedule, schedule_entry
    from trainables.text.data import DATASETS
    from trainables.text.posteriors import POSTERIORS, make_posterior

    for key, low in INTEGERS.items():
        check(is_int(cfg[key], low), f"{key}: expected an integer >= {low}, got {cfg[key]!r}")
    for key in FLOATS:
        _number(cfg, key)
    check(isinstance(cfg["cyclical_lr"], bool), f"cyclical_lr: expected true or false, got {cfg['cyclical_lr']!r}")
    for key in ("dataset", "shape"):
        check(isinstance(cfg[key], str), f"{key}: expected a name, got {cfg[key]!r}")
    aggressive = [cfg["aggressive"]] if isinstance(cfg["aggressive"], bool) else cfg["aggressive"]
    check(isinstance(aggressive, list) and bool(aggressive) and all(isinstance(v, bool) for v in aggressive),
          f"aggressive: expected a non-empty list of true/false, got {cfg['aggressive']!r}")
    check(len(set(aggressive)) == len(aggressive), f"aggressive: duplicate entries in {aggressive}")
    cfg["aggressive"] = aggressive
    _seeds(cfg)
    try:
        DATASETS.lookup(cfg["dataset"])
        _names(cfg, "schedules")
        _names(cfg, "posteriors", POSTERIORS)
        RAMPS.lookup(cfg["shape"])
        for entry in cfg["schedules"]:  # checks the name, cycles, both ratios, β_max and shape as a run uses them
            make_schedule(entry, cfg["cycles"], **schedule_options(cfg))
        parsed = [schedule_entry(e, cfg["beta_max"]) for e in cfg["schedules"]]
        check(len(set(parsed)) == len(parsed), f"schedules: entries {cfg['schedules']} name the same schedule "
              f"twice (an entry without '@' has β_max = beta_max = {cfg['beta_max']})")
        for name in cfg["posteriors"]:
            options = {"noise_dim": cfg["si_noise_dim"]} if name == "semi-implicit" else {}
            make_posterior(name, cfg["hidden_dim"], cfg["latent_dim"], **options)
    except RegistryError as err:
        raise ConfigError(str(err)) from None
    check(0.0 <= cfg["word_dropout"] <= 1.0, f"word_dropout: expected a number in [0, 1], got {cfg['word_dropout']}")
    check(cfg["k_min"] <= cfg["k_max"], f"need 0 <= k_min <= k_max, got k_min={cfg['k_min']}, k_max={cfg['k_max']}")
    check(cfg["lr"] > 0, f"lr: expected a number > 0, got {cfg['lr']}")
    check(cfg["cpus_per_trial"] > 0, f"cpus_per_trial: expected a number > 0, got {cfg['cpus_per_trial']}")
    check(cfg["gpus_per_trial"] >= 0, f"gpus_per_trial: expected a number >= 0, got {cfg['gpus_per_trial']}")
    fracs = cfg["val_frac"], cfg["test_frac"]
    check(min(fracs) > 0 and sum(fracs) < 1, f"val_frac, test_frac: expected two numbers > 0 with a sum < 1, "
          f"got {fracs[0]}, {fracs[1]}")


TEXT_VAE_PRESETS = PresetFile(PRESETS_DIR / "text_vae.yaml", validate=validate,
                              fixed=("dataset",))


def schedule_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``trainables.text.beta_schedules.make_schedule`` in a configuration."""
    return {k: cfg[k] for k in ("cycles", "ratio", "monotonic_ratio", "beta_max", "shape")}


def load_config(preset: str = "toy", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key=value`` strings, YAML values) applied."""
    return TEXT_VAE_PRESETS.load(preset, overrides)


def resolve_data_dir(cli_value: str | None) -> Path:
    """``--data-dir``, else ``$DCSOD_DATA_DIR``, else ``<repo>/../shared/data``; must be a directory."""
    path = Path(cli_value or os.environ.get("DCSOD_DATA_DIR") or REPO.parent / "shared" / "data")
    check(path.is_dir(), f"data directory {path} does not exist (use --data-dir or set DCSOD_DATA_DIR)")
    return path.resolve()


# --- the Tune experiment ------------------------------------------------------------------------------
def data_options(cfg: dict[str, Any]) -> dict[str, Any]:
    opts = {arg: cfg[key] for key, arg in DATA_KEYS[cfg["dataset"]].items()}
    opts["seed"] = cfg["seed"] if cfg["dataset"] != "toy" else None
    if opts.get("limit") == 0:
        opts["limit"] = None
    return {k: v for k, v in opts.items() if v is not None}


def worker_resources(cfg: dict[str, Any]) -> dict[str, float]:
    """Ray resources of one training process (the trial's, or each Ray Train worker's)."""
    return {"CPU": cfg["cpus_per_trial"], **({"GPU": cfg["gpus_per_trial"]} if cfg["gpus_per_trial"] > 0 else {})}


def base_trial_config(cfg: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """The trial config of ``trainables.text.vae_tune`` before the grid/search entries are filled in."""
    return {
        "dataset": cfg["dataset"], "data_dir": str(data_dir) if data_dir else None, "data": data_options(cfg),
        "model": {**{k: cfg[k] for k in MODEL_KEYS},
                  "posterior_options": {"semi-implicit": {"noise_dim": cfg["si_noise_dim"]}}},
        "train": {k: cfg[k] for k in TRAIN_KEYS},
        "threads": max(1, int(cfg["cpus_per_trial"])), "downstream": cfg["dataset"] == "yelp",
        "device": "cuda" if cfg["gpus_per_trial"] > 0 else "cpu",
        "workers": cfg["workers"], "worker_resources": worker_resources(cfg),
    }


def param_space(cfg: dict[str, Any], base: dict[str, Any], search: str) -> dict[str, Any]:
    """Tune param space: nested ``grid_search`` over the grid, or the Optuna search space."""
    from ray import tune

    space = json.loads(json.dumps(base))
    if search == "grid":
        space["model"]["posterior"] = tune.grid_search(cfg["posteriors"])
        space["train"]["schedule"] = tune.grid_search(cfg["schedules"])
        space["train"]["aggressive"] = tune.grid_search(cfg["aggressive"])
        seeds = training_seeds(cfg)
        space["train"]["seed"] = tune.grid_search(seeds) if len(seeds) > 1 else seeds[0]
    else:
        space["train"]["seed"] = training_seeds(cfg)[0]
        space["model"]["posterior"] = "semi-implicit"
        space["train"].update(schedule="cyclical", aggressive=cfg["aggressive"][0],
                              cycles=tune.randint(1, 9), ratio=tune.uniform(0.1, 0.9),
                              k_max=tune.randint(max(cfg["k_min"], 1), max(cfg["k_min"], 1) + 20),
                              lr=tune.loguniform(cfg["lr"] / 10, cfg["lr"] * 10))
    return space


def run_sweep(run: RunDir, cfg: dict[str, Any], search: str, data_dir: Path | None, recorder):
    """Fit the sweep's Tuner in ``DIR/tune/sweep`` (restored if an interrupted one is there); its ResultGrid."""
    from ray import tune

    from pipelines.sweeps.text_vae.tracking import trial_dirname
    from trainables.text.vae_tune import text_vae_trainable

    if cfg["workers"] > 1:
        # The trial only drives a TorchTrainer whose workers hold the CPUs/GPUs; Tune needs a non-empty
        # request, hence one byte of memory. No actor reuse: a stopped trial's actor is killed, and with it
        # the Ray Train controller it owns.
        trainable = tune.with_resources(text_vae_trainable, {"cpu": 0, "memory": 1})
    else:
        trainable = tune.with_resources(text_vae_trainable, {"cpu": cfg["cpus_per_trial"],
                                                             "gpu": cfg["gpus_per_trial"]})
    space = param_space(cfg, base_trial_config(cfg, data_dir), search)
    if cfg["workers"] > 1:
        space["train_storage"] = str(run / "train")
    path = run / "tune" / SWEEP_STAGE
    # Restorable once Tune saved an experiment state (a driver killed before that restarts the experiment);
    # the param space is given again because tuner.pkl does not hold it.
    if tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json")):
        print(f"continuing the interrupted sweep in {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=space, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        return tuner.fit()
    tune_kw: dict[str, Any] = dict(reuse_actors=cfg["workers"] == 1, max_concurrent_trials=cfg["concurrency"],
                                   trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname)
    if search == "optuna":
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        tune_kw.update(metric="val_elbo", mode="max", num_samples=cfg["optuna_trials"],
                       search_alg=OptunaSearch(seed=cfg["seed"]),
                       scheduler=ASHAScheduler(time_attr="epoch", max_t=cfg["epochs"],
                                               grace_period=min(cfg["asha_grace"], cfg["epochs"]),
                                               reduction_factor=2))
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(**tune_kw),
                       run_config=tune.RunConfig(name=SWEEP_STAGE, storage_path=str(run / "tune"),
                                                 callbacks=[recorder], verbose=0))
    return tuner.fit()


# --- outputs ------------------------------------------------------------------------------------------
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
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_outputs(run: RunDir, cfg: dict[str, Any], search: str, frames: SweepFrames, results: pd.DataFrame,
                  train_size: int) -> tuple[list[Path], list[Path]]:
    """curves.parquet, latents.parquet and trace.parquet (each if not empty), table.md (the results as mean ± sd
    over seeds, ``pipelines.sweeps.text_vae.report.write_table``) and the PNG plots (``train_size``: training sentences,
    for the iteration axis of the β plot); results.parquet is the tracking table's. Returns ``(tables, plots)``,
    the paths written."""
    from pipelines.sweeps.text_vae.plots import (
        plot_active_units,
        plot_latents,
        plot_learning_curves,
        plot_schedules,
        plot_trace,
    )
    from pipelines.sweeps.text_vae.table import write_table

    tables = [run / "curves.parquet"]
    write_parquet(tables[0], frames.curves)
    for name, frame in (("latents", frames.latents), ("trace", frames.trace)):
        if len(frame):
            tables.append(run / f"{name}.parquet")
            write_parquet(tables[-1], frame)
    tables.append(write_table(run / "table.md", results, search, cfg["dataset"], cfg["schedules"]))
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
    cols = ["schedule", "posterior", "aggressive", "seed", "elbo", "rec", "kl", "ppl", "iw_ppl", "au", "mi"]
    cols += [c for c in ("knn_acc", "acc_1pct", "acc_10pct", "acc_100pct", "status") if c in results.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        return results[cols].to_string(index=False)


# --- command line -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return sweep_parser("python pipelines/text_vae.py", __doc__, {
        "--preset": {"default": "toy", "help": f"one of {', '.join(TEXT_VAE_PRESETS.names())} (default toy: offline)"},
        "--set": {"help": "override a setting, e.g. --set epochs=5 --set 'schedules=[constant, cyclical]' "
                          "(values are YAML)"},
        "--output": {"default": None, "help": "run directory (default runs/text_vae/<preset>)"},
        "--resume": {},
        "--search": {"choices": ("grid", "optuna"), "default": "grid"},
        "--data-dir": {"help": "folder with ptb/ and yelp-sentiment/ (ptb and yelp presets)"},
        "--tracking-uri": {}, "--address": {}, "--no-dashboard": {},
    }).parse_args(argv)


def prepare(args: argparse.Namespace) -> Prepared:
    """Validate everything that can be checked before Ray starts and load the corpus; nothing is written."""
    from trainables.text.data import load_text_data

    cfg = load_config(args.preset, args.sets)
    check(args.search == "grid" or len(training_seeds(cfg)) == 1,
          f"--search optuna trains each proposal once: seeds takes at most one entry, got {cfg['seeds']}")
    data_dir = resolve_data_dir(args.data_dir) if cfg["dataset"] != "toy" else None
    output = Path(args.output or Path("runs") / "text_vae" / args.preset)
    tracking_uri = check_tracking_uri(args.tracking_uri or default_tracking_uri(output))
    settings = {**cfg, "search": args.search, "data_dir": str(data_dir) if data_dir else None}
    check_output(args, output, settings, tracking_uri)
    data = load_corpus(lambda: load_text_data(cfg["dataset"], data_dir, **data_options(cfg)))
    return Prepared(cfg, settings, output, tracking_uri, data_dir, len(data.train), data.describe())


def sweep_size(cfg: dict[str, Any], search: str) -> int:
    """Trainings of the sweep: configurations × seeds (grid) or ``optuna_trials``."""
    if search == "optuna":
        return cfg["optuna_trials"]
    return len(cfg["schedules"]) * len(cfg["posteriors"]) * len(cfg["aggressive"]) * len(training_seeds(cfg))


def open_run(args: argparse.Namespace, p: Prepared) -> RunDir:
    """Quiet the libraries, start (or join) Ray, check one configuration's resources against it, and create
    (or reopen) the run directory. Raises :class:`ConfigError` / :class:`RunDirError`."""
    cfg = p.cfg
    quiet_libraries()
    start_ray(args.address, dashboard=not args.no_dashboard)
    need = {k: v * cfg["workers"] for k, v in worker_resources(cfg).items()}
    check_resources(need, local=is_local(args.address), what=f"a configuration (workers={cfg['workers']})",
                    hints={"CPU": "lower workers or cpus_per_trial",
                           "GPU": "lower workers or gpus_per_trial (0: train on CPUs)"})
    return RunDir.open(p.output, p.settings, tracking_uri=p.tracking_uri)


@dataclass
class Finished:
    """What a completed sweep left: its rows, its :class:`SweepFrames`, wall time and MLflow parent run."""

    run: RunDir
    results: pd.DataFrame
    frames: SweepFrames
    seconds: float
    parent_id: str | None
    tree: RunTree | None = None  # set when this invocation ran (or resumed) the sweep: ended after the outputs


def train_sweep(args: argparse.Namespace, p: Prepared, start: float) -> Finished | int:
    """Run (or resume) the sweep with a progress bar and the parent MLflow run; the exit status if it stopped."""
    from pipelines.sweeps.text_vae.tracking import ResultsTable, SweepProgress, TextVAERecorder

    cfg, experiment = p.cfg, f"text-vae-{p.cfg['dataset']}"
    try:
        run = open_run(args, p)
    except (ConfigError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tags = {"preset": cfg["preset"], "search": args.search, "text_vae.run_dir": str(run.path)}
    tree = parent_run_or_exit(run, p, experiment, tags, f"text-vae ({cfg['preset']}, {p.settings['search']})")
    if isinstance(tree, int):
        return tree
    trial_tags = {**tags, **RunTree.nest_under(tree.root)}

    def recorder(progress: SweepProgress | None = None) -> TextVAERecorder:
        return TextVAERecorder(run.path, experiment, args.search, p.tracking_uri, extra_tags=trial_tags,
                               progress=progress)

    grid = fit_or_exit(lambda: run_sweep(run, cfg, args.search, p.data_dir,
                                         recorder(SweepProgress(sweep_size(cfg, args.search)))),
                       tree, "configurations")
    if isinstance(grid, int):
        return grid
    # Rows the callback could not record (a trial that finished while a previous driver was killed) come
    # from Tune's own results; a fresh recorder reads the table as the (possibly restored) callback left it.
    recorder().reconcile(grid)
    results = ResultsTable(run / "results.parquet", args.search).read()
    frames = tune_frames(grid, args.search, with_seed=len(training_seeds(cfg)) > 1)
    return Finished(run, results, frames, time.perf_counter() - start, tree.root, tree)


def stored_sweep(run: RunDir, args: argparse.Namespace, p: Prepared) -> Finished:
    """A finished sweep's rows and curves read back (nothing trains, MLflow is not touched)."""
    from pipelines.sweeps.text_vae.tracking import ResultsTable

    print(f"the sweep in {run.path} finished on {run.info(SWEEP_STAGE)['finished']}: nothing to train; "
          "rewriting the outputs from the stored rows")
    results = ResultsTable(run / "results.parquet", args.search).read()
    frames = stored_frames(run, args.search, with_seed=len(training_seeds(p.cfg)) > 1)
    info = run.info(SWEEP_STAGE)
    return Finished(run, results, frames, float(info.get("seconds", 0.0)), info.get("mlflow_parent_run"))


def write_report(done: Finished, p: Prepared, plots: list[Path], experiment: str) -> Path:
    """``report.md`` of the sweep (:mod:`pipelines.sweeps.text_vae.report`)."""
    from pipelines.sweeps.text_vae.report import write_report as write

    results = done.results
    facts = {"data": p.data_description, "seeds": training_seeds(p.cfg), "seconds": done.seconds,
             "batches_per_epoch": batches_per_epoch(p.cfg, p.train_size), "rows": len(results),
             "failed": int((results["status"] == "failed").sum()),
             "mlflow": mlflow_line(experiment, p.tracking_uri, done.parent_id)}
    return write(done.run / "report.md", p.settings, results, facts, plots)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = prepare_and_run(args, prepare, lambda run, p: stored_sweep(run, args, p),
                              lambda p, start: train_sweep(args, p, start))
    if isinstance(outcome, int):
        return outcome
    p, done, start = outcome
    experiment = f"text-vae-{p.cfg['dataset']}"
    tables, plots = write_outputs(done.run, p.cfg, args.search, done.frames, done.results, p.train_size)
    report = write_report(done, p, plots, experiment)
    return finish_sweep(done, p, [*tables, *plots, report], summary(done.results), experiment, start,
                        stopped=int((done.results["status"] == "stopped").sum()))
