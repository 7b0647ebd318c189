"""The dialog sweep's Tune experiment: the trial config of ``trainables.text.dialog_tune``
(:func:`base_trial_config`), the grid over it (``pipelines.sweeps.dialog.axes.AXES`` × seeds, :func:`param_space`)
and the Tuner, fitted or restored (:func:`run_sweep`). Resources are Ray's units (CPUs, GPUs per trial).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.common.rundir import RunDir
from pipelines.sweeps.dialog.axes import fill_grid
from pipelines.sweeps.dialog.settings import DATA_KEYS, MODEL_KEYS, TRAIN_KEYS
from pipelines.sweeps.driver import SWEEP_STAGE
from pipelines.sweeps.settings import training_seeds


def base_trial_config(cfg: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The trial config of ``trainables.text.dialog_tune`` before the grid entries are filled in."""
    return {"data_dir": str(data_dir), "data": {k: cfg[k] for k in DATA_KEYS},
            "model": {**{k: cfg[k] for k in MODEL_KEYS},
                      "posterior_options": {"semi-implicit": {"noise_dim": cfg["si_noise_dim"]},
                                            "sa": {"steps": cfg["sa_steps"], "lr": cfg["sa_lr"]}}},
            "train": {k: cfg[k] for k in TRAIN_KEYS}, "vector_dim": cfg["vector_dim"],
            "threads": max(1, int(cfg["cpus_per_trial"])), "device": "cuda" if cfg["gpus_per_trial"] > 0 else "cpu"}


def param_space(cfg: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Nested ``grid_search`` over every grid axis × seeds."""
    from ray import tune

    space = fill_grid(base_trial_config(cfg, data_dir), cfg, tune.grid_search)
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
