"""PNG plots of a text-VAE sweep (matplotlib, Agg backend): β schedules, learning curves, toy latent scatter.

Every plot is written atomically (a temporary file in the same folder, moved into place): a crash never leaves
a truncated PNG."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainables.beta_schedules import cyclical_lr, make_schedule

from .rundir import atomic_write


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
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
    return _save(fig, path)


def plot_learning_curves(path: Path, curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Validation ELBO, reconstruction and KL (nats per sentence) per epoch, one line per configuration."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = plt.get_cmap("tab20")
    for i, (name, points) in enumerate(sorted(curves.items())):
        epochs = [p["epoch"] for p in points]
        for ax, key in zip(axes, ("val_elbo", "val_rec", "val_kl")):
            ax.plot(epochs, [np.nan if p.get(key) is None else p[key] for p in points], marker=".", label=name,
                    color=colours(i % 20), linestyle="--" if "aggr" in name else "-")
    for ax, title in zip(axes, ("validation ELBO (nats/sentence)", "reconstruction −log p(x|z)", "KL")):
        ax.set(xlabel="epoch", title=title)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_latents(path: Path, latents: Mapping[str, Mapping[str, Sequence]]) -> Path:
    """Samples z ~ q(z|x) (first two dims) per configuration, coloured by sequence (toy problem)."""
    names = sorted(latents)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        z, labels = np.asarray(latents[name]["z"]), np.asarray(latents[name]["labels"])
        ax.scatter(z[:, 0], z[:, 1] if z.shape[1] > 1 else np.zeros(len(z)), c=labels, cmap="tab10", s=5)
        ax.set_title(name, fontsize=8)
    fig.suptitle("toy problem: z ~ q(z|x), coloured by sequence")
    return _save(fig, path)
