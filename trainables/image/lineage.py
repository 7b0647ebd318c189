"""Data lineage: what data reached one training, directly or through its teachers, and the checks that keep a
result out of a table column whose protocol it does not meet.

A :class:`Lineage` travels as one string (``str(lineage)``, parsed back by :meth:`Lineage.parse`), e.g.
``id=digits/train[50%];outliers=none;eval=val``:

- ``id``: the protocol and the ID images this training learned from: ``train`` (all ID training images),
  ``train[50%]`` (the protocol's seeded ``train_fraction`` subset, thesis §4.4.1), ``+val`` when it also
  trained on the ID validation images (``train_on_val``);
- ``outliers``: whether auxiliary outlier images reached it: ``none``, or the ``+``-joined routes they took, in
  the order ``direct`` (its objective drew outlier batches), ``teachers`` (a teacher it distilled from saw
  outliers, directly or through its own teachers), ``initial`` (it was fine-tuned from weights whose training
  saw outliers by any route: the initial network counts like a teacher, its knowledge is inherited), e.g.
  ``direct+teachers`` or ``initial``; ``unknown`` (a teacher or initial network trained before lineage was
  recorded, and no other route known). An OE fine-tune of a CE network is ``direct``; a CE fine-tune of an OE
  network is ``initial``. The ``id`` field names the training's own images, not its initial network's;
- ``eval``: the split its metrics are measured on (``val`` during the search, ``test`` for final numbers).

The empty string is the lineage of a result recorded before this field existed: it meets no requirement.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The routes by which outliers can reach a training, in the order they are joined (``direct+teachers+initial``).
OUTLIER_ROUTES = ("direct", "teachers", "initial")
OUTLIER_KINDS = ("none", "direct", "teachers", "direct+teachers", "unknown", "initial", "direct+initial",
                 "teachers+initial", "direct+teachers+initial")


class LineageError(ValueError):
    """A result whose lineage does not meet the requirement of the table column or report section it was
    about to be written into (one line naming both)."""


@dataclass(frozen=True)
class Lineage:
    id: str
    outliers: str
    eval: str

    def __post_init__(self) -> None:
        if self.outliers not in OUTLIER_KINDS:
            raise ValueError(f"lineage outliers: expected one of {', '.join(OUTLIER_KINDS)}, got {self.outliers!r}")

    def __str__(self) -> str:
        return f"id={self.id};outliers={self.outliers};eval={self.eval}"

    @classmethod
    def parse(cls, text: str) -> Lineage:
        """The lineage written by ``str(lineage)``; ValueError for anything else (including ``""``)."""
        try:
            fields = dict(part.split("=", 1) for part in str(text).split(";"))
            return cls(fields["id"], fields["outliers"], fields["eval"])
        except (KeyError, ValueError):
            raise ValueError(f"not a lineage: {text!r} (expected id=...;outliers=...;eval=...)") from None

    @property
    def saw_outliers(self) -> bool | None:
        """True/False; None when unknown (a teacher without a recorded lineage)."""
        return None if self.outliers == "unknown" else self.outliers != "none"


def id_part(protocol: str, train_fraction: float, train_on_val: bool) -> str:
    """The ``id`` field: ``digits/train``, ``digits/train[50%]``, ``cifar10-split/train+val``."""
    part = "train" if train_fraction >= 1.0 else f"train[{100 * train_fraction:g}%]"
    return f"{protocol}/{part}{'+val' if train_on_val else ''}"


def teachers_outliers(teacher_lineages: Iterable[str], route: str = "teachers") -> str:
    """``route`` (``teachers``) if any teacher saw outliers, ``unknown`` if none did but one has no recorded
    lineage, ``none`` otherwise (also for no teachers). With ``route="initial"`` the same for the one network a
    fine-tune started from."""
    seen = []
    for text in teacher_lineages:
        try:
            seen.append(Lineage.parse(text).saw_outliers)
        except ValueError:
            seen.append(None)
    if any(s is True for s in seen):
        return route
    return "unknown" if any(s is None for s in seen) else "none"


def training_lineage(protocol: str, train_fraction: float, train_on_val: bool, eval_split: str,
                     used_outliers: bool, teacher_lineages: Iterable[str] | None,
                     initial_lineage: str | None = None) -> Lineage:
    """The lineage of one training: its own ID part, outliers it drew (``used_outliers``), received through the
    teachers it distilled from (``teacher_lineages``: None or empty when it used none) or inherited from the
    weights it was fine-tuned from (``initial_lineage``: None when it started from a random initialisation).

    Once one route is known to have carried outliers, a route of unknown lineage is named too (it may have carried
    them as well; the training saw outliers either way); with no known route an unknown one makes ``unknown``."""
    via = {"direct": "direct" if used_outliers else "none",
           "teachers": teachers_outliers(teacher_lineages or []),
           "initial": "none" if initial_lineage is None else teachers_outliers([initial_lineage], "initial")}
    known = [route for route in OUTLIER_ROUTES if via[route] == route]
    if known:
        outliers = "+".join(route for route in OUTLIER_ROUTES if via[route] in (route, "unknown"))
    else:
        outliers = "unknown" if "unknown" in via.values() else "none"
    return Lineage(id_part(protocol, train_fraction, train_on_val), outliers, eval_split)


@dataclass(frozen=True)
class Requirement:
    """What a table column or report section accepts: ``outliers`` False (no auxiliary outlier data reached
    the training, not even through teachers), True (outliers reached it), or None (either); ``eval`` the split
    its numbers must be measured on (None: any)."""

    outliers: bool | None = None
    eval: str | None = None

    def describe(self) -> str:
        parts = []
        if self.outliers is not None:
            parts.append("trained with auxiliary outliers" if self.outliers else
                         "trained without auxiliary outliers (directly or through teachers)")
        if self.eval is not None:
            parts.append(f"measured on the {self.eval} split")
        return " and ".join(parts) or "any result"

    def check(self, lineage: str, where: str, what: str) -> None:
        """Raise :class:`LineageError` unless ``lineage`` meets this requirement; ``where`` names the column or
        section (e.g. ``Table 4.1 column MSP``), ``what`` the result (e.g. ``DCSOD `ab12` seed 0``)."""
        try:
            parsed = Lineage.parse(lineage)
        except ValueError:
            raise LineageError(f"{where} requires a result {self.describe()}; {what} has no recorded lineage "
                               f"({lineage!r})") from None
        bad = (self.outliers is not None and parsed.saw_outliers is not self.outliers) or \
            (self.eval is not None and parsed.eval != self.eval)
        if bad:
            raise LineageError(f"{where} requires a result {self.describe()}; {what} has lineage {parsed}")
