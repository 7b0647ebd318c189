"""KL-weight (β) schedules for VAE training, a registry, and the cyclical learning rate that goes with them.

Conventions: ``t`` is the 1-based training iteration (one optimiser step of the decoder), ``total`` = T the
number of iterations of the whole run. Every schedule has the signature
``schedule(t, total, *, cycles=4, ratio=0.5, shape="linear") -> float`` and returns β_t ∈ [0, 1]; entries
ignore the arguments they do not use.

Cyclical annealing (DESIGN.md): with M = ``cycles`` and R = ``ratio``,
``τ = mod(t − 1, ⌈T/M⌉) / (T/M)`` is the position inside the current cycle, and
``β_t = f(τ / R)`` for ``τ ≤ R``, else 1, where the ramp ``f: [0, 1] → [0, 1]`` (``shape``) is linear,
sigmoid or cosine with ``f(0) = 0`` and ``f(1) = 1``. So β is 0 at each cycle start, reaches 1 after a
fraction R of the cycle and stays 1 for the rest of it. R = 0 means no ramp at all: β ≡ 1 (= constant).
``monotonic`` is one linear warm-up over the first R·T iterations (= cyclical with M = 1, linear ramp).

>>> beta = SCHEDULES.lookup("cyclical")
>>> [round(beta(t, 8, cycles=2, ratio=0.5), 2) for t in range(1, 9)]
[0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
"""
from __future__ import annotations

import math
from typing import Callable

from search_space.registry import Registry

#: name -> ``schedule(t, total, *, cycles, ratio, shape) -> β``.
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
        raise ValueError(f"beta schedule: need 1 <= t <= total, got t={t}, total={total}")
    if cycles < 1:
        raise ValueError(f"beta schedule: cycles must be >= 1, got {cycles}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"beta schedule: ratio must lie in [0, 1], got {ratio}")


def cycle_position(t: int, total: int, cycles: int) -> float:
    """τ = mod(t − 1, ⌈T/M⌉) / (T/M) ∈ [0, 1): how far iteration ``t`` is into its cycle."""
    period = math.ceil(total / cycles)
    return ((t - 1) % period) / (total / cycles)


@SCHEDULES.register("constant")
def constant(t: int, total: int, *, cycles: int = 4, ratio: float = 0.5, shape: str = "linear") -> float:
    """β ≡ 1 (the plain ELBO)."""
    _check(t, total, cycles, ratio)
    return 1.0


@SCHEDULES.register("monotonic")
def monotonic(t: int, total: int, *, cycles: int = 4, ratio: float = 0.5, shape: str = "linear") -> float:
    """Linear warm-up from 0 to 1 over the first ``ratio``·T iterations, then 1 (Bowman et al.'s annealing)."""
    _check(t, total, cycles, ratio)
    if ratio == 0.0:
        return 1.0
    return min(1.0, (t - 1) / (ratio * total))


@SCHEDULES.register("cyclical")
def cyclical(t: int, total: int, *, cycles: int = 4, ratio: float = 0.5, shape: str = "linear") -> float:
    """M = ``cycles`` repetitions of: ramp ``shape`` from 0 to 1 over a fraction R = ``ratio`` of the cycle,
    then 1 (formula in the module docstring)."""
    _check(t, total, cycles, ratio)
    ramp = RAMPS.lookup(shape)
    tau = cycle_position(t, total, cycles)
    if tau >= ratio:  # also R = 0: no ramp
        return 1.0
    return ramp(tau / ratio)


def make_schedule(name: str, total: int, *, cycles: int = 4, ratio: float = 0.5,
                  shape: str = "linear") -> Callable[[int], float]:
    """``t -> β_t`` for a run of ``total`` iterations; unknown names raise a one-line ``ValueError``."""
    schedule = SCHEDULES.lookup(name)
    RAMPS.lookup(shape)
    _check(1, total, cycles, ratio)
    return lambda t: schedule(t, total, cycles=cycles, ratio=ratio, shape=shape)


def cyclical_lr(t: int, total: int, *, cycles: int, lr_max: float, lr_min: float = 0.0) -> float:
    """Learning rate in sync with the β cycles: cosine decay from ``lr_max`` at each cycle start
    (where β restarts at 0) to ``lr_min`` at the cycle's end. Units: those of ``lr_max``."""
    _check(t, total, cycles, 0.0)
    tau = min(1.0, cycle_position(t, total, cycles))
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * tau))
