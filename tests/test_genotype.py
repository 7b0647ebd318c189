import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import Cell, Genotype, SearchSpace, default_ops, op_names

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def chain_cell(k=6):
    """v0 -> v1 -> ... -> v_{k-1}: every vertex live, one leaf."""
    return Cell.create(default_ops(k), [(i, i + 1) for i in range(k - 1)])


@given(seed=SEEDS, search_ops=st.booleans(), k=st.integers(2, 8))
@settings(max_examples=60, deadline=None)
def test_json_round_trip(seed, search_ops, k):
    g = SearchSpace(k=k, search_ops=search_ops).sample(seed)
    back = Genotype.from_json(g.to_json())
    assert back == g
    assert back.arch_hash == g.arch_hash
    assert back.to_json() == g.to_json()
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_ops_default_from_k():
    g = Genotype.from_json('{"k": 6, "cells": [{"edges": [[0, 1]]}, {"edges": [[0, 2]]}, {"edges": [[0, 5]]}]}')
    assert all(c.ops == default_ops(6) for c in g.cells)
    assert set(default_ops(6)) == set(op_names())  # k = 6: every operator kind appears once


def test_liveness_and_pruning():
    # v1 has no input (dead) but feeds v3; v0 -> v2 -> v3; v4, v5 untouched (dead).
    cell = Cell.create(default_ops(6), [(1, 3), (0, 2), (2, 3), (4, 5)])
    assert cell.live == {0, 2, 3}
    assert cell.pruned().edges == {(0, 2), (2, 3)}
    assert cell.leaves() == (3,)
    assert cell.predecessors(3) == (2,)


@given(seed=SEEDS, extra=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=10))
@settings(max_examples=80, deadline=None)
def test_hash_invariant_under_dead_edges(seed, extra):
    g = SearchSpace(k=6).sample(seed)
    cells = []
    for cell in g.cells:
        dead = set(range(6)) - cell.live
        # edges out of dead vertices (into anything later) leave the network unchanged
        noise = {(j, i) for j, i in extra if j in dead and j < i}
        cells.append(Cell(cell.ops, cell.edges | noise))
    noisy = Genotype(tuple(cells))
    assert noisy.arch_hash == g.arch_hash
    assert noisy.pruned() == g.pruned()


def test_hash_ignores_dead_vertex_ops():
    a = Cell.create(("conv1x1", "conv3x3", "conv5x5"), [(0, 1)])
    b = Cell.create(("conv1x1", "dwconv5x5", "dwconv3x3"), [(0, 1), (2, 3)])  # v2, v3 dead
    assert Genotype((a, a, a)).arch_hash == Genotype((b, b, b)).arch_hash


def test_hash_invariant_under_isomorphic_relabeling():
    # Two branches from v0, [conv3x3 -> conv1x1] and [conv5x5], under two vertex numberings.
    a = Cell.create(("conv3x3", "conv1x1", "conv5x5"), [(0, 1), (1, 2), (0, 3)])
    b = Cell.create(("conv5x5", "conv3x3", "conv1x1"), [(0, 1), (0, 2), (2, 3)])
    assert Genotype((a,) * 3).arch_hash == Genotype((b,) * 3).arch_hash
    # Same operators, different wiring: a different network.
    c = Cell.create(("conv3x3", "conv1x1", "conv5x5"), [(0, 1), (0, 2), (0, 3)])
    assert Genotype((a,) * 3).arch_hash != Genotype((c,) * 3).arch_hash


def test_hash_depends_on_stage_order_and_edges():
    x = chain_cell()
    y = Cell.create(default_ops(6), [(0, 1)])
    assert Genotype((x, y, y)).arch_hash != Genotype((y, x, y)).arch_hash
    assert Genotype((x, x, x)).arch_hash != Genotype((y, y, y)).arch_hash


CELL_OK = {"ops": list(default_ops(6)), "edges": [[0, 1]]}


@pytest.mark.parametrize(
    "data, field",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "genotype: expected a JSON object"),
        (json.dumps({"cells": [CELL_OK, CELL_OK]}), "cells: expected 3 cells"),
        (json.dumps({"cells": [CELL_OK] * 4}), "cells: expected 3 cells"),
        (json.dumps({"k": 6}), "cells: expected a list"),
        (json.dumps({"k": 6, "cells": [CELL_OK] * 3, "extra": 1}), "unknown field"),
        (json.dumps({"cells": [CELL_OK, {"ops": ["conv7x7"] * 5, "edges": [[0, 1]]}, CELL_OK]}),
         "cells[1].ops[0]: unknown operator 'conv7x7'"),
        (json.dumps({"cells": [CELL_OK, CELL_OK, {"ops": list(default_ops(6)), "edges": [[3, 2]]}]}),
         "cells[2].edges[0]: edge [3, 2] must go from a lower to a higher vertex"),
        (json.dumps({"cells": [CELL_OK, CELL_OK, {"ops": list(default_ops(6)), "edges": [[2, 2]]}]}),
         "cells[2].edges[0]: edge [2, 2]"),
        (json.dumps({"cells": [{"ops": list(default_ops(6)), "edges": [[0, 1], [0, 6]]}, CELL_OK, CELL_OK]}),
         "cells[0].edges[1]: vertex 6 out of range"),
        (json.dumps({"cells": [{"ops": list(default_ops(6)), "edges": [[-1, 2]]}, CELL_OK, CELL_OK]}),
         "cells[0].edges[0]: vertex -1 out of range"),
        (json.dumps({"cells": [{"ops": list(default_ops(6)), "edges": [[0, 1, 2]]}, CELL_OK, CELL_OK]}),
         "cells[0].edges[0]: an edge is a pair"),
        (json.dumps({"cells": [{"ops": list(default_ops(6)), "edges": [[0, 1], [0, 1]]}, CELL_OK, CELL_OK]}),
         "cells[0].edges[1]: duplicate edge"),
        (json.dumps({"cells": [CELL_OK, {"ops": list(default_ops(6)), "edges": [[1, 2]]}, CELL_OK]}),
         "cells[1]: invalid cell"),
        (json.dumps({"k": 5, "cells": [CELL_OK] * 3}), "cells[0].ops: expected 4 operators"),
        (json.dumps({"k": 1, "cells": [CELL_OK] * 3}), "k: expected an integer >= 2"),
        (json.dumps({"cells": [{"edges": [[0, 1]]}] * 3}), "cells[0].ops: missing"),
        (json.dumps({"cells": [CELL_OK, CELL_OK, {"ops": ["conv1x1"], "edges": [[0, 1]]}]}), "same k"),
    ],
)
def test_bad_input_names_the_field(data, field):
    with pytest.raises(ValueError) as err:
        Genotype.from_json(data)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_wiring_is_part_of_json_and_hash_and_old_json_means_residual():
    from search_space import SearchSpace

    space = SearchSpace(residual=False)
    g = space.sample(0)
    assert g.residual is False and '"residual":false' in g.to_json()
    assert Genotype.from_json(g.to_json()) == g
    legacy = {k: v for k, v in g.to_dict().items() if k != "residual"}  # written before the option existed
    old = Genotype.from_dict(legacy)
    assert old.residual is True and old.arch_hash != g.arch_hash
    assert old.arch_hash == Genotype(g.cells).arch_hash  # residual genotypes keep their pre-option hashes
    assert all(space.mutate(g, seed=s).residual is False for s in range(5))
    with pytest.raises(ValueError, match="residual"):
        Genotype.from_dict({**g.to_dict(), "residual": "no"})
