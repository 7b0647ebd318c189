"""The checks every sweep's settings share (text VAE, dialog CVAE), after :func:`pipelines.common.settings.check_types`
has given every key its default's kind.

What is left to check by hand is ranges, cross-key rules and registry names: whole numbers and their least
values (:func:`check_numbers`, which also stores every float key as a float), the grid lists ``schedules`` and
``posteriors`` built through their registries (:func:`check_grid`), ``seeds`` (:func:`check_seeds`) and the
ranges both sweeps have (:func:`check_ranges`). Every problem is a one-line :class:`ConfigError`. Units: ``lr``
in Adam units, ``word_dropout`` a probability, fractions of the data in (0, 1), CPUs/GPUs per trial in Ray's
resource units.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.common.settings import ConfigError, check, is_int

REPO = Path(__file__).resolve().parents[2]
#: Keys of the grid lists: a single entry given alone (``--set posteriors=gaussian``) is a list of one, so their
#: type is checked here, not by ``check_types`` (a PresetFile's ``free_types``).
GRID_LISTS = ("schedules", "posteriors")


def check_numbers(cfg: dict, defaults: Mapping[str, Any], least: Mapping[str, int]) -> None:
    """A key whose default is an int takes an integer >= ``least[key]`` (else >= 0); a key whose default is a float
    takes a finite number, stored as a float (so ``--set lr=1`` equals ``lr=1.0`` in the run's fingerprint)."""
    for key, default in defaults.items():
        if key not in cfg or isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        if isinstance(default, float):
            check(math.isfinite(cfg[key]), f"{key}: expected a number, got {cfg[key]!r}")
            cfg[key] = float(cfg[key])
        else:
            low = least.get(key, 0)
            check(is_int(cfg[key], low), f"{key}: expected an integer >= {low}, got {cfg[key]!r}")


def check_names(cfg: dict, key: str, registry=None) -> None:
    """``cfg[key]``: a non-empty list of distinct names (one name alone is taken as a list of one), each looked up
    in ``registry`` when one is given (a ``RegistryError`` propagates)."""
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


def check_seeds(cfg: dict) -> None:
    """``seeds``: distinct integers >= 0 (``[]``: train once, with ``seed``)."""
    seeds = cfg["seeds"]
    check(all(is_int(x, 0) for x in seeds),
          f"seeds: expected a list of integers >= 0, e.g. --set 'seeds=[0, 1, 2]', got {seeds!r}")
    check(len(set(seeds)) == len(seeds), f"seeds: duplicate entries in {seeds}")


def training_seeds(cfg: Mapping[str, Any]) -> list[int]:
    """The seeds every configuration is trained with: ``seeds``, else ``[seed]``."""
    return list(cfg["seeds"]) or [cfg["seed"]]


def schedule_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``trainables.text.beta_schedules.make_schedule`` in a configuration: cycles M,
    cyclical ratio R (fraction of a cycle), monotonic ratio (fraction of the run), ``beta_max``, ramp ``shape``."""
    return {k: cfg[k] for k in ("cycles", "ratio", "monotonic_ratio", "beta_max", "shape")}


def check_grid(cfg: dict, hidden_dim: int) -> None:
    """``schedules`` and ``posteriors``: lists of names, each built as a run builds it (a schedule entry ``name``
    or ``name@β_max`` with the schedule settings, checking cycles, both ratios, β_max and the ramp; a posterior
    over ``hidden_dim`` encoder units with ``latent_dim`` and ``si_noise_dim``); no two schedule entries may
    name the same schedule. A registry error is a one-line :class:`ConfigError`."""
    from search_space.registry import RegistryError
    from trainables.text.beta_schedules import RAMPS, make_schedule, schedule_entry
    from trainables.text.posteriors import POSTERIORS, make_posterior

    try:
        check_names(cfg, "schedules")
        check_names(cfg, "posteriors", POSTERIORS)
        RAMPS.lookup(cfg["shape"])
        for entry in cfg["schedules"]:
            make_schedule(entry, cfg["cycles"], **schedule_options(cfg))
        parsed = [schedule_entry(e, cfg["beta_max"]) for e in cfg["schedules"]]
        check(len(set(parsed)) == len(parsed), f"schedules: entries {cfg['schedules']} name the same schedule "
              f"twice (an entry without '@' has β_max = beta_max = {cfg['beta_max']})")
        for name in cfg["posteriors"]:
            options = {"noise_dim": cfg["si_noise_dim"]} if name == "semi-implicit" else {}
            make_posterior(name, hidden_dim, cfg["latent_dim"], **options)
    except RegistryError as err:
        raise ConfigError(str(err)) from None


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """The ranges every sweep has: ``word_dropout`` in [0, 1], 0 <= ``k_min`` <= ``k_max`` (semi-implicit mixing
    draws), ``lr`` > 0, ``cpus_per_trial`` > 0, ``gpus_per_trial`` >= 0, ``val_frac``, ``test_frac`` > 0 with a
    sum < 1."""
    check(0.0 <= cfg["word_dropout"] <= 1.0, f"word_dropout: expected a number in [0, 1], got {cfg['word_dropout']}")
    check(cfg["k_min"] <= cfg["k_max"], f"need 0 <= k_min <= k_max, got k_min={cfg['k_min']}, k_max={cfg['k_max']}")
    check(cfg["lr"] > 0, f"lr: expected a number > 0, got {cfg['lr']}")
    check(cfg["cpus_per_trial"] > 0, f"cpus_per_trial: expected a number > 0, got {cfg['cpus_per_trial']}")
    check(cfg["gpus_per_trial"] >= 0, f"gpus_per_trial: expected a number >= 0, got {cfg['gpus_per_trial']}")
    fracs = cfg["val_frac"], cfg["test_frac"]
    check(min(fracs) > 0 and sum(fracs) < 1, f"val_frac, test_frac: expected two numbers > 0 with a sum < 1, "
          f"got {fracs[0]}, {fracs[1]}")


def resolve_data_dir(cli_value: str | None) -> Path:
    """``--data-dir``, else ``$DCSOD_DATA_DIR``, else ``<repo>/../shared/data``; must be a directory."""
    path = Path(cli_value or os.environ.get("DCSOD_DATA_DIR") or REPO.parent / "shared" / "data")
    check(path.is_dir(), f"data directory {path} does not exist (use --data-dir or set DCSOD_DATA_DIR)")
    return path.resolve()
