import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import (
    MUTATIONS,
    Cell,
    Genotype,
    SearchSpace,
    default_ops,
    encode,
    encode_many,
    encoding_length,
    op_names,
    space_size,
)
from search_space.size import pruned_cells

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
SPACES = [SearchSpace(k=6), SearchSpace(k=4), SearchSpace(k=8), SearchSpace(k=6, search_ops=True),
          SearchSpace(k=6, edge_prob=0.2)]


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_same_seed_same_samples(space):
    a = [g.to_json() for g in space.sample_many(20, seed=7)]
    b = [g.to_json() for g in space.sample_many(20, seed=7)]
    c = [g.to_json() for g in space.sample_many(20, seed=8)]
    assert a == b
    assert a != c


def test_same_seed_same_samples_across_processes():
    code = "from search_space import SearchSpace; print([g.arch_hash for g in SearchSpace().sample_many(5, seed=3)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([g.arch_hash for g in SearchSpace().sample_many(5, seed=3)])


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_samples_are_valid_pruned_and_unique(space):
    gs = space.sample_many(50, seed=1)
    assert len({g.arch_hash for g in gs}) == 50
    for g in gs:
        assert g.k == space.k
        assert g == g.pruned()
        assert all(c.is_valid for c in g.cells)
        if not space.search_ops:
            assert all(c.ops == default_ops(space.k) for c in g.cells)


def test_edge_probability_is_respected():
    space = SearchSpace(k=6, edge_prob=0.3)
    # Count raw Bernoulli draws through the v0 out-edges of live cells: unaffected by pruning except
    # for the rejection of cells with no v0 edge, so compare against the conditional expectation.
    gs = space.sample_many(400, seed=0, unique=False)
    v0_edges = np.mean([sum(1 for j, _ in c.edges if j == 0) for g in gs for c in g.cells])
    expected = 5 * 0.3 / (1 - 0.7**5)
    assert abs(v0_edges - expected) < 0.1


def test_too_many_unique_samples_is_an_error():
    with pytest.raises(ValueError, match="at most 1"):
        SearchSpace(k=2).sample_many(2, seed=0)


@pytest.mark.parametrize("space", SPACES, ids=repr)
@given(seed=SEEDS)
@settings(max_examples=25, deadline=None)
def test_mutation_is_valid_and_changes_the_network(space, seed):
    parent = space.sample(seed)
    kinds = MUTATIONS if space.search_ops else MUTATIONS[:2]
    for kind in (None, *kinds):
        child = space.mutate(parent, seed=seed + 1, kind=kind)
        assert child.k == parent.k
        assert all(c.is_valid for c in child.cells)
        assert child.arch_hash != parent.arch_hash
        assert Genotype.from_json(child.to_json()) == child
        changed = [i for i in range(3) if child.cells[i] != parent.cells[i]]
        assert len(changed) == 1, "a mutation changes exactly one cell"
        if kind == "edge":
            (i,) = changed
            assert len(child.cells[i].edges ^ parent.cells[i].edges) >= 1
            assert child.cells[i].ops == parent.cells[i].ops
        if kind == "op":
            (i,) = changed
            assert child.cells[i].edges == parent.cells[i].edges


def test_edge_mutation_flips_exactly_one_edge_before_pruning():
    space = SearchSpace(k=6)
    chain = Cell.create(default_ops(6), [(i, i + 1) for i in range(5)])  # all vertices live: no pruning
    parent = Genotype((chain,) * 3)
    for seed in range(20):
        child = space.mutate(parent, seed=seed, kind="edge")
        (i,) = [i for i in range(3) if child.cells[i] != chain]
        diff = child.cells[i].edges ^ chain.edges
        # an added edge keeps everything live; a removed chain edge may prune the rest of the chain
        assert len(diff - chain.edges) <= 1


def test_mutation_is_deterministic():
    space = SearchSpace()
    parent = space.sample(0)
    assert space.mutate(parent, seed=5).to_json() == space.mutate(parent, seed=5).to_json()


def test_mutation_errors():
    with pytest.raises(ValueError, match="kind: unknown mutation 'op'"):
        SearchSpace().mutate(SearchSpace().sample(0), kind="op")
    with pytest.raises(ValueError, match="does not match"):
        SearchSpace(k=5).mutate(SearchSpace(k=6).sample(0))


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 8, 10])
def test_size_formula(k):
    size = space_size(k)
    e = k * (k - 1) // 2
    assert size["optional_edges_per_cell"] == e
    assert size["edge_configurations"] == 2 ** (3 * k * (k - 1) // 2)  # the paper's 2^(3K(K-1)/2)
    assert size["valid_configurations"] == (2**e - 2 ** (e - (k - 1))) ** 3
    assert size["distinct_networks"] == size["distinct_cells"] ** 3
    assert size["distinct_networks_exact"] == (k - 1 <= len(op_names()))


@pytest.mark.parametrize("k, search_ops", [(2, False), (3, False), (4, False), (5, False), (3, True)])
def test_distinct_cells_match_enumeration(k, search_ops):
    """Enumerate every edge configuration (and op assignment), count distinct valid cell hashes."""
    pairs = [(j, i) for j in range(k) for i in range(j + 1, k)]
    assignments = itertools.product(op_names(), repeat=k - 1) if search_ops else [default_ops(k)]
    seen, valid = set(), 0
    for ops in assignments:
        for bits in itertools.product((0, 1), repeat=len(pairs)):
            cell = Cell(tuple(ops), frozenset(p for p, b in zip(pairs, bits) if b))
            if cell.is_valid:
                valid += 1
                seen.add(cell.fingerprint())
    size = space_size(k, search_ops)
    assert valid ** 3 == size["valid_configurations"]
    if size["distinct_networks_exact"]:
        assert len(seen) == size["distinct_cells"]
    else:
        assert len(seen) < size["distinct_cells"]  # isomorphic cells share a hash


def test_pruned_cells_small_cases():
    assert pruned_cells(2) == 1  # only v0 -> v1
    assert pruned_cells(3) == 2 * 1 + 3  # one live op (2 ways) or both (v2 gets 1 of 3 non-empty sets)


@given(seed=SEEDS)
@settings(max_examples=30, deadline=None)
def test_encoding_shape_and_invariance(seed):
    space = SearchSpace(k=6, search_ops=True)
    g = space.sample(seed)
    x = encode(g)
    assert x.shape == (encoding_length(6),) == (120,)
    assert x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0}
    # dead edges do not change the encoding
    noisy = Genotype(tuple(Cell(c.ops, c.edges | {(j, 5) for j in set(range(5)) - c.live}) for c in g.cells))
    np.testing.assert_array_equal(encode(noisy), x)
    # one one-hot per live operator vertex
    e = 15
    for c, cell in enumerate(g.cells):
        block = x[c * 40 + e:(c + 1) * 40].reshape(5, 5)
        assert block.sum() == len(cell.live) - 1


def test_encode_many():
    gs = SearchSpace().sample_many(7, seed=0)
    X = encode_many(gs)
    assert X.shape == (7, 120)
    assert len({row.tobytes() for row in X}) == 7
    with pytest.raises(ValueError):
        encode_many([])
    with pytest.raises(ValueError, match="share k"):
        encode_many([SearchSpace(k=5).sample(0), SearchSpace(k=6).sample(0)])


def test_space_arguments_are_validated():
    for bad in (dict(k=1), dict(edge_prob=0.0), dict(edge_prob=1.5), dict(p_edge_mutation=2.0)):
        with pytest.raises(ValueError):
            SearchSpace(**bad)
    assert json.dumps(SearchSpace().size())  # JSON-serialisable
