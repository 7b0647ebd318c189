"""Loss landscapes around trained weights (the thesis's Figure 4.5), after Li et al. 2018, "Visualizing the
Loss Landscape of Neural Nets". Plain PyTorch (no Ray); matplotlib only in :func:`plot_landscapes`, lazily.

>>> result = landscape(model, training_loss_fn(model, images, labels), steps=21, span=1.0, seed=0)
>>> plot_landscapes({"cross-entropy": result_ce, "distillation": result_kd}, "landscape.png")

A network trained with outlier distillation is measured under its own objective (eq. 4.11) by handing
:func:`training_loss_fn` the objective, fixed outlier images and the teachers' probabilities on both sets
(:func:`fixed_teacher_probs`); panels of different losses are then plotted with ``shared_levels=False``.

Conventions (every function):

* A *direction* is a list of tensors aligned with ``list(model.parameters())`` (same order, shapes, dtypes and
  devices). Buffers (BN running statistics) are never part of a direction and are never perturbed.
* Coordinates ``(a, b)`` are in *filter-normalised units* (:func:`random_direction`): at ``a = 1`` along one
  direction every filter of every weight tensor (dim > 1) moves by a distance equal to that filter's own norm.
  Two random directions are nearly orthogonal in high dimension, so at ``(a, b)`` each filter moves by about
  ``sqrt(a² + b²)`` times its norm.
* Surfaces are numpy float64 arrays in the loss's units (nats for cross-entropy); ``surface[i, j]`` is the loss
  at ``θ + grid[i]·d1 + grid[j]·d2`` (first index: first direction); a 1-D surface ``surface[i]`` is the loss
  at ``θ + grid[i]·d1``.
* Loss evaluations run with the model in eval mode and restore weights, buffers and the train/eval mode exactly
  afterwards, whatever happens.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trainables.image.losses import Objective, ensemble_probs, make_objective

Direction = list[Tensor]


# ------------------------------------------------------------------------------------------ directions
def random_direction(model: nn.Module, generator: torch.Generator | int) -> Direction:
    """A random Gaussian direction in parameter space, filter-normalised (Li et al. 2018, §4).

    For every parameter tensor ``w`` with ``w.dim() > 1`` (conv ``(out, in, kh, kw)``, linear ``(out, in)``) a
    standard-normal tensor ``d`` of the same shape is drawn and each filter ``d[f]`` (slice along dim 0) is
    rescaled to the Frobenius norm of the weights' filter: ``d[f] ← d[f] / ‖d[f]‖ · ‖w[f]‖`` (a filter of zero
    weights gets a zero direction). Parameters with ``dim() <= 1`` (biases, BN weights and biases) get a zero
    direction: the paper's choice of ignoring BN and bias parameters, which keeps the plot's scale tied to the
    filters (the quantity a scale-invariant, BN-normalised network's loss actually depends on). Buffers (BN
    running statistics) are not parameters and are not part of the direction.

    ``generator``: a CPU ``torch.Generator`` (advanced by the draw, so two calls on one generator give two
    different directions) or an int seed. The draw happens on the CPU in float32 and is then moved to each
    parameter's device and dtype, so a seed gives the same direction on every device.
    Returns a list aligned with ``list(model.parameters())``.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    direction = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            direction.append(torch.zeros_like(w))
            continue
        d = torch.randn(tuple(w.shape), generator=generator, dtype=torch.float32)
        w_norm = w.float().cpu().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1)
        scale = torch.where(d_norm > 0, w_norm / d_norm.clamp_min(1e-30), torch.zeros_like(w_norm))
        d = d * scale.view(-1, *([1] * (w.dim() - 1)))
        direction.append(d.to(device=w.device, dtype=w.dtype))
    return direction


def _check_directions(model: nn.Module, directions: Sequence[Direction]) -> list[Tensor]:
    params = list(model.parameters())
    if len(directions) not in (1, 2):
        raise ValueError(f"directions: expected 1 or 2 directions, got {len(directions)}")
    for k, direction in enumerate(directions):
        if len(direction) != len(params):
            raise ValueError(f"directions[{k}]: expected {len(params)} tensors (one per model parameter), "
                             f"got {len(direction)}")
        for i, (d, p) in enumerate(zip(direction, params)):
            if tuple(d.shape) != tuple(p.shape):
                raise ValueError(f"directions[{k}][{i}]: expected shape {tuple(p.shape)}, got {tuple(d.shape)}")
    return params


def _check_grid(grid) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise ValueError(f"grid: expected a non-empty 1-D array of finite coordinates, got shape {grid.shape}")
    return grid


# ------------------------------------------------------------------------------------------ surfaces
def loss_surface(model: nn.Module, loss_fn: Callable[[nn.Module], float], directions: Sequence[Direction],
                 grid) -> np.ndarray:
    """``loss_fn(model)`` at ``θ + a·d1 + b·d2`` for every ``(a, b)`` in ``grid × grid``.

    ``directions``: one or two directions (lists aligned with ``model.parameters()``, e.g. from
    :func:`random_direction`); ``grid``: 1-D coordinates (the same for both axes), e.g. ``np.linspace(-1, 1,
    21)``. Returns float64 of shape ``(len(grid), len(grid))`` with ``[i, j]`` the loss at ``(a=grid[i],
    b=grid[j])``, or ``(len(grid),)`` for one direction. A grid coordinate of exactly 0 reproduces ``θ``
    bit for bit (``θ + 0·d == θ``). Non-finite losses (a diverging far point) are stored as they are.

    The model is put in eval mode for the evaluations: BN then normalises with its running statistics, so the
    loss is a deterministic function of the weights alone (in train mode it would depend on the batch's own
    statistics and each forward would overwrite the running statistics, i.e. mutate the model being measured).
    The running statistics are the trained ones and are not re-estimated for perturbed weights: the surface is
    that of the deployed (eval-mode) network. The original parameters, buffers and train/eval mode are restored
    exactly afterwards, also when ``loss_fn`` raises (the exception propagates).
    """
    params = _check_directions(model, directions)
    grid = _check_grid(grid)
    originals = [p.detach().clone() for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]  # per module: a frozen submodule stays frozen
    shape = (len(grid),) * len(directions)
    surface = np.empty(shape, dtype=np.float64)
    try:
        for index in np.ndindex(*shape):
            model.eval()  # at every point: a loss_fn that switches the mode cannot leak it into the next point
            with torch.no_grad():
                for k, p in enumerate(params):
                    value = originals[k]
                    for axis, i in enumerate(index):
                        value = value + float(grid[i]) * directions[axis][k]
                    p.copy_(value)
            surface[index] = float(loss_fn(model))
    finally:
        with torch.no_grad():
            for p, original in zip(params, originals):
                p.copy_(original)
            for b, original in buffers:
                b.copy_(original)
        for m, training in modes:
            m.training = training
    return surface


# ------------------------------------------------------------------------------------------ sharpness
def _center_index(grid: np.ndarray) -> int:
    c = int(np.argmin(np.abs(grid)))
    if abs(grid[c]) > 1e-9 * max(1.0, float(np.max(np.abs(grid)))):
        raise ValueError(f"grid: expected a coordinate 0 (the trained weights), nearest is {grid[c]!r}")
    return c


def _check_surface(surface, grid) -> tuple[np.ndarray, np.ndarray]:
    grid = _check_grid(grid)
    surface = np.asarray(surface, dtype=np.float64)
    if surface.ndim not in (1, 2) or any(n != len(grid) for n in surface.shape):
        raise ValueError(f"surface: expected shape ({len(grid)},) or ({len(grid)}, {len(grid)}), "
                         f"got {surface.shape}")
    if len(grid) < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError("grid: expected at least 2 strictly increasing coordinates")
    return surface, grid


def center_loss(surface, grid) -> float:
    """The loss at the grid's origin ``(0, 0)`` (or ``0``): the trained weights. ``grid`` must contain 0."""
    surface, grid = _check_surface(surface, grid)
    c = _center_index(grid)
    return float(surface[(c,) * surface.ndim])


def ring_mask(grid, radius: float, dims: int = 2) -> np.ndarray:
    """Boolean mask (shape ``(len(grid),) * dims``) of the grid points at distance ``radius`` from the origin:
    ``|‖(a, b)‖₂ − radius| ≤ h / 2`` (inclusive, with 1e-9·h slack against rounding), ``h`` the largest grid
    spacing — a band one grid spacing wide, the grid's discretisation of the circle (in 1-D: ``a = ±radius``).
    """
    grid = _check_grid(grid)
    if len(grid) < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError("grid: expected at least 2 strictly increasing coordinates")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius: expected a positive finite number, got {radius!r}")
    if radius > min(-grid[0], grid[-1]) * (1 + 1e-9):
        raise ValueError(f"radius: {radius!r} reaches outside the grid [{grid[0]!r}, {grid[-1]!r}]: the ring "
                         "would be cut off")
    h = float(np.max(np.diff(grid)))
    coords = np.meshgrid(*([grid] * dims), indexing="ij")
    rho = np.sqrt(sum(c ** 2 for c in coords))
    return np.abs(rho - radius) <= h / 2 * (1 + 1e-9)


def sharpness(surface, grid, radius: float) -> float:
    """Mean loss rise at filter-normalised distance ``radius`` from the trained weights.

    ``sharpness = mean{ surface[p] : p in ring_mask(grid, radius) } − surface[origin]``: the mean over the grid
    points whose distance ``‖(a, b)‖₂`` is within half a grid spacing of ``radius`` (:func:`ring_mask`; in 1-D
    the two points ``±radius``), minus the centre loss (:func:`center_loss`). Units: the loss's units (nats for
    cross-entropy) at a perturbation of ``radius`` filter-normalised units (each filter moved by about
    ``radius`` times its own norm). Larger = sharper minimum. For a quadratic ``L = L0 + ½c1·a² + ½c2·b²`` on a
    symmetric grid it equals ``¼(c1 + c2)·mean(ρ²)`` over the ring's points, i.e. ``¼(c1 + c2)·r²`` up to the
    ring's discretisation (``ρ ∈ [r − h/2, r + h/2]``). Non-finite losses on the ring make it non-finite.
    ``grid`` must contain 0 and reach ``radius`` on both sides.
    """
    surface, grid = _check_surface(surface, grid)
    mask = ring_mask(grid, radius, surface.ndim)
    if not mask.any():  # cannot happen for radius inside the grid; kept for clarity
        raise ValueError(f"radius: no grid point at distance {radius!r}")
    return float(np.mean(surface[mask]) - center_loss(surface, grid))


def landscape(model: nn.Module, loss_fn: Callable[[nn.Module], float], steps: int = 21, span: float = 1.0,
              seed: int = 0, dims: int = 2) -> dict[str, Any]:
    """The Figure 4.5 computation in one call: ``dims`` (2, or 1) filter-normalised random directions drawn in
    turn from one ``torch.Generator`` seeded with ``seed``, the grid ``linspace(-span, span, steps)`` (made
    exactly symmetric, so its middle point is exactly 0), the surface (:func:`loss_surface`) and
    :func:`sharpness` at radius ``span / 2``.

    Returns ``{"grid": (steps,), "surface": (steps, steps) or (steps,), "center_loss": float,
    "sharpness": float, "radius": float}`` (numpy float64 arrays and Python floats; ``.tolist()`` the arrays for
    JSON). ``steps`` must be odd and >= 3 (the trained weights are the middle point). Cost: ``steps**dims``
    calls of ``loss_fn``.
    """
    if steps < 3 or steps % 2 == 0:
        raise ValueError(f"steps: expected an odd integer >= 3 (the centre is a grid point), got {steps!r}")
    if not (span > 0 and math.isfinite(span)):
        raise ValueError(f"span: expected a positive finite number, got {span!r}")
    if dims not in (1, 2):
        raise ValueError(f"dims: expected 1 or 2, got {dims!r}")
    generator = torch.Generator().manual_seed(seed)
    directions = [random_direction(model, generator) for _ in range(dims)]
    grid = np.linspace(-span, span, steps)
    grid = (grid - grid[::-1]) / 2  # exactly antisymmetric: grid[steps // 2] == 0.0
    surface = loss_surface(model, loss_fn, directions, grid)
    radius = span / 2
    return {"grid": grid, "surface": surface, "center_loss": center_loss(surface, grid),
            "sharpness": sharpness(surface, grid, radius), "radius": float(radius)}


# ------------------------------------------------------------------------------------------ loss closure
def training_loss_fn(model: nn.Module, images: Tensor, labels: Tensor, objective: str | Objective | None = None,
                     batch_size: int = 512, *, outliers: Tensor | None = None, teacher_in: Tensor | None = None,
                     teacher_out: Tensor | None = None) -> Callable[[nn.Module | None], float]:
    """A closure ``loss(m=model) -> float``: the loss of ``m`` over the fixed set ``images`` (float ``(N, C, H,
    W)``, already normalised as the network's inputs) and ``labels`` (long ``(N,)``), forward passes in batches
    of ``batch_size`` under ``torch.no_grad()``; every tensor is moved to ``model``'s device once.

    ``objective`` None: the cross-entropy, nats per image. Otherwise ``objective`` (a name in
    :data:`trainables.image.losses.OBJECTIVES` or an instance, e.g. the ``distill`` objective a network trained
    with) evaluated once on the logits of the whole fixed set: ``objective(logits(images), labels,
    logits(outliers), teacher_in, teacher_out)`` — exactly the training objective's expectation over these
    images (every objective is a per-image mean of an ID term plus ``lam`` times a per-image mean of an outlier
    term), with no augmentation and fixed inputs, so the loss is a deterministic function of the weights:

    - ``outliers``: float ``(M, C, H, W)`` auxiliary outlier images, normalised like ``images``, required by an
      objective that draws outliers (``energy``; ``distill`` with ``lam > 0``; optional for ``oe``, which reduces
      to CE without them), ignored by one that does not;
    - ``teacher_in`` ``(N, K)`` / ``teacher_out`` ``(M, K)``: the teacher ensemble's probabilities at the
      objective's temperature on ``images`` / ``outliers`` (e.g. :func:`fixed_teacher_probs`), required by an
      objective that uses teachers (shapes are checked by the objective).

    A required input that is missing is a ``ValueError`` naming what the objective needs ("teacher or
    outliers"). Comparing landscapes of models trained with different objectives, either measure all of them
    with one loss (comparable numbers, e.g. cross-entropy) or each with its own training objective (the thesis's
    Figure 4.5: comparable shapes, each in its own units). The closure does not change the model's train/eval
    mode (:func:`loss_surface` sets eval mode, so BN sees ID and outlier batches apart, as its running statistics
    do).
    """
    if isinstance(objective, str):
        objective = make_objective(objective)
    _check_loss_inputs(objective, images, labels, outliers, teacher_in, teacher_out, batch_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    images, labels = images.to(device), labels.to(device)
    uses_outliers = objective is not None and objective.needs_outliers and outliers is not None
    outliers = outliers.to(device) if uses_outliers else None
    teacher_in, teacher_out = (None if t is None else t.to(device) for t in (teacher_in, teacher_out))

    def logits(m: nn.Module, x: Tensor) -> Tensor:
        return torch.cat([m(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])

    def loss(m: nn.Module | None = None) -> float:
        m = model if m is None else m
        with torch.no_grad():
            if objective is None:
                return float(torch.nn.functional.cross_entropy(logits(m, images), labels))
            out = logits(m, outliers) if outliers is not None else None
            return float(objective(logits(m, images), labels, out, teacher_in, teacher_out))

    return loss


def _check_loss_inputs(objective: Objective | None, images: Tensor, labels: Tensor, outliers: Tensor | None,
                       teacher_in: Tensor | None, teacher_out: Tensor | None, batch_size: int) -> None:
    """ValueError (one line) for what :func:`training_loss_fn` cannot evaluate: an objective missing its teacher
    probabilities or outliers, mis-shaped images or labels, a non-positive batch size."""
    if objective is not None:
        lacks_teacher = objective.needs_teacher and teacher_in is None and teacher_out is None
        lacks_outliers = objective.needs_outliers and not objective.outliers_optional and outliers is None
        if lacks_teacher or lacks_outliers:
            raise ValueError(f"objective: {type(objective).__name__} needs a teacher or outliers: pass "
                             + ", ".join(n for n, lack in (("teacher_in/teacher_out", lacks_teacher),
                                                           ("outliers", lacks_outliers)) if lack)
                             + " (or use None: cross-entropy on the ID images alone)")
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"images, labels: expected shapes (N, C, H, W) and (N,) with N > 0, got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    if outliers is not None and (outliers.dim() != 4 or len(outliers) == 0):
        raise ValueError(f"outliers: expected shape (M, C, H, W) with M > 0, got {tuple(outliers.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")


def fixed_teacher_probs(teachers: Sequence[nn.Module], images: Tensor, temperature: float,
                        batch_size: int = 512) -> Tensor:
    """The ensemble's probabilities ``mean_k softmax(teacher_k(x) / temperature)`` on the fixed ``images`` (float
    ``(N, C, H, W)``, normalised as the network's inputs; on the teachers' device), in batches, teachers in eval
    mode: ``(N, K)`` float32, computed once, deterministic (no augmentation) — the ``teacher_in`` /
    ``teacher_out`` of :func:`training_loss_fn`, as :class:`trainables.image.train.TeacherCache` computes them
    for training."""
    return torch.cat([ensemble_probs(teachers, images[i:i + batch_size], temperature)
                      for i in range(0, len(images), batch_size)])


# ------------------------------------------------------------------------------------------ plots
def plot_landscapes(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                    title: str | None = None, log: bool | None = None, shared_levels: bool = True) -> Path:
    """Contour plots side by side, one panel per named result (e.g. ``{"cross-entropy": r1, "distillation":
    r2}``, each a :func:`landscape` dict or its JSON form), with a dashed circle at the sharpness radius; each
    panel is titled with its name and sharpness. With ``shared_levels`` the panels share their colour levels
    (the finite range of all surfaces: one loss, comparable colours) and one colour bar; without, each panel
    has its own levels and colour bar (panels measuring different losses, in different units). 1-D results are
    drawn as curves, with a shared y-range under ``shared_levels``. Axes in filter-normalised units, colours in
    loss units: 21 levels, logarithmically spaced when ``log`` (default: when every finite loss of the range is
    positive and they span more than a factor 10 — far points of a random direction can be orders of magnitude
    above the minimum, which linear levels would flatten into one colour), else linear. The PNG is written
    atomically (temporary file in the same directory, then ``os.replace``). Returns the path. Uses matplotlib's
    Agg canvas directly (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("results: expected at least one named landscape")
    panels = [_panel(name, r) for name, r in results.items()]
    shared = _Scale.of([p[2] for p in panels], log) if shared_levels else None
    fig = Figure(figsize=((4.2 if shared_levels else 5.0) * len(panels) + 0.8, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    mappable = None
    for ax, panel in zip(axes, panels):
        scale = shared or _Scale.of([panel[2]], log)
        mappable = _draw_panel(ax, panel, scale)
        if shared is None and mappable is not None:
            scale.colorbar(fig, mappable, ax)
    if shared is not None and mappable is not None:
        shared.colorbar(fig, mappable, list(axes))
    if title:
        fig.suptitle(title)
    return _save_png(fig, Path(path))


def _panel(name: str, r: Mapping[str, Any]) -> tuple:
    """``(name, grid, surface, radius, sharpness)`` of one result (its sharpness computed if not stored)."""
    grid = _check_grid(r["grid"])
    surface, grid = _check_surface(r["surface"], grid)
    radius = r.get("radius")
    s = r.get("sharpness")
    if s is None and radius is not None:
        s = sharpness(surface, grid, radius)
    return name, grid, surface, radius, s


class _Scale:
    """The colour (or y) range ``[lo, hi]`` of some surfaces, its 21 ``levels`` and ``norm`` (LogNorm or None)."""

    def __init__(self, lo: float, hi: float, log: bool):
        from matplotlib.colors import LogNorm

        self.lo, self.hi, self.log = lo, hi, log
        self.levels = np.geomspace(lo, hi, 21) if log else np.linspace(lo, hi, 21)
        self.norm = LogNorm(lo, hi) if log else None

    @classmethod
    def of(cls, surfaces: Sequence[np.ndarray], log: bool | None) -> _Scale:
        """The finite range of ``surfaces`` (widened by ±0.5 when flat); ``log`` None: log when every finite value
        is positive and they span more than a factor 10; ValueError for ``log`` with a non-positive value."""
        finite = np.concatenate([s[np.isfinite(s)].ravel() for s in surfaces])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        if log is None:
            log = lo > 0 and hi > 10 * lo
        if log and not lo > 0:
            raise ValueError(f"log: logarithmic levels need positive losses, the smallest is {lo!r}")
        return cls(lo, hi, log)

    def colorbar(self, fig, mappable, ax) -> None:
        bar = fig.colorbar(mappable, ax=ax, label="loss")
        bar.set_ticks(self.levels[::4], labels=[f"{v:.3g}" for v in self.levels[::4]])


def _draw_panel(ax, panel: tuple, scale: _Scale):
    """One panel: filled contours of a 2-D surface (returns the mappable) or the curve of a 1-D one (None)."""
    name, grid, surface, radius, s = panel
    lo, hi = scale.lo, scale.hi
    label = name if s is None else f"{name}\nsharpness {s:.4g}" + ("" if radius is None else f" at r = {radius:g}")
    mappable = None
    if surface.ndim == 2:
        z = np.clip(np.where(np.isfinite(surface), surface, hi), lo, hi)
        mappable = ax.contourf(grid, grid, z.T, levels=scale.levels, cmap="viridis", norm=scale.norm)  # x = a, y = b
        ax.contour(grid, grid, z.T, levels=scale.levels, colors="k", linewidths=0.3)
        if radius is not None:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(radius * np.cos(t), radius * np.sin(t), "w--", lw=1)
        ax.plot([0], [0], "r+", ms=10)
        ax.set_aspect("equal")
        ax.set_ylabel("b (direction 2)")
    else:
        ax.plot(grid, surface, "-o", ms=3)
        if scale.log:
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.2, hi * 1.2)
        else:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        if radius is not None:
            for x in (-radius, radius):
                ax.axvline(x, color="grey", ls="--", lw=1)
        ax.set_ylabel("loss")
    ax.set_xlabel("a (direction 1, filter-normalised)")
    ax.set_title(label, fontsize=9)
    return mappable


def _save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file in the same directory, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
