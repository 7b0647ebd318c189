"""KL-weight (β) schedules for VAE training, a registry, and the cyclical learning rate that goes with them.

Conventions: ``t`` is the 1-based training iteration (one optimiser step of the decoder), ``total`` = T the
number of iterations of the whole run. Every schedule is a :class:`Schedule` built as
``cls(total, *, cycles=4, ratio=0.5, shape="linear")``; calling it, ``schedule(t) -> float``, returns
β_t ∈ [0, 1]. Entries ignore the arguments they do not use (but every argument is checked).

Cyclical annealing (DESIGN.md): with M = ``cycles`` and R = ``ratio``,
``τ = mod(t − 1, ⌈T/M⌉) / (T/M)`` is the position inside the current cycle, and
``β_t = f(τ / R)`` for ``τ ≤ R``, else 1, where the ramp ``f: [0, 1] → [0, 1]`` (``shape``) is linear,
sigmoid or cosine with ``f(0) = 0`` and ``f(1) = 1``. So β is 0 at each cycle start, reaches 1 after a
fraction R of the cycle and stays 1 for the rest of it. R = 0 means no ramp at all: β ≡ 1 (= constant).
``monotonic`` is one linear warm-up over the first R·T iterations (= cyclical with M = 1, linear ramp).

>>> beta = make_schedule("cyclical", 8, cycles=2, ratio=0.5)
>>> [round(beta(t), 2) for t in range(1, 9)]
[0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
"""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

from search_space.registry import Registry

#: name -> :class:`Schedule` subclass ``cls(total, *, cycles, ratio, shape)``; an instance maps t -> β_t.
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

    Arguments are checked on construction, ``t`` on every call; subclasses implement :meth:`beta`.
    """

    total: int
    _: KW_ONLY
    cycles: int = 4
    ratio: float = 0.5
    shape: str = "linear"

    def __post_init__(self) -> None:
        _check(1, self.total, self.cycles, self.ratio)
        RAMPS.lookup(self.shape)

    def __call__(self, t: int) -> float:
        _check(t, self.total, self.cycles, self.ratio)
        return self.beta(t)

    def beta(self, t: int) -> float:
        raise NotImplementedError


@SCHEDULES.register("constant")
class Constant(Schedule):
    """β ≡ 1 (the plain ELBO)."""

    def beta(self, t: int) -> float:
        return 1.0


@SCHEDULES.register("monotonic")
class Monotonic(Schedule):
    """Linear warm-up from 0 to 1 over the first ``ratio``·T iterations, then 1 (Bowman et al.'s annealing)."""

    def beta(self, t: int) -> float:
        if self.ratio == 0.0:
            return 1.0
        return min(1.0, (t - 1) / (self.ratio * self.total))


@SCHEDULES.register("cyclical")
class Cyclical(Schedule):
    """M = ``cycles`` repetitions of: ramp ``shape`` from 0 to 1 over a fraction R = ``ratio`` of the cycle,
    then 1 (formula in the module docstring)."""

    def beta(self, t: int) -> float:
        tau = cycle_position(t, self.total, self.cycles)
        if tau >= self.ratio:  # also R = 0: no ramp
            return 1.0
        return RAMPS[self.shape](tau / self.ratio)


def make_schedule(name: str, total: int, *, cycles: int = 4, ratio: float = 0.5, shape: str = "linear") -> Schedule:
    """``t -> β_t`` for a run of ``total`` iterations (any error: a one-line ``RegistryError``)."""
    return SCHEDULES.build(name, total, cycles=cycles, ratio=ratio, shape=shape)


def cyclical_lr(t: int, total: int, *, cycles: int, lr_max: float, lr_min: float = 0.0) -> float:
    """Learning rate in sync with the β cycles: cosine decay from ``lr_max`` at each cycle start
    (where β restarts at 0) to ``lr_min`` at the cycle's end. Units: those of ``lr_max``."""
    _check(t, total, cycles, 0.0)
    tau = min(1.0, cycle_position(t, total, cycles))
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * tau))
