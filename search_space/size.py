"""How large the space is: the paper's edge-configuration count and the distinct networks after pruning."""
from __future__ import annotations

from math import comb, prod

from .genotype import NUM_STAGES, Cell, Genotype, default_ops
from .ops import OPS, op_names


def pruned_cells(k: int, n_op_choices: int = 1) -> int:
    """Number of distinct pruned (valid) labelled cells with ``k`` vertices.

    A pruned cell is a set ``R`` of live vertices containing v0 and at least one operator vertex,
    with every live operator vertex having at least one in-edge from an earlier live vertex and no
    edge touching a dead vertex. For ``|R| = r`` the m-th live vertex (0-based) chooses any non-empty
    subset of its m live predecessors: ``prod_{m=1}^{r-1} (2^m - 1)`` edge sets, times
    ``n_op_choices^(r-1)`` operator choices when operators are searched (dead vertices' operators do
    not matter).
    """
    return sum(
        comb(k - 1, r - 1) * prod(2**m - 1 for m in range(1, r)) * n_op_choices ** (r - 1)
        for r in range(2, k + 1)
    )


def space_size(k: int, search_ops: bool = False) -> dict:
    """Counts for a space with ``k`` vertices per cell (v0 included) and three independent cells.

    ``edge_configurations`` is the paper's ``2^(3·E)``, ``E = k(k-1)/2`` optional edges per cell.
    ``valid_configurations`` drops configurations with an invalid cell (v0 without out-edges) and,
    with ``search_ops``, multiplies by the operator assignments.
    ``distinct_networks`` counts pruned genotypes; it is exact when no two operator vertices can share
    an operator (fixed ops with ``k - 1 <= |OPS|``), otherwise an upper bound because isomorphic cells
    (equal ``arch_hash``) are counted separately.
    """
    if k < 2:
        raise ValueError(f"k: expected an integer >= 2, got {k}")
    n_ops = len(op_names())
    e = k * (k - 1) // 2
    op_factor = n_ops ** (k - 1) if search_ops else 1
    valid_cell = (2**e - 2 ** (e - (k - 1))) * op_factor
    cells = pruned_cells(k, n_ops if search_ops else 1)
    exact = not search_ops and len(set(default_ops(k))) == k - 1
    return {
        "k": k,
        "operator_vertices": k - 1,
        "search_ops": search_ops,
        "optional_edges_per_cell": e,
        "edge_configurations": 2 ** (NUM_STAGES * e),
        "edge_configurations_log2": NUM_STAGES * e,
        "valid_configurations": valid_cell**NUM_STAGES,
        "distinct_cells": cells,
        "distinct_networks": cells**NUM_STAGES,
        "distinct_networks_exact": exact,
    }


def largest_network_params(k: int, width: int, search_ops: bool = False, residual: bool = True,
                           num_classes: int = 10, in_channels: int = 3) -> int:
    """Parameters of the largest network the space holds at ``width``: every cell fully connected, and with
    ``search_ops`` every vertex the operator with the most parameters. Built on PyTorch's meta device, so
    no memory is allocated even for a space whose networks could never be trained."""
    import torch

    from .network import build_network, count_params

    ops = default_ops(k)
    if search_ops:
        with torch.device("meta"):
            biggest = max(op_names(), key=lambda name: count_params(OPS[name](width, width)))
        ops = (biggest,) * (k - 1)
    cell = Cell.create(ops, [(j, i) for i in range(1, k) for j in range(i)])
    with torch.device("meta"):
        model = build_network(Genotype((cell,) * NUM_STAGES, residual), num_classes, in_channels, width)
    return count_params(model)
