"""What the outputs of both sweeps (text VAE, dialog CVAE) share: a figure written atomically, the β-schedule
plot, robust y limits for learning curves, and the ``mean ± sd`` cell of their tables.

Every plot is written atomically (a temporary file in the same folder, moved into place): a crash never leaves
a truncated PNG."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipelines.common.rundir import atomic_write
from trainables.text.beta_schedules import cyclical_lr, make_schedule


def save_figure(fig, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay ``fig`` out inside ``rect`` (figure fractions left, bottom, right, top), write it, close it."""
    fig.tight_layout(rect=rect)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_schedules(path: Path, schedules: Sequence[str], total: int, *, cycles: int, ratio: float, shape: str,
                   monotonic_ratio: float = 0.25, beta_max: float = 1.0, with_lr: bool = False) -> Path:
    """β_t over the ``total`` iterations of a run for each schedule entry (``name`` or ``name@β_max``), and the
    cyclical lr factor if used."""
    t = np.arange(1, total + 1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name in schedules:
        beta = make_schedule(name, total, cycles=cycles, ratio=ratio, monotonic_ratio=monotonic_ratio,
                             beta_max=beta_max, shape=shape)
        ax.plot(t, [beta(i) for i in t], label=name)
    if with_lr:
        ax.plot(t, [cyclical_lr(i, total, cycles=cycles, lr_max=1.0) for i in t], "k:", label="lr / lr_max")
    ax.set(xlabel="iteration t", ylabel="β", title=f"β schedules (M={cycles}, R={ratio}, monotonic R="
           f"{monotonic_ratio}, β_max={beta_max}, f={shape}, T={total})")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


#: How far past the interquartile range a learning-curve value may lie and still be drawn (Tukey's far-out fence).
FENCE_IQRS = 3.0


def robust_limits(values: Sequence[float], fence: float = FENCE_IQRS) -> tuple[float, float] | None:
    """y limits that keep the bulk of ``values`` readable: ``[q25 − fence·IQR, q75 + fence·IQR]`` narrowed to the
    finite values' own range, plus a 5 % margin; None when no value is finite. One diverging configuration (a
    minority of the points) then lies outside and does not flatten the others."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    q25, q75 = np.percentile(x, [25, 75])
    iqr = q75 - q25
    lo, hi = max(x.min(), q25 - fence * iqr), min(x.max(), q75 + fence * iqr)
    margin = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)
    return float(lo - margin), float(hi + margin)


def mean_sd(mean: float, sd: float) -> str:
    """``1.234 ± 0.056``, ``1.234`` without an sd, ``–`` without a mean."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" + ("" if math.isnan(sd) else f" ± {sd:.3f}")
