"""Text-VAE sweep on Ray Tune: ``python pipelines/text_vae.py [--preset toy|ptb|yelp] [--data-dir DIR]
[--set key=value ...] [--output DIR] [--search grid|optuna]`` (locally, or through ``ray job submit``).

- ``--search grid`` (default): every configuration of ``schedules × posteriors × aggressive`` is one Tune trial
  (the VAE trains inside it, ``trainables.text_vae_tune``) on reused actors, ``concurrency`` at a time.
- ``--search optuna``: Tune's ``OptunaSearch`` (TPE) proposes the cycle count M (``cycles``), ratio R,
  ``k_max`` and ``lr`` of a cyclical-schedule, semi-implicit VAE (``aggressive`` = the first entry of the list)
  for ``optuna_trials`` trials; an ASHA scheduler stops bad trials early on the per-epoch validation ELBO.

Writes into ``--output`` (default ``runs/text_vae/<preset>``): ``results.parquet`` (one row per configuration:
``schedule, posterior, aggressive, elbo, rec, kl, ppl, iw_ppl, au, mi`` on the test split, plus extras:
``iw_nll, tokens_per_s, knn_acc`` (toy), ``acc_1pct/acc_10pct/acc_100pct`` (yelp), ``status``,
``mlflow_run_id``, ...; metric units in ``trainables.vae_metrics``), ``curves.parquet`` (per-epoch metrics),
``config.json``, ``beta_schedules.png``, ``learning_curves.png`` and, for the toy problem, ``latent_toy.png``;
Tune's own files under ``tune/``. MLflow: experiment ``text-vae-<dataset>``, one run per row, logged from the
driver (``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db`` in the working directory).

Presets live in ``pipelines/presets/text_vae.yaml``. An unknown preset or ``--set`` key, a bad value or a missing
data directory is one line on stderr and exit status 2, before anything is written. Data directory for ptb/yelp:
``--data-dir``, else ``$DCSOD_DATA_DIR``, else ``../shared/data`` next to the repository.
``workers`` > 1: each configuration trains data-parallel through Ray Train (a ``TorchTrainer`` of ``workers``
DDP workers started inside its Tune trial, ``trainables.text_vae_tune.train_with_ray_train``); each worker asks
for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs, the trial itself for none; the Ray Train runs' files go
under ``train/``. With ``workers`` = 1 (default) a configuration trains inside its trial's process.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from trainables.beta_schedules import RAMPS, SCHEDULES, make_schedule  # noqa: E402
from trainables.posteriors import POSTERIORS  # noqa: E402
from trainables.text_data import DATASETS  # noqa: E402

PRESETS_FILE = Path(__file__).with_name("presets") / "text_vae.yaml"
MODEL_KEYS = ("emb_dim", "hidden_dim", "latent_dim", "word_dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "shape", "cyclical_lr", "k_max", "k_min",
              "j_samples", "aggressive_max_steps", "iw_samples", "eval_components", "mi_rows", "latent_samples",
              "seed")
DATA_KEYS = {"toy": {"toy_copies": "copies"},
             "ptb": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac")},
             "yelp": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac", "limit")}}
POSITIVE = ("epochs", "batch_size", "aggressive_max_steps", "emb_dim", "hidden_dim", "latent_dim", "cycles", "j_samples",
            "concurrency", "eval_components", "mi_rows", "optuna_trials", "asha_grace", "si_noise_dim", "workers")


class ConfigError(ValueError):
    """A one-line problem with the command line or the preset (exit status 2)."""


def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    with open(path) as f:
        return yaml.safe_load(f)


def _parse_bool(key: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"--set {key}: expected true or false, got {text!r}")


def _parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` converted to the type of the preset's ``default`` (lists: comma-separated, element type of the
    default's first element)."""
    if isinstance(default, list):
        proto = default[0] if default else ""
        return [_parse_value(key, part, proto) for part in text.split(",") if part.strip()]
    if isinstance(default, bool):
        return _parse_bool(key, text)
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"--set {key}: expected {type(default).__name__}, got {text!r}") from None
    return text.strip()


def resolve_config(preset: str, sets: list[str], presets: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The preset with ``key=value`` overrides applied and checked; raises :class:`ConfigError`."""
    presets = presets if presets is not None else load_presets()
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(presets)}")
    cfg = dict(presets[preset])
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE; valid keys: {', '.join(sorted(cfg))}")
        settable = sorted(set(cfg) - {"dataset"})
        if key not in settable:
            raise ConfigError(f"--set {item!r}: unknown key {key!r}; valid: {', '.join(settable)}"
                              + (" (the dataset is chosen with --preset)" if key == "dataset" else ""))
        cfg[key] = _parse_value(key, value, cfg[key])
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    """Registry names and value ranges (one-line :class:`ConfigError`)."""
    try:
        DATASETS.lookup(cfg["dataset"])
        for name in cfg["schedules"]:
            SCHEDULES.lookup(name)
        for name in cfg["posteriors"]:
            POSTERIORS.lookup(name)
        RAMPS.lookup(cfg["shape"])
        make_schedule("cyclical", max(cfg["cycles"], 1), cycles=max(cfg["cycles"], 1), ratio=cfg["ratio"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key in POSITIVE:
        if key in cfg and cfg[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {cfg[key]}")
    for key in ("schedules", "posteriors", "aggressive"):
        if not cfg[key]:
            raise ConfigError(f"{key}: the grid needs at least one entry")
    if not 0.0 <= cfg["word_dropout"] <= 1.0:
        raise ConfigError(f"word_dropout must lie in [0, 1], got {cfg['word_dropout']}")
    if not 0 <= cfg["k_min"] <= cfg["k_max"]:
        raise ConfigError(f"need 0 <= k_min <= k_max, got k_min={cfg['k_min']}, k_max={cfg['k_max']}")
    if cfg["lr"] <= 0 or cfg["cpus_per_trial"] <= 0 or cfg["gpus_per_trial"] < 0:
        raise ConfigError("lr and cpus_per_trial must be > 0, gpus_per_trial >= 0")


def resolve_data_dir(cli_value: str | None) -> Path:
    """``--data-dir``, else ``$DCSOD_DATA_DIR``, else ``<repo>/../shared/data``; must be a directory."""
    path = Path(cli_value or os.environ.get("DCSOD_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        raise ConfigError(f"data directory {path} does not exist (use --data-dir or set DCSOD_DATA_DIR)")
    return path.resolve()


def data_options(cfg: dict[str, Any]) -> dict[str, Any]:
    opts = {arg: cfg[key] for key, arg in DATA_KEYS[cfg["dataset"]].items()}
    opts["seed"] = cfg["seed"] if cfg["dataset"] != "toy" else None
    if opts.get("limit") == 0:
        opts["limit"] = None
    return {k: v for k, v in opts.items() if v is not None}


def base_trial_config(cfg: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """The trial config of ``trainables.text_vae_tune`` before the grid/search entries are filled in."""
    return {
        "dataset": cfg["dataset"], "data_dir": str(data_dir) if data_dir else None, "data": data_options(cfg),
        "model": {**{k: cfg[k] for k in MODEL_KEYS},
                  "posterior_options": {"semi-implicit": {"noise_dim": cfg["si_noise_dim"]}}},
        "train": {k: cfg[k] for k in TRAIN_KEYS},
        "threads": max(1, int(cfg["cpus_per_trial"])), "downstream": cfg["dataset"] == "yelp",
        "device": "cuda" if cfg["gpus_per_trial"] > 0 else "cpu",
        "workers": cfg["workers"], "worker_resources": worker_resources(cfg),
    }


def worker_resources(cfg: dict[str, Any]) -> dict[str, float]:
    """Ray resources of one training process (the trial's, or each Ray Train worker's)."""
    return {"CPU": cfg["cpus_per_trial"], **({"GPU": cfg["gpus_per_trial"]} if cfg["gpus_per_trial"] > 0 else {})}


def check_resources(cfg: dict[str, Any], local: bool) -> None:
    """One configuration's needs (``workers`` × per-worker resources) against the Ray cluster: a one-line
    :class:`ConfigError` on a local Ray, a warning on a cluster (an autoscaler may still add nodes)."""
    import ray

    total = ray.cluster_resources()
    need = {k: v * cfg["workers"] for k, v in worker_resources(cfg).items()}
    problems = [f"a configuration needs {need[k]:g} {k} (workers={cfg['workers']} x {v:g}) but the Ray cluster "
                f"has {total.get(k, 0):g}" for k, v in worker_resources(cfg).items() if need[k] > total.get(k, 0)]
    for problem in problems:
        if local:
            raise ConfigError(problem)
        print(f"warning: {problem} (trials wait until the cluster has them)", file=sys.stderr)


def param_space(cfg: dict[str, Any], base: dict[str, Any], search: str) -> dict[str, Any]:
    """Tune param space: nested ``grid_search`` over the grid, or the Optuna search space."""
    from ray import tune

    space = json.loads(json.dumps(base))
    if search == "grid":
        space["model"]["posterior"] = tune.grid_search(cfg["posteriors"])
        space["train"]["schedule"] = tune.grid_search(cfg["schedules"])
        space["train"]["aggressive"] = tune.grid_search(cfg["aggressive"])
    else:
        space["model"]["posterior"] = "semi-implicit"
        space["train"].update(schedule="cyclical", aggressive=cfg["aggressive"][0],
                              cycles=tune.randint(1, 9), ratio=tune.uniform(0.1, 0.9),
                              k_max=tune.randint(max(cfg["k_min"], 1), max(cfg["k_min"], 1) + 20),
                              lr=tune.loguniform(cfg["lr"] / 10, cfg["lr"] * 10))
    return space


def start_ray() -> None:
    """Connect to ``RAY_ADDRESS`` (e.g. under ``ray job submit``), else start a local Ray, unless connected."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        ray.init(include_dashboard=None, configure_logging=False)


def run_sweep(cfg: dict[str, Any], space: dict[str, Any], output: Path, search: str, callback) -> None:
    """Fit the Tuner (on the Ray of :func:`start_ray`)."""
    from ray import tune

    from trainables.text_vae_tune import text_vae_trainable

    start_ray()
    if cfg["workers"] > 1:
        # The trial only drives a TorchTrainer whose workers hold the CPUs/GPUs; Tune needs a non-empty
        # request, hence one byte of memory. No actor reuse: a stopped trial's actor is killed, and with it
        # the Ray Train controller it owns.
        trainable = tune.with_resources(text_vae_trainable, {"cpu": 0, "memory": 1})
        space = {**space, "train_storage": str((output / "train").resolve())}
    else:
        trainable = tune.with_resources(text_vae_trainable, {"cpu": cfg["cpus_per_trial"], "gpu": cfg["gpus_per_trial"]})
    tune_kw: dict[str, Any] = dict(reuse_actors=cfg["workers"] == 1, max_concurrent_trials=cfg["concurrency"])
    if search == "optuna":
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        tune_kw.update(metric="val_elbo", mode="max", num_samples=cfg["optuna_trials"],
                       search_alg=OptunaSearch(seed=cfg["seed"]),
                       scheduler=ASHAScheduler(time_attr="epoch", max_t=cfg["epochs"],
                                               grace_period=min(cfg["asha_grace"], cfg["epochs"]),
                                               reduction_factor=2))
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(**tune_kw),
                       run_config=tune.RunConfig(name=f"text_vae_{time.strftime('%Y%m%d-%H%M%S')}",
                                                 storage_path=str((output / "tune").resolve()),
                                                 callbacks=[callback], verbose=1))
    tuner.fit()


def write_outputs(cfg: dict[str, Any], output: Path, callback, search: str, train_size: int) -> pd.DataFrame:
    """results.parquet, curves.parquet, config.json and the PNG plots (``train_size``: training sentences,
    for the iteration axis of the β plot)."""
    from pipelines.text_vae_plots import plot_latents, plot_learning_curves, plot_schedules
    from pipelines.text_vae_tracking import RESULT_COLUMNS

    results = pd.DataFrame(callback.rows)
    results = results.astype({m: "float64" for m in RESULT_COLUMNS[3:]})
    results = results.drop(columns=[c for c in results.columns if c not in RESULT_COLUMNS and results[c].isna().all()])
    order = [*RESULT_COLUMNS, *[c for c in results.columns if c not in RESULT_COLUMNS]]
    results = results[order].sort_values(["posterior", "schedule", "aggressive"], kind="stable")
    results.to_parquet(output / "results.parquet", index=False)
    names = {r["trial_id"]: f"{r['schedule']}-{r['posterior']}" + ("-aggr" if r["aggressive"] else "")
             + (f"-{r['trial_id'][-5:]}" if search == "optuna" else "") for r in callback.rows}
    curves = [{"trial_id": tid, "name": names.get(tid, tid), **p} for tid, pts in callback.curves.items() for p in pts]
    pd.DataFrame(curves).to_parquet(output / "curves.parquet", index=False)
    (output / "config.json").write_text(json.dumps({**cfg, "search": search}, indent=2))
    batches_per_epoch = math.ceil(train_size / cfg["batch_size"])
    plot_schedules(output / "beta_schedules.png", cfg["schedules"] if search == "grid" else ["cyclical"],
                   cfg["epochs"] * batches_per_epoch, cycles=cfg["cycles"], ratio=cfg["ratio"], shape=cfg["shape"],
                   with_lr=cfg["cyclical_lr"])
    plot_learning_curves(output / "learning_curves.png",
                         {names.get(tid, tid): pts for tid, pts in callback.curves.items()})
    if callback.latents:
        plot_latents(output / "latent_toy.png", {names[tid]: lat for tid, lat in callback.latents.items()})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Text-VAE sweep (β schedules × posteriors × aggressive) on Ray Tune")
    parser.add_argument("--preset", default="toy", help="toy (default, offline), ptb or yelp")
    parser.add_argument("--data-dir", help="folder with ptb/ and yelp-sentiment/ (ptb and yelp presets)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset key (repeatable; lists comma-separated)")
    parser.add_argument("--output", help="run directory (default runs/text_vae/<preset>)")
    parser.add_argument("--search", choices=("grid", "optuna"), default="grid")
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args.preset, args.sets)
        data_dir = resolve_data_dir(args.data_dir) if cfg["dataset"] != "toy" else None
        from trainables.text_data import load_text_data

        data = load_text_data(cfg["dataset"], data_dir, **data_options(cfg))
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(data.describe())
    from pipelines.mlflow_runs import TrackingUnavailable
    from pipelines.text_vae_tracking import TextVAECallback

    try:
        callback = TextVAECallback(f"text-vae-{cfg['dataset']}", tags={"preset": args.preset, "search": args.search})
    except TrackingUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start_ray()
    try:
        check_resources(cfg, local=not os.environ.get("RAY_ADDRESS"))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output = Path(args.output or REPO / "runs" / "text_vae" / args.preset)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run_sweep(cfg, param_space(cfg, base_trial_config(cfg, data_dir), args.search), output, args.search, callback)
    results = write_outputs(cfg, output, callback, args.search, len(data.train))
    cols = ["schedule", "posterior", "aggressive", "elbo", "rec", "kl", "ppl", "iw_ppl", "au", "mi"]
    cols += [c for c in ("knn_acc", "acc_1pct", "acc_10pct", "acc_100pct", "status") if c in results.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(results[cols].to_string(index=False))
    print(f"{len(results)} configurations in {time.perf_counter() - start:.0f} s -> {output}/results.parquet "
          f"(MLflow experiment text-vae-{cfg['dataset']} at {callback.tracking_uri})")
    failed = int((results["status"] == "failed").sum())
    return 1 if failed == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
