"""The dialog sweep's settings: its presets file (``pipelines/presets/dialog.yaml``, which documents every key and
its unit), :func:`validate` and :func:`load_config`, and the key groups a trial's config is built from.
"""
from __future__ import annotations

from pipelines.common.settings import PRESETS_DIR, PresetFile, check
from pipelines.sweeps.settings import GRID_LISTS, check_grid, check_numbers, check_ranges, check_seeds

DATA_KEYS = ("context_window", "max_utt_len", "min_freq", "val_frac", "test_frac", "max_dialogs", "seed")
MODEL_KEYS = ("emb_dim", "utt_hidden", "ctx_hidden", "dec_hidden", "mlp_hidden", "latent_dim", "act_dim",
              "act_knowledge", "bow_weight", "act_weight", "word_dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "cycles", "ratio", "monotonic_ratio", "beta_max", "shape", "k_max",
              "k_min", "j_samples", "aggressive", "aggressive_max_steps", "eval_components", "mi_rows", "samples",
              "gen_max_len")
#: The least value of the integer keys that must be above 0 (every other integer key: at least 0).
LEAST = {**{key: 1 for key in ("context_window", "max_utt_len", "min_freq", "emb_dim", "utt_hidden", "ctx_hidden",
                               "dec_hidden", "mlp_hidden", "latent_dim", "act_dim", "si_noise_dim", "epochs",
                               "batch_size", "cycles", "j_samples", "aggressive_max_steps", "eval_components",
                               "samples", "gen_max_len", "concurrency")},
         "mi_rows": 2, "vector_dim": 2}


def validate(cfg: dict) -> None:
    """Check what the types cannot say: ranges and registry names (β schedule entries, the ramp, posteriors over
    the context encoder's ``ctx_hidden`` units, each built through its registry). Raises a one-line
    :class:`ConfigError`. Normalises in place: ints given for float keys become floats, one grid entry given alone
    becomes a list of one."""
    check_numbers(cfg, DIALOG_PRESETS.defaults(), LEAST)
    check_seeds(cfg)
    check_grid(cfg, cfg["ctx_hidden"])
    check_ranges(cfg)
    check(min(cfg["bow_weight"], cfg["act_weight"]) >= 0, "bow_weight, act_weight: expected numbers >= 0")


DIALOG_PRESETS = PresetFile(PRESETS_DIR / "dialog.yaml", validate=validate, free_types=GRID_LISTS)


def load_config(preset: str = "swda-small", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key=value``, YAML values) applied."""
    return DIALOG_PRESETS.load(preset, overrides)
