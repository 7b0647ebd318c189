"""Settings of every pipeline: a YAML file of named presets over a documented ``defaults`` section, plus
``--set key.sub=value`` overrides whose values are YAML (``--set epochs=5``, ``--set 'scores=[msp, knn]'``).
That syntax and :class:`ConfigError` live in :mod:`trainables.overrides` (the trainer's CLI uses them too) and
are re-exported here.

>>> from pipelines.nas.settings import DCSOD_PRESETS
>>> cfg = DCSOD_PRESETS.load("quick", ["warmup.n=4", "train.epochs=2"])
>>> cfg["warmup"]["n"], cfg["train"]["epochs"], cfg["preset"]
(4, 2, 'quick')

The ``defaults`` section lists every valid key with a comment; a preset overrides some of them and ``--set``
overrides last. Keys outside ``defaults`` are refused, except inside *open sections* (dotted paths such as
``train``) whose sub-keys are checked by what they configure. The type of every other key comes from its default
(:func:`check_types`, nanoGPT's configurator habit): only ranges, cross-key rules and registry names are checked
by hand, in each pipeline's ``validate``. Every problem is a :class:`ConfigError` with a
one-line message naming the valid choices; the pipeline prints it and exits 2 before anything is written.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.overrides import ConfigError, load_yaml, parse_overrides

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"  # pipelines/presets: one YAML file per pipeline

__all__ = ["ConfigError", "PresetFile", "check", "check_types", "fingerprint", "flatten", "is_int", "parse_overrides"]


def check(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def is_int(value: Any, low: int) -> bool:
    """An ``int`` (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _kind(value: Any) -> str:
    """The kind a default gives its key: ``bool``, ``number`` (int or float: whether it must be an integer is a
    range, checked by ``validate``), ``str``, ``list``, ``mapping``, or ``any`` (a ``null`` default)."""
    if value is None:
        return "any"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "str", list: "list", dict: "mapping"}.get(type(value), type(value).__name__)


_KIND_WORDS = {"bool": "true or false", "number": "a number", "str": "a string", "list": "a list",
               "mapping": "a mapping"}


def check_types(cfg: dict, defaults: dict, skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """Every value of ``cfg`` has its default's kind (:func:`_kind`); a list's items have the kind of the
    default list's first item. ``skip``: dotted keys (and sections) whose types ``validate`` checks itself (open
    sections, keys that take two kinds such as ``3`` or ``"0.5%"``). Raises :class:`ConfigError` naming the key.

    >>> check_types({"a": {"n": "x"}}, {"a": {"n": 3}})
    Traceback (most recent call last):
    ...
    trainables.overrides.ConfigError: a.n: expected a number (like the default 3), got 'x'
    """
    for key, default in defaults.items():
        path = f"{prefix}{key}"
        if path in skip or key not in cfg:
            continue
        value, kind = cfg[key], _kind(default)
        if kind == "mapping":
            check_types(value, default, skip, path + ".")
            continue
        if kind == "any":
            continue
        check(_kind(value) == kind, f"{path}: expected {_KIND_WORDS[kind]} (like the default {default!r}), "
                                    f"got {value!r}")
        if kind == "list" and default:
            item = _kind(default[0])
            bad = [v for v in value if item != "any" and _kind(v) != item]
            check(not bad, f"{path}: expected a list of {_KIND_WORDS.get(item, item).removeprefix('a ')}s (like the "
                           f"default {default!r}), got {value!r}")


def fingerprint(cfg: dict) -> str:
    """Canonical JSON of the settings that determine the results (the run directory records it)."""
    return json.dumps(cfg, sort_keys=True, default=str)


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (e.g. for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class PresetFile:
    """One pipeline's presets file.

    ``path``: YAML with ``defaults`` (every key) and ``presets`` (name -> overrides; ``extends: <preset>`` starts
    from another preset's overrides, deep-merged, so a variant states only what differs); ``validate(cfg)`` raises
    :class:`ConfigError` for what types cannot say (ranges, cross-key rules, registry names); ``open_sections``:
    dotted keys whose sub-keys are free-form here; ``fixed``: keys a preset may set but ``--set`` may not (e.g.
    the dataset that names the MLflow experiment); ``free_types``: keys whose type ``validate`` checks because it
    may differ from the default's (e.g. ``3`` or ``"0.5%"``).
    """

    path: Path
    validate: Callable[[dict], None] | None = None
    open_sections: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    free_types: tuple[str, ...] = ()

    def _read(self) -> dict:
        with open(self.path) as f:
            return load_yaml(f.read())

    def names(self) -> list[str]:
        return list(self._read()["presets"])

    def defaults(self) -> dict:
        return self._read()["defaults"]

    def load(self, preset: str, overrides: list[str] | None = None) -> dict:
        """The validated settings of ``preset`` with ``overrides`` (``key.sub=value`` strings) applied; the
        preset's name is added as ``cfg["preset"]``."""
        data = self._read()
        defaults, presets = data["defaults"], data["presets"]
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(presets)}")
        sets = parse_overrides(overrides or [])
        for key in self.fixed:
            check(key not in sets, f"--set {key}: fixed by the preset; choose another --preset")
        cfg = self._merge(defaults, self._overrides(presets, preset))
        cfg = self._merge(defaults, _deep_update(cfg, sets))
        check_types(cfg, defaults, (*self.open_sections, *self.free_types))
        cfg["preset"] = preset
        if self.validate is not None:
            self.validate(cfg)
        return cfg

    def _overrides(self, presets: dict, name: str, seen: tuple[str, ...] = ()) -> dict:
        """Preset ``name``'s overrides with its ``extends`` chain resolved (a loop or an unknown base: ConfigError)."""
        entry = dict(presets[name] or {})
        base = entry.pop("extends", None)
        if base is None:
            return entry
        check(base in presets and base not in (*seen, name),
              f"preset {name!r}: extends {base!r}, which is " + ("not a preset" if base not in presets else "a loop"))
        return _deep_update(self._overrides(presets, base, (*seen, name)), entry)

    def _merge(self, base: dict, override: dict, prefix: str = "") -> dict:
        """Deep-merge ``override`` into a copy of ``base``; keys must exist in ``base`` except in open sections."""
        out = copy.deepcopy(base)
        for key, value in override.items():
            path = f"{prefix}{key}"
            if prefix.rstrip(".") in self.open_sections:
                out[key] = value
                continue
            if key not in base:
                raise ConfigError(f"unknown key {path!r}; valid: {', '.join(self.valid_keys(base, prefix))}")
            if isinstance(base[key], dict) and path not in self.open_sections:
                if not isinstance(value, dict):
                    valid = ", ".join(self.valid_keys(base[key], path + "."))
                    raise ConfigError(f"{path}: expected a mapping of {valid}")
                out[key] = self._merge(base[key], value, path + ".")
            elif isinstance(base[key], dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: expected a mapping, got {value!r}")
                out[key] = {**base[key], **value}
            else:
                out[key] = value
        return out

    def valid_keys(self, section: dict, prefix: str = "") -> list[str]:
        """Dotted keys of a (defaults) section; open sections appear as ``name.*``."""
        keys = []
        for key, value in section.items():
            path = f"{prefix}{key}"
            if path in self.open_sections:
                keys.append(f"{path}.*")
            elif isinstance(value, dict):
                keys.extend(self.valid_keys(value, path + "."))
            else:
                keys.append(path)
        return keys


def _deep_update(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out
