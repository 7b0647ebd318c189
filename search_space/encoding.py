"""Fixed-length float encoding of a genotype, the input of the predictors.

Per cell, in stage order, of the *pruned* cell: the upper-triangular adjacency (``k(k-1)/2`` values
in {0, 1}, row-major over ``j < i``), then one one-hot of length ``|OPS|`` per operator vertex
``v1 .. v_{k-1}`` (all zeros for a dead vertex). Length ``3·(k(k-1)/2 + (k-1)·|OPS|)``; 120 for k = 6.
Genotypes that differ only in dead edges or dead vertices' operators encode identically.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .genotype import NUM_STAGES, Cell, Genotype
from .ops import op_names


def encoding_length(k: int) -> int:
    return NUM_STAGES * (k * (k - 1) // 2 + (k - 1) * len(op_names()))


def _encode_cell(cell: Cell) -> np.ndarray:
    k, names = cell.k, op_names()
    pruned = cell.pruned()
    adjacency = [1.0 if (j, i) in pruned.edges else 0.0 for j in range(k) for i in range(j + 1, k)]
    onehots = np.zeros((k - 1, len(names)), dtype=np.float32)
    for v in pruned.live - {0}:
        onehots[v - 1, names.index(cell.ops[v - 1])] = 1.0
    return np.concatenate([np.asarray(adjacency, dtype=np.float32), onehots.ravel()])


def encode(genotype: Genotype) -> np.ndarray:
    """Shape ``(encoding_length(k),)``, float32."""
    return np.concatenate([_encode_cell(c) for c in genotype.cells])


def encode_many(genotypes: Sequence[Genotype]) -> np.ndarray:
    """Shape ``(len(genotypes), encoding_length(k))``, float32; all genotypes must share ``k``."""
    if not genotypes:
        raise ValueError("genotypes: expected at least one genotype")
    ks = {g.k for g in genotypes}
    if len(ks) != 1:
        raise ValueError(f"genotypes: all must share k, got {sorted(ks)}")
    return np.stack([encode(g) for g in genotypes])
