"""PNG plot of a dialog sweep (matplotlib, Agg): validation KL, validation reconstruction and training KL per epoch
per configuration, the mean over seeds as a line and the seeds' range as a band. Written atomically."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipelines.common.rundir import atomic_write
from pipelines.sweeps.outputs import robust_limits

#: (per-epoch key, panel title, y scale): KL spans orders of magnitude (collapsed ~0.01, kept ~1 nat), so its
#: panels are symmetric-log (linear within ±0.01, the semi-implicit bound may dip below 0).
PANELS = (("val_kl", "validation KL(q(z|x,c) ‖ p(z|c))", "symlog"),
          ("val_rec", "validation reconstruction −log p(x|z,c)", "linear"),
          ("train_kl", "training KL (mean over the epoch)", "symlog"))


def plot_curves(path: Path, curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> Path:
    """``curves``: configuration -> one list of per-epoch points per seed (dicts with ``epoch`` and the
    :data:`PANELS` keys), in nats per response. One colour per configuration; the reconstruction panel's y range
    is ``robust_limits`` (a diverging run does not flatten the others)."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    colours = plt.get_cmap("tab10")
    values: dict[str, list[float]] = {key: [] for key, _, _ in PANELS}
    for i, (name, seeds) in enumerate(sorted(curves.items())):
        epochs = sorted({p["epoch"] for points in seeds for p in points})
        for ax, (key, _, _) in zip(axes, PANELS):
            grid = np.full((len(seeds), len(epochs)), np.nan)
            for s, points in enumerate(seeds):
                for p in points:
                    if p.get(key) is not None:
                        grid[s, epochs.index(p["epoch"])] = float(p[key])
            values[key] += [v for v in grid.ravel() if np.isfinite(v)]
            with warnings.catch_warnings():  # an epoch no seed reached is NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)
            ax.plot(epochs, mean, marker=".", color=colours(i % 10), label=f"{name} ({len(seeds)} seed(s))")
            if len(seeds) > 1:
                ax.fill_between(epochs, lo, hi, color=colours(i % 10), alpha=0.2)
    for ax, (key, title, scale) in zip(axes, PANELS):
        ax.set(xlabel="epoch", ylabel="nats per response", title=title)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=0.01)
        elif (limits := robust_limits(values[key])) is not None:
            ax.set_ylim(*limits)
    if curves:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(path)

