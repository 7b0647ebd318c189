"""PNG plots of a text-VAE sweep (matplotlib, Agg backend): learning curves, KL and MI against iteration per
schedule, active units per posterior, toy latent scatter (the β-schedule plot is shared:
:func:`pipelines.sweeps.outputs.plot_schedules`).

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
import pandas as pd

from pipelines.sweeps.outputs import robust_limits
from pipelines.sweeps.outputs import save_figure as _save

#: Learning-curve panels: (per-epoch key, panel title).
CURVE_PANELS = (("val_elbo", "validation ELBO (nats/sentence)"), ("val_rec", "reconstruction −log p(x|z) (nats)"),
                ("val_kl", "KL(q(z|x) ‖ p(z)) (nats)"))
def _clip_axis(ax, values: list[float], title: str) -> None:
    """Set ``ax``'s y limits by :func:`robust_limits` and say in its title how many points lie outside."""
    limits = robust_limits(values)
    if limits is None:
        ax.set_title(title)
        return
    ax.set_ylim(*limits)
    outside = sum(1 for v in values if v is not None and np.isfinite(v) and not limits[0] <= v <= limits[1])
    ax.set_title(title + (f"\n(y clipped: {outside} point(s) outside)" if outside else ""), fontsize=10)


def plot_learning_curves(path: Path, curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Validation ELBO, reconstruction and KL (nats per sentence) per epoch, one line per configuration (dashed:
    aggressive training). Each panel's y range is :func:`robust_limits` of its values, so a diverging run does not
    flatten the others; the number of points outside is in the panel's title."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = plt.get_cmap("tab20")
    panel_values: dict[str, list[float]] = {key: [] for key, _ in CURVE_PANELS}
    for i, (name, points) in enumerate(sorted(curves.items())):
        epochs = [p["epoch"] for p in points]
        for ax, (key, _) in zip(axes, CURVE_PANELS):
            ys = [np.nan if p.get(key) is None else float(p[key]) for p in points]
            panel_values[key] += ys
            ax.plot(epochs, ys, marker=".", label=name, color=colours(i % 20),
                    linestyle="--" if "aggr" in name else "-")
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        ax.set(xlabel="epoch", ylabel="nats per sentence")
        _clip_axis(ax, panel_values[key], title)
    if curves:
        axes[0].legend(fontsize=7, title="configuration", title_fontsize=7)
    return _save(fig, path)


def _variant(posterior: str, aggressive: bool) -> str:
    return posterior + (" + aggressive" if aggressive else "")


def plot_trace(path: Path, trace: pd.DataFrame) -> Path:
    """Validation KL and mutual information I(x, z) (nats per sentence, on the trace's validation subset)
    against the training iteration: one column per posterior (and aggressive training), one line per schedule,
    the mean over seeds with a ±1 sd band where there are several. ``trace``: rows of ``trace.parquet``
    (``schedule, posterior, aggressive, seed, iteration, val_kl, val_mi``)."""
    if not len(trace):
        raise ValueError("plot_trace: the trace is empty")
    variants = list(trace.groupby(["posterior", "aggressive"], sort=True).groups)
    fig, axes = plt.subplots(2, len(variants), figsize=(4.6 * len(variants) + 0.4, 6.4), squeeze=False,
                             sharex=True)
    colours = plt.get_cmap("tab10")
    schedules = sorted(trace["schedule"].unique())
    for col, (posterior, aggressive) in enumerate(variants):
        part = trace[(trace["posterior"] == posterior) & (trace["aggressive"] == aggressive)]
        for row, (key, label) in enumerate((("val_kl", "KL(q(z|x) ‖ p(z))"), ("val_mi", "I(x, z)"))):
            ax = axes[row, col]
            for i, schedule in enumerate(schedules):
                stats = part[part["schedule"] == schedule].groupby("iteration")[key].agg(["mean", "std", "count"])
                if not len(stats):
                    continue
                seeds = int(stats["count"].max())
                ax.plot(stats.index, stats["mean"], color=colours(i % 10),
                        label=schedule + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
                if seeds > 1:
                    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                    color=colours(i % 10), alpha=0.2, linewidth=0)
            ax.set_title(f"{label}: {_variant(posterior, aggressive)}", fontsize=9)
            ax.set_ylabel("nats per sentence", fontsize=8)
            if row == 1:
                ax.set_xlabel("iteration", fontsize=8)
    axes[0, 0].legend(fontsize=7, title="β schedule", title_fontsize=7)
    fig.suptitle("validation KL and mutual information against iteration (band: ±1 sd over seeds)", fontsize=10)
    return _save(fig, path)


def plot_active_units(path: Path, results: pd.DataFrame) -> Path:
    """Active units (latent dimensions whose posterior mean varies over the test sentences, ``au``) per
    posterior (and aggressive training), one bar per schedule: the mean over seeds with a ±1 sd whisker and each
    seed's value as a dot. ``results``: complete rows of ``results.parquet``."""
    rows = results.dropna(subset=["au"])
    if not len(rows):
        raise ValueError("plot_active_units: no row has active units")
    variants = list(rows.groupby(["posterior", "aggressive"], sort=True).groups)
    schedules = sorted(rows["schedule"].unique())
    width = 0.8 / len(schedules)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(1.9 * len(variants) * max(1, len(schedules) / 3) + 2.5, 3.8))
    for i, schedule in enumerate(schedules):
        for j, (posterior, aggressive) in enumerate(variants):
            au = rows[(rows["schedule"] == schedule) & (rows["posterior"] == posterior)
                      & (rows["aggressive"] == aggressive)]["au"].to_numpy(dtype=float)
            if not len(au):
                continue
            x = j + (i - (len(schedules) - 1) / 2) * width
            sd = float(au.std(ddof=1)) if len(au) > 1 else 0.0
            ax.bar(x, au.mean(), width, yerr=sd, capsize=3, color=colours(i % 10), alpha=0.75,
                   label=schedule if j == 0 else None)
            ax.scatter(np.full(len(au), x), au, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(variants)), [_variant(*v) for v in variants], fontsize=8)
    ax.set_ylabel("active units (dims)")
    ax.set_title("active units on the test split (bar: mean over seeds, whisker: ±1 sd, dots: seeds)", fontsize=9)
    ax.legend(fontsize=7, title="β schedule", title_fontsize=7)
    return _save(fig, path)


def _scatter_by_label(ax, z: np.ndarray, labels: np.ndarray, colours) -> None:
    """One scatter per label (colour ``colours(label)``), so the figure legend can name each colour."""
    y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
    for label in np.unique(labels):
        mask = labels == label
        ax.scatter(z[mask, 0], y[mask], color=colours(int(label) % 10), s=5, label=f"sequence {int(label)}")


def plot_latents(path: Path, latents: Mapping[str, Mapping[str, Sequence]]) -> Path:
    """Samples z ~ q(z|x) of the toy test sentences, one panel per configuration: x axis z₁, y axis z₂ (0 for a
    1-D latent; further dimensions are not drawn), colour = which of the toy's sequences the sentence is (a
    legend names each colour). Well separated colours mean z tells the sequences apart."""
    names = sorted(latents)
    if not names:
        raise ValueError("plot_latents: no configuration has latent samples")
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.6, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    colours = plt.get_cmap("tab10")
    one_dim = False
    for ax, name in zip(axes.flat, names):
        z, labels = np.asarray(latents[name]["z"], dtype=float), np.asarray(latents[name]["labels"])
        one_dim |= z.shape[1] == 1
        _scatter_by_label(ax, z, labels, colours)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("z₁", fontsize=8)
        ax.set_ylabel("z₂" if z.shape[1] > 1 else "0 (1-D latent)", fontsize=8)
    handles, texts = {}, {}
    for ax in axes.flat[:len(names)]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
            texts[text] = int(text.split()[-1])
    ordered = sorted(handles, key=texts.get)
    fig.legend([handles[t] for t in ordered], ordered, title="colour = toy sequence", loc="center right",
               fontsize=7, title_fontsize=8, markerscale=2)
    fig.suptitle("toy problem: z ~ q(z|x) of the test sentences" + (", first two dimensions" if not one_dim else ""))
    return _save(fig, path, rect=(0, 0, 1 - 1.6 / (3.4 * cols + 1.6), 1))  # the legend's column stays free
