"""The text-VAE sweep's Tune experiment: the trial config of ``trainables.text.vae_tune`` (:func:`base_trial_config`),
the grid or Optuna search space over it (:func:`param_space`) and the Tuner, fitted or restored (:func:`run_sweep`).
Resources are Ray's units (CPUs, GPUs, and one byte of memory for a trial that only drives Ray Train workers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.common.rundir import RunDir
from pipelines.sweeps.driver import SWEEP_STAGE
from pipelines.sweeps.settings import training_seeds
from pipelines.sweeps.text_vae.settings import DATA_KEYS, MODEL_KEYS, TRAIN_KEYS


def data_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``trainables.text.data.load_text_data`` in a configuration (yelp ``limit`` 0: all
    sentences; the split seed for ptb and yelp)."""
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
                  "posterior_options": {"semi-implicit": {"noise_dim": cfg["si_noise_dim"]},
                                        "sa": {"steps": cfg["sa_steps"], "lr": cfg["sa_lr"]}}},
        "train": {k: cfg[k] for k in TRAIN_KEYS},
        "threads": max(1, int(cfg["cpus_per_trial"])),
        "downstream": cfg["downstream"] if cfg["dataset"] == "yelp" else False, "finetune_steps": cfg["finetune_steps"],
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
