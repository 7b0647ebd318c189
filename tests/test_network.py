import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import OPS, SearchSpace, build_network, count_flops, count_params, describe
from search_space.network import CellModule

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("in_channels", [4, 12])
def test_every_registered_op_keeps_spatial_size(name, in_channels):
    op = OPS[name](in_channels, 4)
    y = op(torch.randn(2, in_channels, 5, 7))
    assert y.shape == (2, 4, 5, 7)
    assert (y >= 0).all(), "ops end with ReLU"


@pytest.mark.parametrize("in_channels, size", [(1, 8), (3, 32), (3, 11), (1, 9)])
@given(seed=SEEDS, search_ops=st.booleans())
@settings(max_examples=6, deadline=None)
def test_sampled_networks_forward_and_backward(in_channels, size, seed, search_ops):
    g = SearchSpace(k=6, search_ops=search_ops).sample(seed)
    net = build_network(g, num_classes=7, in_channels=in_channels, width=8)
    x = torch.randn(3, in_channels, size, size)
    logits, features = net(x, return_features=True)
    assert logits.shape == (3, 7)
    assert features.shape == (3, net.feature_dim) == (3, 32)
    assert torch.isfinite(logits).all()
    assert torch.equal(net(x), logits) or torch.allclose(net(x), logits, atol=1e-5)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters()), "every parameter is used"


def test_default_width_network():
    g = SearchSpace().sample(0)
    net = build_network(g)
    logits = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert net.feature_dim == 128


def test_cell_structure_follows_pruned_dag():
    from search_space import Cell, default_ops

    cell = Cell.create(default_ops(6), [(0, 1), (0, 2), (1, 3), (2, 3), (4, 5)])  # v4, v5 dead
    module = CellModule(cell, channels=4)
    assert module.order == [1, 2, 3]
    assert module.leaves == (3,)
    assert set(module.vertex_ops) == {"1", "2", "3"}
    first_conv = module.vertex_ops["3"][0]
    assert first_conv.in_channels == 8, "v3 convolves the concatenation of v1 and v2"
    assert module(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)


def test_bad_input_shape_is_a_clear_error():
    net = build_network(SearchSpace().sample(0), in_channels=3, width=4)
    with pytest.raises(ValueError, match="expected shape"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="H, W >= 8"):
        net(torch.randn(1, 3, 7, 7))


def test_params_and_flops():
    g = SearchSpace().sample(3)
    small, large = build_network(g, width=8), build_network(g, width=16)
    assert 0 < count_params(small) < count_params(large)
    f32 = count_flops(small, (1, 3, 32, 32))
    assert f32 > 0
    assert count_flops(small, (2, 3, 32, 32)) == 2 * f32
    assert count_flops(small, (1, 3, 16, 16)) < f32
    assert small.training, "count_flops restores the training mode"
    d = describe(g, width=8)
    assert d["arch_hash"] == g.arch_hash and d["params"] == count_params(small) and d["flops"] == f32


def test_denser_cell_has_more_params():
    from search_space import Cell, Genotype, default_ops

    sparse = Cell.create(default_ops(6), [(0, 1)])
    dense = Cell.create(default_ops(6), [(j, i) for j in range(6) for i in range(j + 1, 6)])
    p_sparse = count_params(build_network(Genotype((sparse,) * 3), width=8))
    p_dense = count_params(build_network(Genotype((dense,) * 3), width=8))
    assert p_dense > p_sparse


def test_wiring_option_changes_the_cell_function_not_its_parameters():
    """``residual=False`` is the thesis's eq. 4.6 wiring: the cell output is the projected leaf concatenation
    alone; ``residual=True`` adds the cell's input. Same parameters either way."""
    import torch

    from search_space import Genotype, SearchSpace, build_network

    residual = SearchSpace(residual=True).sample(3)
    plain = Genotype(residual.cells, residual=False)
    assert plain.arch_hash != residual.arch_hash and Genotype.from_json(plain.to_json()) == plain
    a, b = build_network(residual, 4, 3, 8), build_network(plain, 4, 3, 8)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    h = torch.randn(2, 8, 16, 16)
    for cell, add_input in ((a.body[3], True), (b.body[3], False)):
        seen = []
        handle = cell.project.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o))
        out = cell(h)
        handle.remove()
        expected = torch.relu(h + seen[0]) if add_input else torch.relu(seen[0])
        assert torch.allclose(out, expected)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))
