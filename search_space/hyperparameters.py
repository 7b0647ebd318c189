"""The non-architecture dimensions of a Ray Tune ``param_space`` that :class:`search_space.searcher.
PredictorEvolutionSearcher` samples beside the ``genotype`` (joint architecture + hyperparameter search), and the
rule that samples them. Importing this module imports Ray (its search-space classes).

Supported dimensions, anywhere in nested dicts: ``tune.uniform``, ``quniform``, ``loguniform``, ``qloguniform``
(floats); ``tune.randint``, ``qrandint``, ``lograndint``, ``qlograndint`` (integers, with Tune's bounds: ``upper``
exclusive unless ``q > 1``); ``tune.choice`` (any category values). Every other value (numbers, strings, lists,
objects Tune replaces with placeholders) is a constant the searcher leaves to Tune, which merges each suggestion
into the param_space. ``tune.sample_from``, ``tune.grid_search``, ``tune.randn``/``qrandn``, a ``tune.choice`` whose
categories hold search-space objects, a search-space object inside a list and a ``genotype`` key are refused by
:func:`parse_param_space` with a one-line ``ValueError`` naming the key.

The rule (:func:`propose`): until ``min_results`` full results carry hyperparameters, each dimension is drawn from
its own Tune distribution with the searcher's Generator. After that a parent is drawn uniformly from the best
:data:`ELITE_FRACTION` of those results (by the metric and mode; at least one), and each dimension independently
is redrawn from its distribution with probability :data:`EXPLORE`, else takes the parent's value: a category is
kept, a number is moved by a Gaussian step of :data:`SIGMA` × its range (in log space for log domains), reflected
back into the range, then rounded to an integer / a multiple of ``q`` as its domain requires.

A value is stored as a JSON number (a *row* holds one per dimension, in :func:`parse_param_space`'s order): the
number itself, or the index of the category for a choice. :meth:`Dimension.describe` gives a dimension as JSON, so
a saved state can be checked against the param_space of the run that restores it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search.sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
)

#: Share of the results (best first) a parent is drawn from once the random phase is over.
ELITE_FRACTION = 0.25
#: Probability that a dimension is redrawn from its distribution instead of inheriting the parent's value.
EXPLORE = 0.2
#: Standard deviation of a number's step, as a fraction of its range (of its log range for log domains).
SIGMA = 0.1
#: First item of the tuple Tune puts in place of a ``tune.sample_from`` in the config a searcher receives.
_FUNCTION_PLACEHOLDER = "__fn_ph"
_KINDS = ("float", "int", "choice")


def key_name(path: tuple | list) -> str:
    """``param_space['optim']['lr']`` for the path ``("optim", "lr")``."""
    return "param_space" + "".join(f"[{key!r}]" for key in path)


@dataclass(frozen=True)
class Dimension:
    """One sampled dimension: ``path`` (keys from the top of param_space), ``kind`` (``float``/``int``/``choice``),
    for numbers ``low``..``high`` (the smallest and largest valid values, both inclusive), ``log`` and ``q``
    (quantization step or None); for a choice its ``categories``. ``domain`` is the Tune object it came from."""

    path: tuple[str, ...]
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    q: float | None = None
    categories: tuple = ()
    domain: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """The dimension as JSON values (a category that is not a JSON scalar is described by its ``repr``)."""
        if self.kind == "choice":
            return {"path": list(self.path), "kind": "choice", "categories": [_describe(c) for c in self.categories]}
        return {"path": list(self.path), "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "q": self.q}

    def prior(self, rng) -> float | int:
        """A stored value drawn from the dimension's Tune distribution with ``rng`` (a numpy Generator)."""
        if self.kind == "choice":
            return int(rng.integers(len(self.categories)))
        return self._clip(self.domain.sample(random_state=rng))

    def perturb(self, stored: float | int, rng) -> float | int:
        """``stored`` moved by a Gaussian step of ``SIGMA`` × the range (log range for log domains), reflected into
        the range and snapped to the domain; a choice keeps its category."""
        if self.kind == "choice" or self.high == self.low:
            return stored
        lo, hi, x = (math.log(self.low), math.log(self.high), math.log(stored)) if self.log else (
            self.low, self.high, stored)
        u = _reflect((x - lo) / (hi - lo) + rng.normal(0.0, SIGMA))
        x = lo + u * (hi - lo)
        return self._snap(math.exp(x) if self.log else x)

    def value(self, stored: float | int) -> Any:
        """The config value of a stored value (the category itself for a choice)."""
        return self.categories[stored] if self.kind == "choice" else stored

    def store(self, value: Any) -> float | int | None:
        """The stored value of a config value, or None if ``value`` is not one of the dimension's values."""
        if self.kind == "choice":
            for i, category in enumerate(self.categories):
                if type(category) is type(value) and category == value:
                    return i
            return None
        if not _is_number(value) or not math.isfinite(value):
            return None
        if not (self.low <= value <= self.high or math.isclose(value, self.low) or math.isclose(value, self.high)):
            return None
        if self.kind == "int":
            return int(value) if float(value).is_integer() else None
        return self._clip(value)  # a multiple of q computed by Tune can be a hair outside the range

    def _snap(self, x: float) -> float | int:
        if self.q is not None:
            x = round(x / self.q) * self.q
        if self.kind == "int":
            x = round(x)
        return self._clip(x)

    def _clip(self, x: float | int) -> float | int:
        # Rounding to a multiple of q can land a hair outside the range (3 * 0.1 > 0.3).
        x = min(max(x, self.low), self.high)
        return int(x) if self.kind == "int" else float(x)


def parse_param_space(config: Any) -> list[Dimension]:
    """The sampled dimensions of a Tune ``param_space`` (as given, or as Tune hands it to a searcher, with
    placeholders), in depth-first key order. Unsupported search-space objects raise a one-line ``ValueError``
    naming the key."""
    if not isinstance(config, dict):
        raise ValueError(f"param_space: expected a dict, got {type(config).__name__}")
    if "genotype" in config:
        raise ValueError("param_space['genotype']: the searcher proposes the genotype itself; remove the key")
    out: list[Dimension] = []
    _walk(config, (), out)
    return out


def _walk(node: Any, path: tuple, out: list[Dimension]) -> None:
    if isinstance(node, dict):
        if "grid_search" in node and len(node) == 1:
            raise ValueError(f"{key_name(path)}: tune.grid_search is not supported by this searcher; "
                             "use tune.choice")
        for key, value in node.items():
            _walk(value, (*path, key), out)
    elif isinstance(node, Domain):
        if not all(isinstance(key, str) for key in path):
            raise ValueError(f"{key_name(path)}: a sampled dimension needs string keys")
        out.append(_dimension(node, path))
    elif _is_function_placeholder(node):
        raise ValueError(f"{key_name(path)}: tune.sample_from is not supported by this searcher")
    elif isinstance(node, (list, tuple)) and _holds_search_space(node):
        raise ValueError(f"{key_name(path)}: a search-space object inside a list is not supported; "
                         "put it in a dict")


def _dimension(domain: Domain, path: tuple) -> Dimension:
    """The :class:`Dimension` of one Tune domain, or a one-line ``ValueError`` naming the key."""
    name = key_name(path)
    if isinstance(domain, Function):
        raise ValueError(f"{name}: tune.sample_from is not supported by this searcher")
    if domain.is_grid():
        raise ValueError(f"{name}: tune.grid_search is not supported by this searcher; use tune.choice")
    if isinstance(domain, Categorical):
        if not domain.categories:
            raise ValueError(f"{name}: tune.choice needs at least one category")
        if _holds_search_space(domain.categories):
            raise ValueError(f"{name}: a tune.choice holding search-space objects is not supported")
        return Dimension(tuple(path), "choice", categories=tuple(domain.categories), domain=domain)
    sampler, q = domain.get_sampler(), None
    if isinstance(sampler, Quantized):
        sampler, q = sampler.get_sampler(), sampler.q
    if not isinstance(domain, (Float, Integer)) or isinstance(sampler, Normal) or not isinstance(
            sampler, (Uniform, LogUniform)):
        raise ValueError(f"{name}: {type(domain).__name__} with {type(sampler).__name__} sampling is not supported "
                         "(use uniform, loguniform, randint, lograndint, their q-variants or choice)")
    kind = "float" if isinstance(domain, Float) else "int"
    if not (math.isfinite(domain.lower) and math.isfinite(domain.upper)):
        raise ValueError(f"{name}: needs finite bounds, got {domain.lower}..{domain.upper}")
    low, high = _valid_range(domain.lower, domain.upper, q, kind)
    log = isinstance(sampler, LogUniform)
    if not low <= high or (log and low <= 0):
        raise ValueError(f"{name}: no valid value between {domain.lower} and {domain.upper}")
    return Dimension(tuple(path), kind, low, high, log, q, domain=domain)


def _valid_range(lower: float, upper: float, q: float | None, kind: str) -> tuple[float, float]:
    """The smallest and largest values Tune samples: integers exclude ``upper`` unless ``q > 1``; with ``q`` the
    bounds move inwards to multiples of ``q`` (as ``ray.tune.search.sample.Quantized`` does)."""
    if kind == "int" and (q is None or q == 1):
        return int(lower), int(upper) - 1
    if q is None:
        return float(lower), float(upper)
    low, high = _grid_index(lower / q, math.ceil) * q, _grid_index(upper / q, math.floor) * q
    return (int(low), int(high)) if kind == "int" else (float(low), float(high))


def _grid_index(scaled: float, round_fn) -> int:
    """``scaled`` rounded to an integer: to the nearest if it is one up to float error, else by ``round_fn``."""
    nearest = round(scaled)
    return nearest if math.isclose(scaled, nearest) else int(round_fn(scaled))


def propose(dimensions: list[Dimension], history: list[tuple[list, float]], rng, mode: str,
            min_results: int) -> list:
    """One row of stored values by the module's rule. ``history``: (row, metric value) of full results; ``mode``:
    ``"max"`` or ``"min"``. Draws nothing from ``rng`` when there are no dimensions."""
    if not dimensions:
        return []
    if len(history) < min_results:
        return [d.prior(rng) for d in dimensions]
    sign = 1.0 if mode == "max" else -1.0
    best_first = sorted(range(len(history)), key=lambda i: -sign * history[i][1])  # stable: earlier wins ties
    elite = best_first[: max(1, math.ceil(ELITE_FRACTION * len(history)))]
    parent = history[elite[int(rng.integers(len(elite)))]][0]
    return mutate(dimensions, parent, rng)


def mutate(dimensions: list[Dimension], parent: list, rng) -> list:
    """A child of the row ``parent``: each dimension independently redrawn from its distribution (probability
    :data:`EXPLORE`), else the parent's value moved by :meth:`Dimension.perturb` — the step :func:`propose` takes
    once its random phase is over, for a caller that chooses the parent itself."""
    return [d.prior(rng) if rng.random() < EXPLORE else d.perturb(p, rng) for d, p in zip(dimensions, parent)]


def nest(dimensions: list[Dimension], row: list) -> dict:
    """The config values of a row as nested dicts shaped like the param_space."""
    out: dict = {}
    for d, stored in zip(dimensions, row):
        node = out
        for key in d.path[:-1]:
            node = node.setdefault(key, {})
        node[d.path[-1]] = d.value(stored)
    return out


def read_row(dimensions: list[Dimension], parameters: dict) -> list | None:
    """The row of a trial's config (nested, or flat with ``a/b`` keys); None if a dimension is missing or holds a
    value outside its domain."""
    row = []
    for d in dimensions:
        node, found = parameters, True
        for key in d.path:
            if isinstance(node, dict) and key in node:
                node = node[key]
            else:
                found = False
                break
        if not found:
            flat = "/".join(d.path)
            if flat not in parameters:
                return None
            node = parameters[flat]
        stored = d.store(node)
        if stored is None:
            return None
        row.append(stored)
    return row


def check_descriptions(value: Any) -> list[dict]:
    """``value`` if it is a list of :meth:`Dimension.describe` dicts, else a ``ValueError``."""
    if not isinstance(value, list):
        raise ValueError("hyperparameters.dimensions: expected a list")
    for d in value:
        if not isinstance(d, dict) or d.get("kind") not in _KINDS or not isinstance(d.get("path"), list) or not all(
                isinstance(k, str) for k in d["path"]) or not d["path"]:
            raise ValueError(f"hyperparameters.dimensions: malformed entry {d!r}")
        keys = {"path", "kind", "categories"} if d["kind"] == "choice" else {"path", "kind", "low", "high", "log", "q"}
        if set(d) != keys:
            raise ValueError(f"hyperparameters.dimensions: expected the keys {sorted(keys)}, got {sorted(d)}")
        if d["kind"] == "choice" and not (isinstance(d["categories"], list) and d["categories"]):
            raise ValueError("hyperparameters.dimensions: a choice needs a non-empty category list")
        if d["kind"] != "choice" and not (_is_number(d["low"]) and _is_number(d["high"]) and d["low"] <= d["high"]):
            raise ValueError(f"hyperparameters.dimensions: bad range {d.get('low')!r}..{d.get('high')!r}")
    return value


def check_row(descriptions: list[dict], row: Any) -> list:
    """``row`` if it holds one valid stored value per described dimension, else a ``ValueError``."""
    if not isinstance(row, list) or len(row) != len(descriptions):
        raise ValueError(f"hyperparameters: expected a row of {len(descriptions)} values, got {row!r}")
    out = []
    for d, v in zip(descriptions, row):
        if d["kind"] == "choice":
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(d["categories"])
        elif d["kind"] == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and d["low"] <= v <= d["high"]
        else:
            ok = _is_number(v) and math.isfinite(v) and d["low"] <= v <= d["high"]
        if not ok:
            raise ValueError(f"hyperparameters: {v!r} is not a stored value of {key_name(d['path'])}")
        out.append(float(v) if d["kind"] == "float" else v)
    return out


def _describe(category: Any) -> Any:
    if isinstance(category, (str, bool, int)) or category is None:
        return category
    if isinstance(category, float) and math.isfinite(category):
        return category
    return repr(category)


def _reflect(u: float) -> float:
    """``u`` folded into [0, 1] by reflection at both ends."""
    u = abs(u) % 2.0
    return 2.0 - u if u > 1.0 else u


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_function_placeholder(node: Any) -> bool:
    return isinstance(node, tuple) and len(node) == 2 and node[0] == _FUNCTION_PLACEHOLDER


def _holds_search_space(node: Any) -> bool:
    """Whether a Tune search-space object (or a ``sample_from`` placeholder) is anywhere inside ``node``."""
    if isinstance(node, Domain) or _is_function_placeholder(node):
        return True
    if isinstance(node, dict):
        return any(_holds_search_space(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds_search_space(v) for v in node)
    return False


def same_json(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal as JSON would give them back (tuples as lists)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def dimensions_differ(saved: list[dict], given: list[dict]) -> str:
    """The one-line message refusing a state whose rows were sampled over the described dimensions ``saved``
    when the param_space's are ``given``."""
    def names(descriptions):
        return ", ".join(key_name(d["path"]) for d in descriptions) or "none"

    return (f"hyperparameters: the state's rows were sampled over other dimensions ({names(saved)}) than the "
            f"param_space's ({names(given)}), or over other ranges or categories; give the same param_space")
