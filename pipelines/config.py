"""Pipeline settings: named presets from ``presets/dcsod.yaml`` plus ``--set key.sub=value`` overrides.

>>> cfg = load_config("quick", ["warmup.n=4", "train.epochs=2"])
>>> cfg["warmup"]["n"], cfg["train"]["epochs"], cfg["dataset"]
(4, 2, 'digits')

The YAML's ``defaults`` section lists every valid key. Three sections are open dictionaries whose keys are
checked against what they configure: ``train`` (fields of :class:`trainables.TrainConfig`),
``protocol_options`` (keyword arguments of the protocol) and ``predictor.args`` (the predictor's).
Every problem is a :class:`ConfigError` with a one-line message naming the valid choices.
"""
from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml

PRESETS_FILE = Path(__file__).with_name("presets") / "dcsod.yaml"
#: Sections whose sub-keys are free-form here and validated by the component they configure.
OPEN_SECTIONS = ("train", "protocol_options", "predictor.args")
ALGORITHMS = ("alg2", "alg3")


class ConfigError(ValueError):
    """Bad preset name, ``--set`` key or value; the message is one line listing the valid choices."""


def _read(path: Path = PRESETS_FILE) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f)
    return data


def preset_names(path: Path = PRESETS_FILE) -> list[str]:
    return list(_read(path)["presets"])


def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    """Deep-merge ``override`` into a copy of ``base``; keys must exist in ``base`` except in open sections."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if prefix.rstrip(".") in OPEN_SECTIONS:
            out[key] = value
            continue
        if key not in base:
            raise ConfigError(f"unknown key {path!r}; valid: {', '.join(valid_keys(base, prefix))}")
        if isinstance(base[key], dict) and path not in OPEN_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of {', '.join(valid_keys(base[key], path + '.'))}")
            out[key] = _merge(base[key], value, path + ".")
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping, got {value!r}")
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


def valid_keys(section: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a (defaults) section; open sections appear as ``name.*``."""
    keys = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        if path in OPEN_SECTIONS:
            keys.append(f"{path}.*")
        elif isinstance(value, dict):
            keys.extend(valid_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> nested ``{"a": {"b": 1}, "c": ["x", "y"]}``; values are YAML."""
    nested: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
            raise ConfigError(f"--set: expected key.sub=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
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


def load_config(preset: str = "quick", overrides: list[str] | None = None, path: Path = PRESETS_FILE) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key.sub=value`` strings) applied."""
    data = _read(path)
    defaults, presets = data["defaults"], data["presets"]
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(presets)}")
    cfg = _merge(defaults, presets[preset] or {})
    cfg = _merge(defaults, _deep_update(cfg, parse_overrides(overrides or [])))
    cfg["preset"] = preset
    validate(cfg)
    return cfg


def _deep_update(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def dataset_name(cfg: dict) -> str:
    """``cfg["dataset"]`` or the protocol's dataset: ``digits``, ``cifar10`` (from ``cifar10-*``), ..."""
    return cfg.get("dataset") or cfg["protocol"].split("-")[0]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def parse_count(value: Any, pool: int) -> int:
    """A teacher count: an int, or ``"x%"`` of ``pool`` (rounded, at least 1 when x > 0)."""
    if isinstance(value, str) and value.endswith("%"):
        frac = float(value[:-1]) / 100
        return max(1, round(frac * pool)) if frac > 0 else 0
    return int(value)


def validate(cfg: dict) -> None:
    """Check every value against what it configures; raise :class:`ConfigError` (one line)."""
    from search_space import PREDICTORS, make_predictor
    from search_space.space import SearchSpace
    from trainables import PROTOCOLS, SCORES, TrainConfig, make_objective
    from trainables.ood import LOWER_IS_BETTER, parse_metric

    _check(cfg["protocol"] in PROTOCOLS, f"protocol: unknown {cfg['protocol']!r}; valid: {', '.join(PROTOCOLS)}")
    params = inspect.signature(PROTOCOLS[cfg["protocol"]]).parameters
    bad = sorted(set(cfg["protocol_options"]) - set(params))
    _check(not bad, f"protocol_options: unknown {bad} for {cfg['protocol']}; valid: {', '.join(params)}")
    try:
        TrainConfig().replace(**cfg["train"])
        SearchSpace(**cfg["space"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train/space: {err}") from None
    _check(cfg["predictor"]["name"] in PREDICTORS,
           f"predictor.name: unknown {cfg['predictor']['name']!r}; valid: {', '.join(PREDICTORS)}")
    try:
        make_predictor(cfg["predictor"]["name"], **cfg["predictor"]["args"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    d = cfg["distill"]
    _check(d["algorithm"] in ALGORITHMS, f"distill.algorithm: expected one of {', '.join(ALGORITHMS)}, got {d['algorithm']!r}")
    _check(d["teacher_mode"] in ("online", "cached"), f"distill.teacher_mode: expected online or cached, got {d['teacher_mode']!r}")
    for name, value, low in [("warmup.n", cfg["warmup"]["n"], 2), ("distill.iterations", d["iterations"], 0),
                             ("distill.q", d["q"], 1), ("search.trials", cfg["search"]["trials"], 0),
                             ("search.min_results", cfg["search"]["min_results"], 2),
                             ("search.refit_every", cfg["search"]["refit_every"], 1),
                             ("final.epochs", cfg["final"]["epochs"], 1), ("final.workers", cfg["final"]["workers"], 1),
                             ("max_concurrent", cfg["max_concurrent"], 1), ("max_failures", cfg["max_failures"], 0),
                             ("seed", cfg["seed"], 0)]:
        _check(_is_int(value, low), f"{name}: expected an integer >= {low}, got {value!r}")
    _check(isinstance(cfg["final"]["baseline"], bool), f"final.baseline: expected true or false, got {cfg['final']['baseline']!r}")
    for name in ("top", "random"):
        value = d[name]
        ok = _is_int(value, 0) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?%", value) is not None)
        _check(ok, f"distill.{name}: expected an integer >= 0 or a percentage like '0.5%', got {value!r}")
    _check(parse_count(d["top"], cfg["warmup"]["n"]) >= 1, "distill.top: at least one teacher is needed")
    for name in ("cpu", "gpu"):
        value = cfg["resources"][name]
        _check(isinstance(value, (int, float)) and value >= 0, f"resources.{name}: expected a number >= 0, got {value!r}")
    _check(cfg["resources"]["cpu"] > 0 or cfg["resources"]["gpu"] > 0, "resources: a trial needs some cpu or gpu")
    scores = TrainConfig().replace(**cfg["train"]).scores
    unknown = [s for s in scores if s not in SCORES]
    _check(not unknown, f"train.scores: unknown {unknown}; valid: {', '.join(SCORES)}")
    try:
        kind, score = parse_metric(cfg["metric"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check(kind not in LOWER_IS_BETTER, f"metric: {cfg['metric']} is lower = better; the ranking metric must be "
           f"higher = better (id_acc, auroc_<score>, aupr_in_<score>, aupr_out_<score>)")
    _check(score is None or score in scores,
           f"metric: {cfg['metric']} needs score {score!r} in train.scores {list(scores)}")
    for where, name, args in [("warmup.objective", cfg["warmup"]["objective"], {}),
                              ("distill", "distill", {k: d[k] for k in ("temperature", "alpha", "beta", "lam")})]:
        try:
            make_objective(name, **args)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None


def check_data(cfg: dict) -> None:
    """The protocol's local data files exist (``path``, ``aux_path``): checked by the driver before Ray starts,
    so a typo is one line, not a failure in every trial."""
    for name in ("path", "aux_path"):
        value = cfg["protocol_options"].get(name)
        _check(value is None or Path(value).exists(), f"protocol_options.{name}: no such file or directory: {value!r}")


def fingerprint(cfg: dict) -> str:
    """Canonical JSON of the settings that determine the results (the run directory records it)."""
    return json.dumps(cfg, sort_keys=True, default=str)
