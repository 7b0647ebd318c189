"""The dialog sweep's settings: its presets file (``pipelines/presets/dialog.yaml``, which documents every key and
its unit), :func:`validate` and :func:`load_config`, and the key groups a trial's config is built from (the grid
axes' keys are ``pipelines.sweeps.dialog.axes``'s).
"""
from __future__ import annotations

from pipelines.common.settings import PRESETS_DIR, PresetFile, check
from pipelines.sweeps.settings import GRID_LISTS, check_grid, check_numbers, check_ranges, check_seeds

DATA_KEYS = ("context_window", "max_utt_len", "min_freq", "val_frac", "test_frac", "max_dialogs", "seed")
MODEL_KEYS = ("emb_dim", "utt_hidden", "ctx_hidden", "dec_hidden", "mlp_hidden", "latent_dim", "act_dim",
              "act_knowledge", "bow_weight", "act_weight", "word_dropout")
#: Grid axes listing true/false (the others list names, checked by ``pipelines.sweeps.settings.check_grid``).
SWITCH_LISTS = ("bow",)
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "monotonic_ratio", "beta_max", "shape", "k_max",
              "k_min", "j_samples", "aggressive", "aggressive_max_steps", "eval_components", "mi_rows", "samples",
              "gen_max_len")
#: The least value of the integer keys that must be above 0 (every other integer key: at least 0).
LEAST = {**{key: 1 for key in ("context_window", "max_utt_len", "min_freq", "emb_dim", "utt_hidden", "ctx_hidden",
                               "dec_hidden", "mlp_hidden", "latent_dim", "act_dim", "si_noise_dim", "epochs",
                               "batch_size", "cycles", "j_samples", "aggressive_max_steps", "eval_components",
                               "samples", "gen_max_len", "concurrency")},
         "mi_rows": 2, "vector_dim": 2}


def check_switches(cfg: dict, key: str) -> None:
    """``cfg[key]``: a non-empty list of distinct true/false (one alone is taken as a list of one)."""
    value = [cfg[key]] if isinstance(cfg[key], bool) else cfg[key]
    check(isinstance(value, list) and bool(value) and all(isinstance(v, bool) for v in value),
          f"{key}: expected a non-empty list of true/false, e.g. --set '{key}=[false, true]', got {cfg[key]!r}")
    check(len(set(value)) == len(value), f"{key}: duplicate entries in {value}")
    cfg[key] = value


def validate(cfg: dict) -> None:
    """Check what the types cannot say: ranges and registry names (β schedule entries, the ramp, posteriors over
    the context encoder's ``ctx_hidden`` units, each built through its registry), the ``bow`` axis, the loss
    weights and the ``sa`` posterior's SVI settings (``sa_steps`` >= 0, ``sa_lr`` > 0). Raises a one-line
    :class:`ConfigError`. Normalises in place: ints given for float keys become floats, one grid entry given alone
    becomes a list of one."""
    check_numbers(cfg, DIALOG_PRESETS.defaults(), LEAST)
    check_seeds(cfg)
    check_grid(cfg, cfg["ctx_hidden"])
    for key in SWITCH_LISTS:
        check_switches(cfg, key)
    check_ranges(cfg)
    check(cfg["bow_weight"] > 0, f"bow_weight: expected a number > 0, got {cfg['bow_weight']} (the plain CVAE, "
          "without the bag-of-words loss, is --set 'bow=[false]')")
    check(cfg["act_weight"] >= 0, f"act_weight: expected a number >= 0, got {cfg['act_weight']}")
    check(cfg["sa_lr"] > 0, f"sa_lr: expected a number > 0, got {cfg['sa_lr']}")


DIALOG_PRESETS = PresetFile(PRESETS_DIR / "dialog.yaml", validate=validate, free_types=(*GRID_LISTS, *SWITCH_LISTS))


def load_config(preset: str = "swda-small", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key=value``, YAML values) applied."""
    return DIALOG_PRESETS.load(preset, overrides)
