"""Drawings of DCSOD cells as DAGs (the thesis's Figure 4.6), with matplotlib only.

Conventions (those of :mod:`search_space.genotype` and :mod:`search_space.network`):

* ``v0``, drawn as ``input``, is the cell's input: the previous cell's output (the stem's for the first cell).
* Each operator vertex ``v_i`` (``1 <= i < k``) is a box labelled with its operator (``conv3x3``, ``dwconv5x5``,
  ... : the names of :data:`search_space.ops.OPS`) and its index; it applies that operator to the
  channel-concatenation of the vertices whose arrows enter it (in increasing index order).
* ``v_K`` (``K = k``), drawn as ``output``, receives an arrow from every *leaf* (live operator vertex without a
  successor): the leaves are concatenated and projected (conv1x1 -> BN) back to the cell's width. With the
  residual wiring (``genotype.residual``) the box reads ``output + input``: the cell's input is added before the
  ReLU.
* Only the pruned cell is drawn: vertices unreachable from ``v0`` (dead: they receive no input, so they compute
  nothing) and their edges are left out; the panel's footnote names them.

Layout (:func:`layout`): layered, left to right, deterministic. A vertex's layer is its longest-path distance
from ``v0``; ``output`` is one layer right of the deepest vertex. The vertices of a layer are stacked vertically,
centred on ``v0``'s row, ordered by the mean row of their predecessors (then by index), so arrows cross little.
Every arrow goes from a lower layer to a higher one; an arrow that skips layers is bent up or down by a bulge from
a fixed list: one whose curve misses the boxes in between, then the least crowded by the arrows already placed,
then the smallest.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .genotype import Cell, Genotype
from .ops import op_names

# Geometry in data units (equal aspect): layer pitch, row pitch, box size; inches per data unit in a saved figure.
_DX, _DY = 1.9, 0.95
_BOX_W, _BOX_H, _OUT_H = 1.3, 0.46, 0.7
_MARGIN = 0.3
_INCH = 0.55
#: Candidate bulges (data units, positive = upwards) of an arrow, in order of preference.
_BULGES = (0.0, 0.45, -0.45, 0.75, -0.75, 1.05, -1.05, 1.35, -1.35, 1.65, -1.65, 1.95, -1.95)
_SAMPLES = 32
_PALETTE = ("#cfe2f3", "#9fc5e8", "#6fa8dc", "#d9ead3", "#b6d7a8", "#fff2cc", "#f4cccc", "#d9d2e9")
_TERMINAL = "#e6e6e6"


def layout(cell: Cell) -> dict[int, tuple[float, float]]:
    """``{vertex: (layer, row)}`` for the live vertices of ``cell`` and its output vertex ``cell.k``.

    ``layer`` is the longest-path distance from ``v0`` (``v0`` is layer 0, the output one more than the deepest
    vertex); ``row`` places the vertices of a layer one unit apart, centred on 0 (higher rows are drawn higher),
    ordered by the mean row of their predecessors, then by index. Pure and deterministic."""
    pruned = cell.pruned()
    live = sorted(pruned.live)
    preds = {v: pruned.predecessors(v) for v in live}
    depth = {0: 0}
    for v in live[1:]:  # edges go from lower to higher indices: predecessors are settled first
        depth[v] = 1 + max(depth[u] for u in preds[v])
    out = cell.k
    depth[out] = 1 + max(depth.values())
    preds[out] = pruned.leaves()
    pos: dict[int, tuple[float, float]] = {}
    for layer in range(depth[out] + 1):
        members = [v for v in (*live, out) if depth[v] == layer]
        members.sort(key=lambda v: (-_mean([pos[u][1] for u in preds.get(v, ())]), v))
        for rank, v in enumerate(members):
            pos[v] = (float(layer), (len(members) - 1) / 2 - rank)
    return pos


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _edges(cell: Cell) -> list[tuple[int, int]]:
    """The drawn edges: the pruned cell's, then every leaf into the output vertex ``cell.k``."""
    pruned = cell.pruned()
    return sorted(pruned.edges) + [(v, cell.k) for v in pruned.leaves()]


def _label(cell: Cell, v: int, residual: bool) -> str:
    if v == 0:
        return "input"
    if v == cell.k:
        return "output\n+ input" if residual else "output"
    return cell.ops[v - 1]


def _color(cell: Cell, v: int) -> str:
    if v in (0, cell.k):
        return _TERMINAL
    names = op_names()
    op = cell.ops[v - 1]
    return _PALETTE[names.index(op) % len(_PALETTE)] if op in names else _TERMINAL


def _curve(a, b, bulge: float):
    """``(control, points)``: the quadratic Bézier curve from ``a`` to ``b`` whose middle lies ``bulge`` above the
    chord's (control point ``2·bulge`` above the chord's midpoint, so the curve advances steadily left to right),
    and ``_SAMPLES`` points of it (shape ``(n, 2)``)."""
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    control = (a + b) / 2 + np.array([0.0, 2 * bulge])
    t = np.linspace(0, 1, _SAMPLES)[:, None]
    return control, (1 - t) ** 2 * a + 2 * t * (1 - t) * control + t * t * b


class _Geometry:
    """Where everything of one drawn cell goes, in data units: ``xy`` and ``heights`` of the boxes, and per edge
    its ``start`` and ``end`` ports, Bézier ``control`` point and sampled ``points``; ``extent`` ``(x0, x1, y0,
    y1)`` holds them all."""

    def __init__(self, cell: Cell, residual: bool) -> None:
        import numpy as np

        self.pos = layout(cell)
        self.xy = {v: (x * _DX, y * _DY) for v, (x, y) in self.pos.items()}
        self.heights = {v: _OUT_H if v == cell.k and residual else _BOX_H for v in self.xy}
        self.edges = _edges(cell)
        # 1. route each edge (shortest first) between the middles of its boxes' sides: the first bulge whose curve
        #    misses the boxes on its way, preferring (among those) curves clear of the ones routed before it
        bulge: dict[tuple[int, int], float] = {}
        drawn = np.zeros((0, 2))
        for j, i in sorted(self.edges, key=lambda e: (self.xy[e[1]][0] - self.xy[e[0]][0], e)):
            a = (self.xy[j][0] + _BOX_W / 2, self.xy[j][1])
            b = (self.xy[i][0] - _BOX_W / 2, self.xy[i][1])
            others = [(x, y, self.heights[v]) for v, (x, y) in self.xy.items() if a[0] < x < b[0]]

            def cost(h: float, a=a, b=b, others=others, drawn=drawn) -> tuple:
                pts = _curve(a, b, h)[1]
                hits = sum(int(np.sum((np.abs(pts[:, 0] - x) <= _BOX_W / 2 + 0.08)
                                      & (np.abs(pts[:, 1] - y) <= hh / 2 + 0.08))) for x, y, hh in others)
                inner = pts[(pts[:, 0] > a[0] + 0.5) & (pts[:, 0] < b[0] - 0.5)]  # away from the shared ports
                crowd = 0
                if len(drawn) and len(inner):
                    near = np.hypot(inner[:, None, 0] - drawn[None, :, 0], inner[:, None, 1] - drawn[None, :, 1])
                    crowd = int(np.sum(near.min(axis=1) < 0.15))
                return hits, crowd, abs(h), -h

            bulge[j, i] = min(_BULGES, key=cost) if others else 0.0
            drawn = np.vstack([drawn, _curve(a, b, bulge[j, i])[1]])
        # 2. ports: the arrows of a box side are spread over its height, ordered by where they head (top first)
        self.start: dict[tuple[int, int], tuple[float, float]] = {}
        self.end: dict[tuple[int, int], tuple[float, float]] = {}
        for v, (x, y) in self.xy.items():
            for mine, ports, sign in ((0, self.start, 1), (1, self.end, -1)):

                def heading(e, v=v, sign=sign) -> tuple:
                    a = (self.xy[e[0]][0] + _BOX_W / 2, self.xy[e[0]][1])
                    b = (self.xy[e[1]][0] - _BOX_W / 2, self.xy[e[1]][1])
                    control = _curve(a, b, bulge[e])[0]  # the curve leaves / enters towards its control point
                    return -np.arctan2(control[1] - self.xy[v][1], sign * (control[0] - self.xy[v][0])), e

                es = sorted((e for e in self.edges if e[mine] == v), key=heading)
                span = 0.6 * self.heights[v]
                for rank, e in enumerate(es):
                    dy = 0.0 if len(es) == 1 else span / 2 - rank * span / (len(es) - 1)
                    ports[e] = (x + sign * _BOX_W / 2, y + dy)
        self.control: dict[tuple[int, int], tuple[float, float]] = {}
        self.points: dict[tuple[int, int], np.ndarray] = {}
        for e in self.edges:
            control, self.points[e] = _curve(self.start[e], self.end[e], bulge[e])
            self.control[e] = (float(control[0]), float(control[1]))
        xs = [x for x, _ in self.xy.values()]
        curve_ys = np.concatenate([p[:, 1] for p in self.points.values()])
        top = max(max(y + self.heights[v] / 2 + 0.2 for v, (_, y) in self.xy.items()), float(curve_ys.max()))
        bottom = min(min(y - self.heights[v] / 2 for v, (_, y) in self.xy.items()), float(curve_ys.min()))
        self.extent = (min(xs) - _BOX_W / 2 - _MARGIN, max(xs) + _BOX_W / 2 + _MARGIN,
                       bottom - _MARGIN - 0.25, top + _MARGIN)  # 0.25: room for the footnote


def draw_cell(cell: Cell, ax, title: str | None = None, residual: bool = True) -> None:
    """Draw the pruned ``cell`` as a DAG on the matplotlib Axes ``ax`` (see the module docstring); ``residual``:
    the genotype's wiring, noted on the output vertex. The axes get equal aspect, no frame and limits that fit
    the cell."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    geo = _Geometry(cell, residual)
    for e in geo.edges:
        curve = MplPath([geo.start[e], geo.control[e], geo.end[e]], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
        ax.add_patch(FancyArrowPatch(path=curve, arrowstyle="-|>", mutation_scale=8, lw=0.8, color="#444444",
                                     zorder=1))
    for v, (x, y) in geo.xy.items():
        h = geo.heights[v]
        ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - h / 2), _BOX_W, h, boxstyle="round,pad=0,rounding_size=0.08",
                                    fc=_color(cell, v), ec="#333333", lw=0.8, zorder=2))
        ax.text(x, y, _label(cell, v, residual), ha="center", va="center", fontsize=7, zorder=3,
                fontweight="bold" if v in (0, cell.k) else "normal")
        ax.text(x - _BOX_W / 2, y + h / 2 + 0.03, f"v{v}", ha="left", va="bottom", fontsize=5.5, color="#666666",
                zorder=3)
    dead = sorted(set(range(1, cell.k)) - cell.live)
    if dead:
        ax.text(0.5, 0.0, "pruned (unreachable from input): " + ", ".join(f"v{v}" for v in dead),
                transform=ax.transAxes, ha="center", va="bottom", fontsize=6, color="#777777")
    x0, x1, y0, y1 = geo.extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _as_genotype(value: Any) -> Genotype:
    from .architecture import parse_architecture

    arch = parse_architecture(value)
    if not isinstance(arch, Genotype):
        raise ValueError(f"standard model {arch.name!r}: only searched genotypes have cells")
    return arch


def draw_genotype(genotype: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the three cells of ``genotype`` (a Genotype, its dict or its JSON) side by side, ``arch_hash`` in the
    title, and save the figure as a PNG at ``path`` (dpi 120, tight bounding box; written to a temporary file in
    the same directory, then renamed over ``path``). Returns ``path``. A standard model (``{"model": ...}``) is a
    one-line ``ValueError``: only searched genotypes have cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = _as_genotype(genotype)
    path = Path(path)
    extents = [_Geometry(c, g.residual).extent for c in g.cells]
    x0, x1 = min(e[0] for e in extents), max(e[1] for e in extents)  # one scale and frame for the three panels
    y0, y1 = min(e[2] for e in extents), max(e[3] for e in extents)
    panel_w, panel_h = (x1 - x0) * _INCH, (y1 - y0) * _INCH
    gap, side, bottom, top = 0.3, 0.1, 0.05, 0.75 + (0.2 if title else 0.0)
    n = len(g.cells)
    width, height = 2 * side + n * panel_w + (n - 1) * gap, bottom + panel_h + top
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    for i, cell in enumerate(g.cells):
        ax = fig.add_axes(((side + i * (panel_w + gap)) / width, bottom / height, panel_w / width, panel_h / height))
        draw_cell(cell, ax, title=f"stage {i + 1} cell", residual=g.residual)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    wiring = "residual (output + input)" if g.residual else "plain (eq. 4.6)"
    fig.suptitle((f"{title}\n" if title else "") + f"arch_hash {g.arch_hash}  ·  k = {g.k}  ·  {wiring} wiring",
                 fontsize=10, y=1 - 0.08 / height, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
