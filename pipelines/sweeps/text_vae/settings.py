"""The text-VAE sweep's settings: its presets file (``pipelines/presets/text_vae.yaml``, which documents every key
and its unit), :func:`validate` and :func:`load_config`, and the key groups a trial's config is built from.
"""
from __future__ import annotations

from typing import Any

from pipelines.common.settings import PRESETS_DIR, ConfigError, PresetFile, check
from pipelines.sweeps.settings import GRID_LISTS, check_grid, check_numbers, check_ranges, check_seeds, training_seeds

MODEL_KEYS = ("emb_dim", "hidden_dim", "latent_dim", "word_dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "monotonic_ratio", "beta_max", "shape", "cyclical_lr",
              "k_max", "k_min", "j_samples", "aggressive_max_steps", "iw_samples", "eval_components", "mi_rows",
              "latent_samples", "trace_every", "trace_rows", "seed")
#: preset key -> loader argument, per dataset.
DATA_KEYS = {"toy": {"toy_copies": "copies"},
             "ptb": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac")},
             "yelp": {k: k for k in ("max_len", "min_freq", "val_frac", "test_frac", "limit")}}
#: The label probes of ``downstream`` (``trainables.text.vae_metrics``: downstream_accuracy, finetune_accuracy).
DOWNSTREAM = ("logistic", "finetune")
#: The least value of the integer keys that must be at least 1 (every other integer key: at least 0).
LEAST = {key: 1 for key in ("toy_copies", "max_len", "min_freq", "emb_dim", "hidden_dim", "latent_dim",
                            "si_noise_dim", "epochs", "batch_size", "cycles", "j_samples", "aggressive_max_steps",
                            "eval_components", "mi_rows", "trace_rows", "concurrency", "workers", "optuna_trials",
                            "asha_grace", "finetune_steps")}


def check_aggressive(cfg: dict) -> None:
    """``aggressive``: a non-empty list of distinct true/false (one alone is taken as a list of one)."""
    aggressive = [cfg["aggressive"]] if isinstance(cfg["aggressive"], bool) else cfg["aggressive"]
    check(isinstance(aggressive, list) and bool(aggressive) and all(isinstance(v, bool) for v in aggressive),
          f"aggressive: expected a non-empty list of true/false, got {cfg['aggressive']!r}")
    check(len(set(aggressive)) == len(aggressive), f"aggressive: duplicate entries in {aggressive}")
    cfg["aggressive"] = aggressive


def validate(cfg: dict) -> None:
    """Check what the types cannot say: ranges and registry names (the dataset, β schedule entries ``name`` or
    ``name@β_max``, the ramp, posteriors, each built through its registry), the SVI settings of the ``sa``
    posterior (``sa_steps`` >= 0, ``sa_lr`` > 0) and the label probe ``downstream``. Raises a one-line
    :class:`ConfigError`. Normalises in place: ints given for float keys become floats, one grid entry given
    alone becomes a list of one."""
    from search_space.registry import RegistryError
    from trainables.text.data import DATASETS

    check_numbers(cfg, TEXT_VAE_PRESETS.defaults(), LEAST)
    check_aggressive(cfg)
    check_seeds(cfg)
    try:
        DATASETS.lookup(cfg["dataset"])
    except RegistryError as err:
        raise ConfigError(str(err)) from None
    check_grid(cfg, cfg["hidden_dim"])
    check_ranges(cfg)
    check(cfg["sa_lr"] > 0, f"sa_lr: expected a number > 0, got {cfg['sa_lr']}")
    check(cfg["downstream"] in DOWNSTREAM, f"downstream: expected one of {', '.join(DOWNSTREAM)}, "
          f"got {cfg['downstream']!r}")


TEXT_VAE_PRESETS = PresetFile(PRESETS_DIR / "text_vae.yaml", validate=validate, fixed=("dataset",),
                              free_types=(*GRID_LISTS, "aggressive"))


def load_config(preset: str = "toy", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key=value`` strings, YAML values) applied."""
    return TEXT_VAE_PRESETS.load(preset, overrides)


def sweep_size(cfg: dict[str, Any], search: str) -> int:
    """Trainings of the sweep: configurations × seeds (grid) or ``optuna_trials``."""
    if search == "optuna":
        return cfg["optuna_trials"]
    return len(cfg["schedules"]) * len(cfg["posteriors"]) * len(cfg["aggressive"]) * len(training_seeds(cfg))
