"""The search space as an object: seeded sampling and mutation of genotypes.

>>> space = SearchSpace(k=6)
>>> parent = space.sample(seed=0)
>>> child = space.mutate(parent, seed=1)
>>> child.arch_hash != parent.arch_hash
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .genotype import DEFAULT_K, NUM_STAGES, Cell, Genotype, default_ops
from .ops import op_names
from .size import space_size

Seed = int | np.random.Generator | None

#: Mutation kinds: flip (add or remove) one edge of one cell; resample one whole cell; change the
#: operator of one live vertex (only when operators are searched).
MUTATIONS = ("edge", "cell", "op")


def as_rng(seed: Seed) -> np.random.Generator:
    """A numpy Generator from an int seed (deterministic) or an existing Generator (shared state)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass(frozen=True)
class SearchSpace:
    """DCSOD cell space.

    Args:
        k: vertices per cell including the input vertex v0 (see :mod:`search_space.genotype`).
        edge_prob: Bernoulli probability of each optional edge when sampling.
        search_ops: if False (default, as in the paper) operator vertices keep the fixed assignment
            :func:`default_ops`; if True operators are drawn uniformly and mutated too.
        p_edge_mutation: probability that a mutation flips one edge; otherwise it resamples a cell
            (or, with ``search_ops``, changes one operator with probability ``p_op_mutation``).
        residual: the cell wiring of every sampled network (``Genotype.residual``; see
            :mod:`search_space.network`). Mutations keep the parent's wiring.
    """

    k: int = DEFAULT_K
    edge_prob: float = 0.5
    search_ops: bool = False
    p_edge_mutation: float = 0.7
    p_op_mutation: float = 0.15
    residual: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k: expected an integer >= 2, got {self.k!r}")
        if not 0.0 < self.edge_prob <= 1.0:
            raise ValueError(f"edge_prob: expected a probability in (0, 1], got {self.edge_prob!r}")
        if not 0.0 <= self.p_edge_mutation <= 1.0 or not 0.0 <= self.p_op_mutation <= 1.0:
            raise ValueError("p_edge_mutation, p_op_mutation: expected probabilities in [0, 1]")
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual: expected true or false, got {self.residual!r}")

    @property
    def edge_pairs(self) -> tuple[tuple[int, int], ...]:
        """All optional edges ``(j, i)``, ``j < i``, row-major."""
        return tuple((j, i) for j in range(self.k) for i in range(j + 1, self.k))

    def size(self) -> dict:
        return space_size(self.k, self.search_ops)

    # --- sampling ------------------------------------------------------------------------------
    def sample_cell(self, seed: Seed = None) -> Cell:
        """A valid pruned cell: edges i.i.d. Bernoulli(edge_prob); invalid draws are redrawn."""
        rng = as_rng(seed)
        names = op_names()
        while True:
            if self.search_ops:
                ops = tuple(names[n] for n in rng.integers(len(names), size=self.k - 1))
            else:
                ops = default_ops(self.k)
            keep = rng.random(len(self.edge_pairs)) < self.edge_prob
            cell = Cell(ops, frozenset(e for e, on in zip(self.edge_pairs, keep) if on))
            if cell.is_valid:
                return cell.pruned()

    def sample(self, seed: Seed = None) -> Genotype:
        rng = as_rng(seed)
        return Genotype(tuple(self.sample_cell(rng) for _ in range(NUM_STAGES)), self.residual)

    def sample_many(self, n: int, seed: Seed = None, unique: bool = True) -> list[Genotype]:
        """``n`` genotypes from one seeded stream; with ``unique`` no two share an ``arch_hash``."""
        if n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n}")
        rng = as_rng(seed)
        if not unique:
            return [self.sample(rng) for _ in range(n)]
        available = self.size()["distinct_networks"]
        if n > available:
            raise ValueError(f"n: cannot draw {n} distinct genotypes, the space holds at most {available}")
        out: dict[str, Genotype] = {}
        attempts = 0
        while len(out) < n:
            g = self.sample(rng)
            out.setdefault(g.arch_hash, g)
            attempts += 1
            if attempts > 1000 * max(n, 1):
                raise ValueError(f"n: drew only {len(out)} distinct genotypes in {attempts} draws")
        return list(out.values())

    # --- mutation ------------------------------------------------------------------------------
    def mutate(self, genotype: Genotype, seed: Seed = None, kind: str | None = None) -> Genotype:
        """A valid pruned child whose ``arch_hash`` differs from the parent's.

        ``kind`` forces one of :data:`MUTATIONS`; by default it is drawn with the configured
        probabilities. An edge flip that would leave the network unchanged (e.g. an edge out of a
        dead vertex) or invalidate the cell is skipped for another edge.
        """
        if genotype.k != self.k:
            raise ValueError(f"genotype: k={genotype.k} does not match the search space's k={self.k}")
        rng = as_rng(seed)
        parent = genotype.pruned()
        if kind is None:
            kind = self._draw_kind(rng)
        if kind not in MUTATIONS or (kind == "op" and not self.search_ops):
            valid = MUTATIONS if self.search_ops else MUTATIONS[:2]
            raise ValueError(f"kind: unknown mutation {kind!r}; valid: {', '.join(valid)}")
        if kind == "edge":
            child = self._flip_edge(parent, rng)
        elif kind == "op":
            child = self._change_op(parent, rng)
        else:
            child = None
        if child is None:  # "cell", or no effective edge/op change exists (tiny spaces)
            child = self._resample_cell(parent, rng)
        return child

    def _draw_kind(self, rng: np.random.Generator) -> str:
        u = rng.random()
        if u < self.p_edge_mutation:
            return "edge"
        if self.search_ops and u < self.p_edge_mutation + self.p_op_mutation:
            return "op"
        return "cell"

    def _flip_edge(self, parent: Genotype, rng: np.random.Generator) -> Genotype | None:
        for c in rng.permutation(NUM_STAGES):
            cell = parent.cells[c]
            for e in rng.permutation(len(self.edge_pairs)):
                edges = cell.edges ^ {self.edge_pairs[e]}
                candidate = Cell(cell.ops, frozenset(edges))
                if candidate.is_valid and candidate.fingerprint() != cell.fingerprint():
                    return parent.replace_cell(int(c), candidate.pruned())
        return None

    def _change_op(self, parent: Genotype, rng: np.random.Generator) -> Genotype | None:
        names = op_names()
        for c in rng.permutation(NUM_STAGES):
            cell = parent.cells[c]
            for v in rng.permutation(sorted(cell.live - {0})):
                for n in rng.permutation(len(names)):
                    ops = list(cell.ops)
                    ops[v - 1] = names[n]
                    candidate = Cell(tuple(ops), cell.edges)
                    if candidate.fingerprint() != cell.fingerprint():
                        return parent.replace_cell(int(c), candidate)
        return None

    def _resample_cell(self, parent: Genotype, rng: np.random.Generator) -> Genotype:
        if self.size()["distinct_cells"] < 2:
            raise ValueError(f"k={self.k}: the space holds a single network, nothing to mutate to")
        c = int(rng.integers(NUM_STAGES))
        old = parent.cells[c].fingerprint()
        while True:
            cell = self.sample_cell(rng)
            if cell.fingerprint() != old:
                return parent.replace_cell(c, cell)

