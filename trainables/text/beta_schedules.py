"""KL-weight (β) schedules for VAE training, a registry, and the cyclical learning rate that goes with them.

Conventions: ``t`` is the 1-based training iteration (one optimiser step of the decoder), ``total`` = T the
number of iterations of the whole run. Every schedule is a :class:`Schedule` built as
``cls(total, *, cycles=4, ratio=0.5, monotonic_ratio=0.25, beta_max=1.0, shape="linear")``; calling it,
``schedule(t) -> float``, returns β_t = β_max · level_t with the schedule's *level* ``level_t ∈ [0, 1]``
(:meth:`Schedule.level`; the semi-implicit posterior anneals its mixing draws K with it). Entries ignore the
arguments they do not use (but every argument is checked).

Cyclical annealing (DESIGN.md, "Methods as implemented"): with M = ``cycles`` and R = ``ratio``,
``τ = mod(t − 1, ⌈T/M⌉) / (T/M)`` is the position inside the current cycle, and
``level_t = f(τ / R)`` for ``τ ≤ R``, else 1, where the ramp ``f: [0, 1] → [0, 1]`` (``shape``) is linear,
sigmoid or cosine with ``f(0) = 0`` and ``f(1) = 1``. So β is 0 at each cycle start, reaches β_max after a
fraction R of the cycle and stays there for the rest of it. R = 0 means no ramp at all: β ≡ β_max.

The thesis's defaults (§2.6.1, Table 2.1): cyclical R = ``ratio`` = 0.5 of each of M = 4 cycles; ``monotonic``
is one linear warm-up over its own R = ``monotonic_ratio`` = 0.25 of the run (β 0 → 1 over the first 10 of 40
epochs; = cyclical with M = 1, R = monotonic_ratio, linear ramp); ``ae`` is the autoencoder baseline, β ≡ 0;
``beta_max`` < 1 (Table 2.1: 0.5) scales every schedule down.

A schedule *entry* of a sweep (:func:`make_schedule`, the ``schedules`` list of ``pipelines/text_vae.py``) is a
registry name, optionally with its own β_max after ``@``: ``cyclical@0.5`` is the cyclical schedule with
β_max = 0.5 whatever the ``beta_max`` argument says.

>>> beta = make_schedule("cyclical", 8, cycles=2, ratio=0.5)
>>> [round(beta(t), 2) for t in range(1, 9)]
[0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
>>> [round(make_schedule("cyclical@0.5", 8, cycles=2)(t), 2) for t in range(1, 5)]
[0.0, 0.25, 0.5, 0.5]
"""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

from search_space.registry import Registry, RegistryError

#: name -> :class:`Schedule` subclass ``cls(total, *, cycles, ratio, monotonic_ratio, beta_max, shape)``;
#: an instance maps t -> β_t.
SCHEDULES = Registry("beta schedule")

#: name -> ramp ``f(u)`` on u ∈ [0, 1] with f(0) = 0, f(1) = 1, non-decreasing.
RAMPS = Registry("ramp shape")

_SIGMOID_SLOPE = 12.0  # steepness of the sigmoid ramp; rescaled so that it still runs exactly from 0 to 1


@RAMPS.register("linear")
def _linear(u: float) -> float:
    return u


@RAMPS.register("sigmoid")
def _sigmoid(u: float) -> float:
    def s(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-_SIGMOID_SLOPE * (x - 0.5)))

    return (s(u) - s(0.0)) / (s(1.0) - s(0.0))


@RAMPS.register("cosine")
def _cosine(u: float) -> float:
    return 0.5 * (1.0 - math.cos(math.pi * u))


def _check(t: int, total: int, cycles: int, ratio: float) -> None:
    if total < 1 or not 1 <= t <= total:
        raise ValueError(f"need 1 <= t <= total, got t={t}, total={total}")
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")


def cycle_position(t: int, total: int, cycles: int) -> float:
    """τ = mod(t − 1, ⌈T/M⌉) / (T/M) ∈ [0, 1): how far iteration ``t`` is into its cycle."""
    period = math.ceil(total / cycles)
    return ((t - 1) % period) / (total / cycles)


@dataclass(frozen=True)
class Schedule:
    """β_t of a run of ``total`` iterations: ``schedule(t) -> float`` for t = 1..T (module docstring).

    ``ratio``: R of each cyclical cycle; ``monotonic_ratio``: R of the monotonic warm-up (fractions in [0, 1]);
    ``beta_max`` ∈ [0, 1]: the largest β. Arguments are checked on construction, ``t`` on every call;
    subclasses implement :meth:`level`.
    """

    total: int
    _: KW_ONLY
    cycles: int = 4
    ratio: float = 0.5
    monotonic_ratio: float = 0.25
    beta_max: float = 1.0
    shape: str = "linear"

    def __post_init__(self) -> None:
        _check(1, self.total, self.cycles, self.ratio)
        if not 0.0 <= self.monotonic_ratio <= 1.0:
            raise ValueError(f"monotonic_ratio must lie in [0, 1], got {self.monotonic_ratio}")
        if not 0.0 <= self.beta_max <= 1.0:
            raise ValueError(f"beta_max must lie in [0, 1], got {self.beta_max}")
        RAMPS.lookup(self.shape)

    def __call__(self, t: int) -> float:
        """β_t = β_max · level(t)."""
        return self.beta_max * self.level(t)

    def level(self, t: int) -> float:
        """Where iteration ``t`` is on the schedule's ramp, in [0, 1] (β_t / β_max; 0 throughout for ``ae``)."""
        _check(t, self.total, self.cycles, self.ratio)
        return self._level(t)

    def _level(self, t: int) -> float:
        raise NotImplementedError


@SCHEDULES.register("constant")
class Constant(Schedule):
    """β ≡ β_max (with β_max = 1: the plain ELBO)."""

    def _level(self, t: int) -> float:
        return 1.0


@SCHEDULES.register("monotonic")
class Monotonic(Schedule):
    """Linear warm-up from 0 to β_max over the first ``monotonic_ratio``·T iterations, then β_max (Bowman et
    al.'s annealing; the thesis's baseline uses R = 0.25). Level ``min(1, (t − 1) / (R·T))``: it reaches 1
    at iteration ``R·T + 1``, i.e. once exactly a fraction R of the run is done."""

    def _level(self, t: int) -> float:
        if self.monotonic_ratio == 0.0:
            return 1.0
        return min(1.0, (t - 1) / (self.monotonic_ratio * self.total))


@SCHEDULES.register("cyclical")
class Cyclical(Schedule):
    """M = ``cycles`` repetitions of: ramp ``shape`` from 0 to β_max over a fraction R = ``ratio`` of the cycle,
    then β_max (formula in the module docstring)."""

    def _level(self, t: int) -> float:
        tau = cycle_position(t, self.total, self.cycles)
        if tau >= self.ratio:  # also R = 0: no ramp
            return 1.0
        return RAMPS[self.shape](tau / self.ratio)


@SCHEDULES.register("ae")
class Autoencoder(Schedule):
    """β ≡ 0: the deterministic-autoencoder baseline of Table 2.1 (the KL term is not trained; ``beta_max``
    is ignored)."""

    def _level(self, t: int) -> float:
        return 0.0


def schedule_entry(entry: str, beta_max: float = 1.0) -> tuple[str, float]:
    """``(registry name, β_max)`` of a schedule entry ``name`` or ``name@b`` (``b``: that entry's β_max, which
    overrides ``beta_max``). A malformed suffix is a one-line ``RegistryError``; the name is not looked up."""
    name, sep, suffix = entry.partition("@")
    if not sep:
        return entry, beta_max
    try:
        value = float(suffix)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RegistryError(f"{SCHEDULES.kind} {entry!r}: after '@' comes the entry's β_max, a number in [0, 1] "
                            f"(e.g. {name}@0.5), got {suffix!r}")
    return name, value


def make_schedule(entry: str, total: int, *, cycles: int = 4, ratio: float = 0.5, monotonic_ratio: float = 0.25,
                  beta_max: float = 1.0, shape: str = "linear") -> Schedule:
    """``t -> β_t`` for a run of ``total`` iterations; ``entry`` is a registry name or ``name@β_max``
    (:func:`schedule_entry`). Any error: a one-line ``RegistryError``."""
    name, beta_max = schedule_entry(entry, beta_max)
    return SCHEDULES.build(name, total, cycles=cycles, ratio=ratio, monotonic_ratio=monotonic_ratio,
                           beta_max=beta_max, shape=shape)


def cyclical_lr(t: int, total: int, *, cycles: int, lr_max: float, lr_min: float = 0.0) -> float:
    """Learning rate in sync with the β cycles: cosine decay from ``lr_max`` at each cycle start
    (where β restarts at 0) to ``lr_min`` at the cycle's end. Units: those of ``lr_max``."""
    _check(t, total, cycles, 0.0)
    tau = min(1.0, cycle_position(t, total, cycles))
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * tau))
