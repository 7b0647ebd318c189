"""The dialog sweep's grid axes, the one place that names them: β schedule × posterior × bag-of-words loss (the
thesis's Table 2.3 rows CVAE and CVAE+BoW), each configuration trained once per seed.

Every output reads the axes from :data:`AXES`: the Tune grid (``experiment.param_space``), the results columns and
row key, the MLflow run names (params are the trial config, so they carry every axis anyway), the curves'
``configuration`` labels (and through them the plots and the examples) and the report's table and reading. A new
value of an axis (``--set 'bow=[false, true]'``, a new posterior) reaches all of them; a new axis is one more
:class:`Axis` here, its preset key, and the trial-config field it sets.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Axis:
    """One grid axis: ``column`` names it in results.parquet (and in the row key), ``setting`` is the preset key
    listing its values, ``section``/``key`` the trial-config field a value sets (``config[section][key]``),
    ``dtype`` the results column's type (``str`` or ``bool``)."""

    column: str
    setting: str
    section: str
    key: str
    dtype: type = str

    def word(self, value: Any) -> str:
        """The value in labels and run names: a name as it is, a switch as ``<column>`` or ``no-<column>``."""
        if self.dtype is bool:
            return self.column if value else f"no-{self.column}"
        return str(value)


AXES: tuple[Axis, ...] = (
    Axis("schedule", "schedules", "train", "schedule"),
    Axis("posterior", "posteriors", "model", "posterior"),
    Axis("bow", "bow", "model", "bow", bool),
)
#: The results columns of the axes, in order.
COLUMNS: tuple[str, ...] = tuple(a.column for a in AXES)


def axis(column: str) -> Axis:
    """The :class:`Axis` whose results column is ``column``."""
    return next(a for a in AXES if a.column == column)


def values_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{column: value}`` of a trial config (``config[section][key]`` of every axis)."""
    return {a.column: a.dtype(config[a.section][a.key]) for a in AXES}


def label(values: Mapping[str, Any]) -> str:
    """A configuration's label, e.g. ``cyclical / gaussian / bow``, from ``{column: value}`` (a results row)."""
    return " / ".join(a.word(values[a.column]) for a in AXES)


def run_name(config: Mapping[str, Any]) -> str:
    """``<schedule>-<posterior>-<bow|no-bow>-s<seed>`` of a trial config."""
    values = values_of(config)
    return "-".join(a.word(values[a.column]) for a in AXES) + f"-s{config['train']['seed']}"


def fill_grid(space: dict[str, Any], cfg: Mapping[str, Any], grid_search) -> dict[str, Any]:
    """Set every axis's field of the trial config ``space`` to ``grid_search(cfg[setting])``; returns ``space``."""
    for a in AXES:
        space[a.section][a.key] = grid_search(list(cfg[a.setting]))
    return space


def configurations(cfg: Mapping[str, Any]) -> int:
    """How many configurations the settings ``cfg`` span: the product of the axes' lengths."""
    return math.prod(len(cfg[a.setting]) for a in AXES)


def describe(cfg: Mapping[str, Any]) -> str:
    """The axes in words, e.g. ``schedules [monotonic, cyclical] × posteriors [gaussian] × bow [no-bow, bow]``."""
    return " × ".join(f"{a.setting} [{', '.join(a.word(v) for v in cfg[a.setting])}]" for a in AXES)


def varied(cfg: Mapping[str, Any]) -> Sequence[Axis]:
    """The axes with more than one value in ``cfg`` (the factors a reading can compare)."""
    return [a for a in AXES if len(cfg[a.setting]) > 1]
