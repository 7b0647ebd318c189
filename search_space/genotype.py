"""Genotype of the DCSOD dense-connectivity space: three cells (one per stage), each a DAG.

Conventions (seed §4.3.1, with the choices the text leaves open):

* ``k`` counts **all** vertices of a cell including the input vertex ``v0`` (the output vertex is
  implicit). Vertices ``v1 .. v_{k-1}`` are operator vertices, so a cell has ``k - 1`` operators and
  ``k(k-1)/2`` optional edges ``j -> i`` (``0 <= j < i < k``); the space therefore has the paper's
  ``2^(3·k(k-1)/2)`` edge configurations. The default ``k = 6`` gives five operator vertices, one per
  operator kind.
* ``X_vi = op_i(concat_{j -> i} X_vj)`` (predecessors concatenated in increasing index order); the cell
  output is the concatenation of the *leaves* (live operator vertices without outgoing edges).
* A vertex is *dead* when no path leads to it from ``v0``: it receives no input, so it cannot compute
  anything. Every vertex reachable from ``v0`` reaches some leaf, so reachability alone decides
  liveness. :meth:`Cell.pruned` drops dead vertices' edges; the network is built from the pruned cell.
* A cell where no operator vertex is reachable (``v0`` has no outgoing edge) is **invalid**:
  constructing it raises ``ValueError``; the sampler and mutations redraw such cells.
* ``arch_hash`` identifies the network, not the encoding: it is a Weisfeiler-Lehman hash of each
  pruned cell (operator labels, in/out neighbourhoods), so dead edges, dead vertices' operators and
  relabelings of isomorphic cells do not change it. Cells are hashed in stage order.
* ``residual`` is the cell wiring of the whole network (see :mod:`search_space.network`): True adds the
  cell's input to its output (``ReLU(x + proj(concat(leaves)))``), False is the thesis's eq. 4.6 wiring
  (``ReLU(proj(concat(leaves)))``). It is part of the JSON (``"residual": true|false``) and of ``arch_hash``
  (residual genotypes hash as before the option existed). A JSON without the field means ``true``: every
  genotype written before the option existed was built with the residual path.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from .ops import OPS, op_names

NUM_STAGES = 3
CELLS_PER_STAGE = 3
DEFAULT_K = 6


def default_ops(k: int) -> tuple[str, ...]:
    """Fixed operator assignment for ``k`` vertices: vertex ``v_i`` gets the ``(i-1) mod |OPS|``-th operator."""
    names = op_names()
    return tuple(names[i % len(names)] for i in range(k - 1))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Cell:
    """One cell DAG. ``ops[i - 1]`` is the operator of vertex ``v_i``; ``edges`` holds pairs ``(j, i)``, j < i."""

    ops: tuple[str, ...]
    edges: frozenset[tuple[int, int]]

    @staticmethod
    def create(ops: Sequence[str], edges: Iterable[Sequence[int]], where: str = "cell") -> Cell:
        """Validated constructor; errors are ``ValueError`` messages starting with ``where``."""
        ops = tuple(ops)
        if len(ops) < 1:
            raise ValueError(f"{where}.ops: a cell needs at least one operator vertex (k >= 2)")
        for n, op in enumerate(ops):
            if op not in OPS:
                raise ValueError(f"{where}.ops[{n}]: unknown operator {op!r}; valid: {', '.join(op_names())}")
        k = len(ops) + 1
        seen: set[tuple[int, int]] = set()
        for n, edge in enumerate(edges):
            if (
                not isinstance(edge, (list, tuple))
                or len(edge) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in edge)
            ):
                raise ValueError(f"{where}.edges[{n}]: an edge is a pair of vertex indices [j, i], got {edge!r}")
            j, i = edge
            for v in (j, i):
                if not 0 <= v < k:
                    raise ValueError(f"{where}.edges[{n}]: vertex {v} out of range 0..{k - 1} (k={k})")
            if j >= i:
                raise ValueError(f"{where}.edges[{n}]: edge [{j}, {i}] must go from a lower to a higher vertex (j < i)")
            if (j, i) in seen:
                raise ValueError(f"{where}.edges[{n}]: duplicate edge [{j}, {i}]")
            seen.add((j, i))
        cell = Cell(ops, frozenset(seen))
        if not cell.is_valid:
            raise ValueError(f"{where}: invalid cell, no operator vertex is reachable from the input vertex v0")
        return cell

    @property
    def k(self) -> int:
        """Number of vertices including the input vertex v0."""
        return len(self.ops) + 1

    @cached_property
    def live(self) -> frozenset[int]:
        """Vertices reachable from v0 (v0 included)."""
        reached = {0}
        for j, i in sorted(self.edges):  # sorted by source: sources are settled before they are used
            if j in reached:
                reached.add(i)
        return frozenset(reached)

    @property
    def is_valid(self) -> bool:
        return len(self.live) > 1

    def pruned(self) -> Cell:
        """The same network without dead vertices' edges."""
        return Cell(self.ops, frozenset((j, i) for j, i in self.edges if j in self.live))

    def predecessors(self, i: int) -> tuple[int, ...]:
        """Live predecessors of vertex ``i`` in increasing order (the concatenation order)."""
        return tuple(sorted(j for j, t in self.edges if t == i and j in self.live))

    def leaves(self) -> tuple[int, ...]:
        """Live operator vertices with no live successor: they feed the cell output."""
        sources = {j for j, i in self.edges if j in self.live}
        return tuple(sorted(v for v in self.live if v != 0 and v not in sources))

    def fingerprint(self) -> str:
        """Weisfeiler-Lehman hash of the pruned cell (invariant to dead parts and isomorphic relabeling)."""
        return _fingerprint(self)

    def _wl_hash(self) -> str:
        live = sorted(self.live)
        out = -1  # the implicit output vertex
        labels = {v: ("input" if v == 0 else self.ops[v - 1]) for v in live}
        labels[out] = "output"
        edges = [(j, i) for j, i in self.edges if j in self.live] + [(v, out) for v in self.leaves()]
        ins = {v: [j for j, i in edges if i == v] for v in labels}
        outs = {v: [i for j, i in edges if j == v] for v in labels}
        for _ in range(len(labels)):
            labels = {
                v: _digest(
                    labels[v]
                    + "|" + ",".join(sorted(labels[u] for u in ins[v]))
                    + "|" + ",".join(sorted(labels[u] for u in outs[v]))
                )
                for v in labels
            }
        return _digest(",".join(sorted(labels.values())))

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "edges": [list(e) for e in sorted(self.edges)]}


@lru_cache(maxsize=1 << 16)
def _fingerprint(cell: Cell) -> str:
    # Cells recur constantly during evolution (parents, repeated proposals): hash each distinct one once.
    return cell._wl_hash()


@dataclass(frozen=True)
class Genotype:
    """Three cells, one per stage (each repeated ``CELLS_PER_STAGE`` times in the network)."""

    cells: tuple[Cell, ...]
    residual: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual: expected true or false, got {self.residual!r}")
        if len(self.cells) != NUM_STAGES:
            raise ValueError(f"cells: expected {NUM_STAGES} cells (one per stage), got {len(self.cells)}")
        if len({c.k for c in self.cells}) != 1:
            raise ValueError(f"cells: all cells must have the same k, got {[c.k for c in self.cells]}")
        for n, cell in enumerate(self.cells):
            if not cell.is_valid:
                raise ValueError(f"cells[{n}]: invalid cell, no operator vertex is reachable from the input vertex v0")

    @property
    def k(self) -> int:
        return self.cells[0].k

    @cached_property
    def arch_hash(self) -> str:
        """16 hex digits identifying the built network (see module docstring)."""
        wiring = "" if self.residual else "/plain"
        return _digest("/".join(c.fingerprint() for c in self.cells) + wiring)[:16]

    def pruned(self) -> Genotype:
        return Genotype(tuple(c.pruned() for c in self.cells), self.residual)

    def replace_cell(self, index: int, cell: Cell) -> Genotype:
        cells = list(self.cells)
        cells[index] = cell
        return Genotype(tuple(cells), self.residual)

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "cells": [c.to_dict() for c in self.cells], "residual": self.residual}

    def to_json(self) -> str:
        """Compact, key-sorted JSON (stable text for the same genotype)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(data: Any) -> Genotype:
        """Parse ``{"k": K, "cells": [{"ops": [...], "edges": [[j, i], ...]}, x3], "residual": bool}``.

        ``k`` is optional when every cell lists its ops; ``ops`` is optional when ``k`` is given
        (the fixed default assignment is used). Raises ``ValueError`` naming the offending field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"genotype: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"k", "cells", "residual"}
        if unknown:
            raise ValueError(f"genotype: unknown field(s) {sorted(unknown)}; valid: cells, k, residual")
        residual = data.get("residual", True)
        if not isinstance(residual, bool):
            raise ValueError(f"residual: expected true or false, got {residual!r}")
        k = data.get("k")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
            raise ValueError(f"k: expected an integer >= 2, got {k!r}")
        cells = data.get("cells")
        if not isinstance(cells, list):
            raise ValueError(f"cells: expected a list of {NUM_STAGES} cells, got {type(cells).__name__}")
        if len(cells) != NUM_STAGES:
            raise ValueError(f"cells: expected {NUM_STAGES} cells (one per stage), got {len(cells)}")
        parsed = []
        for n, cell in enumerate(cells):
            where = f"cells[{n}]"
            if not isinstance(cell, dict):
                raise ValueError(f"{where}: expected an object with 'edges' (and 'ops'), got {type(cell).__name__}")
            unknown = set(cell) - {"ops", "edges"}
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; valid: edges, ops")
            ops = cell.get("ops")
            if ops is None:
                if k is None:
                    raise ValueError(f"{where}.ops: missing (give the ops or the top-level k)")
                ops = default_ops(k)
            if not isinstance(ops, list) and not isinstance(ops, tuple):
                raise ValueError(f"{where}.ops: expected a list of operator names, got {type(ops).__name__}")
            if k is not None and len(ops) != k - 1:
                raise ValueError(f"{where}.ops: expected {k - 1} operators (k - 1 for k={k}), got {len(ops)}")
            edges = cell.get("edges")
            if not isinstance(edges, list):
                raise ValueError(f"{where}.edges: expected a list of [j, i] pairs, got {type(edges).__name__}")
            parsed.append(Cell.create(ops, edges, where))
        return Genotype(tuple(parsed), residual)

    @staticmethod
    def from_json(text: str) -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"genotype: malformed JSON ({err})") from None
        return Genotype.from_dict(data)
