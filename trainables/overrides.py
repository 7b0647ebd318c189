"""The ``--set key.sub=value`` syntax of every command line: dotted keys name nested settings, values are YAML
(``--set epochs=5``, ``--set 'train.scores=[msp, knn]'``, ``--set 'objective_args={lam: 0.5}'``).

>>> parse_overrides(["train.epochs=2", "scores=[msp, knn]", "protocol.path=cifar.zip"])
{'train': {'epochs': 2}, 'scores': ['msp', 'knn'], 'protocol': {'path': 'cifar.zip'}}

Imports only PyYAML, so every layer (trainables' CLI, the pipelines' preset loader) can use it.
"""
from __future__ import annotations

import re

import yaml

_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")


class SettingsLoader(yaml.SafeLoader):
    """YAML as settings are written: PyYAML follows YAML 1.1, where ``1e-3`` and ``1e6`` (no dot) are strings;
    here, as in YAML 1.2 and JSON, they are floats (``lr: 1e-3`` means 0.001)."""


SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """``text`` parsed with :class:`SettingsLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=SettingsLoader)


class ConfigError(ValueError):
    """Bad preset name, ``--set`` key or value; the message is one line listing the valid choices."""


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> nested ``{"a": {"b": 1}, "c": ["x", "y"]}``; values are YAML, an empty
    value is ``""``. Raises :class:`ConfigError` (one line) on a malformed pair, a value that is not YAML, or two
    pairs that conflict (``a=1`` and ``a.b=2``)."""
    nested: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f"--set: expected key.sub=value, got {pair!r}")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} as a YAML value") from None
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {key!r} conflicts with another --set")
        node[leaf] = value
    return nested
