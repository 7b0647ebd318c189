"""Loss landscapes (trainables.image.loss_landscape): a known quadratic answer, filter normalisation, exact weight
restoration, and a real DCSOD network end to end with the plot."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from search_space import SearchSpace, build_network
from trainables.image.loss_landscape import (
    center_loss,
    fixed_teacher_probs,
    landscape,
    loss_surface,
    plot_landscapes,
    random_direction,
    ring_mask,
    sharpness,
    training_loss_fn,
)
from trainables.image.losses import make_objective


class Quadratic(nn.Module):
    """Loss ``0.5 * sum(c * (W - W0)**2)``, exactly quadratic in the parameter W (4x3); a bias that does not
    enter the loss (a 1-D parameter); a buffer."""

    def __init__(self, c: torch.Tensor, w0: torch.Tensor, offset: torch.Tensor):
        super().__init__()
        self.W = nn.Parameter((w0 + offset).double())
        self.bias = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.register_buffer("w0", w0.double())
        self.c = c.double()

    def loss(self) -> float:
        return float(0.5 * (self.c * (self.W.detach() - self.w0) ** 2).sum())


def _quadratic(scale: float = 1.0):
    g = torch.Generator().manual_seed(1)
    c = scale * (torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.5)
    w0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    offset = torch.randn(4, 3, generator=g, dtype=torch.float64)
    offset[0, 0] = offset[2, 1] = 0.0  # the trained point is the minimum along both directions
    model = Quadratic(c, w0, offset)
    unit = [torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
    d1 = [t.clone() for t in unit]
    d2 = [t.clone() for t in unit]
    d1[0][0, 0] = 1.0
    d2[0][2, 1] = 1.0
    const = float(0.5 * (c * offset ** 2).sum())
    return model, (d1, d2), float(c[0, 0]), float(c[2, 1]), const


def test_known_quadratic_surface_and_sharpness():
    model, dirs, c1, c2, const = _quadratic()
    grid = np.linspace(-1, 1, 21)
    surface = loss_surface(model, lambda m: m.loss(), dirs, grid)
    assert surface.shape == (21, 21)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    np.testing.assert_allclose(surface, 0.5 * c1 * a ** 2 + 0.5 * c2 * b ** 2 + const, rtol=0, atol=1e-5)
    assert center_loss(surface, grid) == pytest.approx(const, abs=1e-12)

    # 1-D variant
    line = loss_surface(model, lambda m: m.loss(), dirs[:1], grid)
    assert line.shape == (21,)
    np.testing.assert_allclose(line, 0.5 * c1 * grid ** 2 + const, rtol=0, atol=1e-5)
    assert sharpness(line, grid, 0.5) == pytest.approx(0.5 * c1 * 0.25, abs=1e-9)

    r = 0.5
    h = grid[1] - grid[0]
    s = sharpness(surface, grid, r)
    mask = ring_mask(grid, r)
    rho = np.sqrt(a ** 2 + b ** 2)[mask]
    assert mask.sum() >= 8 and np.all(np.abs(rho - r) <= h / 2 + 1e-12) and not mask[10, 10]
    # definition: mean over the ring minus the centre
    assert s == pytest.approx(float(np.mean(surface[mask]) - surface[10, 10]), abs=1e-12)
    # analytic: on the swap-symmetric ring mean(a^2) = mean(b^2) = mean(rho^2)/2, so the mean rise is
    # (c1 + c2)/4 * mean(rho^2), with rho^2 in [(r - h/2)^2, (r + h/2)^2]; the continuous value is (c1+c2)/4 r^2
    assert s == pytest.approx(0.25 * (c1 + c2) * float(np.mean(rho ** 2)), abs=1e-5)
    assert 0.25 * (c1 + c2) * (r - h / 2) ** 2 - 1e-5 <= s <= 0.25 * (c1 + c2) * (r + h / 2) ** 2 + 1e-5
    tolerance = 0.25 * (c1 + c2) * ((r + h / 2) ** 2 - r ** 2)
    assert abs(s - 0.25 * (c1 + c2) * r ** 2) <= tolerance

    # doubling the curvature doubles the sharpness
    model2, dirs2, c1b, c2b, _ = _quadratic(scale=2.0)
    assert (c1b, c2b) == pytest.approx((2 * c1, 2 * c2))
    s2 = sharpness(loss_surface(model2, lambda m: m.loss(), dirs2, grid), grid, r)
    assert s2 == pytest.approx(2 * s, rel=1e-9)


def test_sharpness_argument_checks():
    grid = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match="radius"):
        sharpness(np.zeros((5, 5)), grid, 1.5)
    with pytest.raises(ValueError, match="coordinate 0"):
        sharpness(np.zeros((4, 4)), np.linspace(-1, 1, 4), 0.5)
    with pytest.raises(ValueError, match="surface"):
        sharpness(np.zeros((5, 4)), grid, 0.5)
    model, dirs, *_ = _quadratic()
    with pytest.raises(ValueError, match="directions"):
        loss_surface(model, lambda m: m.loss(), [dirs[0][:1]], grid)
    with pytest.raises(ValueError, match="steps"):
        landscape(model, lambda m: m.loss(), steps=4)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 3))


def test_filter_normalisation_and_seeding():
    model = _small_net()
    d = random_direction(model, torch.Generator().manual_seed(3))
    params = list(model.parameters())
    assert len(d) == len(params)
    assert sum(1 for p in params if p.dim() > 1) == 2 and sum(1 for p in params if p.dim() == 1) == 4
    for t, p in zip(d, params):
        assert t.shape == p.shape and t.dtype == p.dtype
        if p.dim() <= 1:
            assert torch.count_nonzero(t) == 0
        else:
            torch.testing.assert_close(t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                                       rtol=1e-5, atol=1e-6)
            assert not torch.allclose(t, p.detach())  # random, not the weights themselves
    same = random_direction(model, 3)
    other = random_direction(model, 4)
    assert all(torch.equal(x, y) for x, y in zip(d, same))
    assert not all(torch.equal(x, y) for x, y in zip(d, other))
    # one generator gives two different directions
    g = torch.Generator().manual_seed(3)
    first, second = random_direction(model, g), random_direction(model, g)
    assert all(torch.equal(x, y) for x, y in zip(first, d))
    assert not torch.equal(first[0], second[0])
    # a zero filter gets a zero direction
    with torch.no_grad():
        model[0].weight[1].zero_()
    z = random_direction(model, 3)
    assert torch.count_nonzero(z[0][1]) == 0 and torch.isfinite(z[0]).all()


def test_weights_restored_exactly_also_on_error():
    model = _small_net()
    x, y = torch.randn(16, 2, 4, 4), torch.randint(0, 3, (16,))
    model.train()
    model(x)  # non-trivial running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = training_loss_fn(model, x, y)
    dirs = [random_direction(model, s) for s in (0, 1)]
    surface = loss_surface(model, loss_fn, dirs, np.linspace(-1, 1, 3))
    assert np.all(np.isfinite(surface)) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    calls = []

    def failing(m):
        calls.append(1)
        assert not m.training  # evaluated in eval mode
        if len(calls) == 4:
            raise RuntimeError("boom")
        m.train()
        return loss_fn(m)  # a train-mode forward would update the BN running statistics: restored too

    with pytest.raises(RuntimeError, match="boom"):
        loss_surface(model, failing, dirs, np.linspace(-1, 1, 3))
    assert len(calls) == 4 and model.training
    model[1].eval()  # a frozen BN inside a training model keeps its own mode
    loss_surface(model, loss_fn, dirs[:1], np.linspace(-1, 1, 3))
    assert model.training and not model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_training_loss_fn_matches_cross_entropy():
    model = _small_net().eval()
    x, y = torch.randn(37, 2, 4, 4), torch.randint(0, 3, (37,))
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x), y))
    assert training_loss_fn(model, x, y, batch_size=8)() == pytest.approx(expected, rel=1e-5)
    assert training_loss_fn(model, x, y, objective="ce", batch_size=10)(model) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="teacher or outliers"):
        training_loss_fn(model, x, y, objective="distill")


def test_distillation_landscape_loss_is_eq_4_11_on_the_fixed_sets():
    """Figure 4.5's distillation surface: the closure is the outlier-distillation objective over fixed ID images
    with their teacher probabilities and fixed outliers with theirs, hand-computed here term by term."""
    f = nn.functional
    model = _small_net().eval()
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    g = torch.Generator().manual_seed(2)
    x, y, out = torch.randn(13, 2, 4, 4, generator=g), torch.randint(0, 3, (13,), generator=g), torch.randn(
        9, 2, 4, 4, generator=g)
    t = 4.0
    t_in, t_out = fixed_teacher_probs([teacher], x, t, batch_size=5), fixed_teacher_probs([teacher], out, t)
    with torch.no_grad():
        torch.testing.assert_close(t_in, f.softmax(teacher(x) / t, dim=1))
        s_in, s_out = model(x), model(out)
        soft_in = -(t_in * f.log_softmax(s_in / t, dim=1)).sum(1).mean()
        soft_out = -(t_out * f.log_softmax(s_out / t, dim=1)).sum(1)
        uniform_out = -f.log_softmax(s_out, dim=1).mean(1)
        by_hand = (0.5 * f.cross_entropy(s_in, y) + 0.5 * t ** 2 * soft_in
                   + 0.5 * (0.8 * uniform_out + 0.2 * t ** 2 * soft_out).mean())
    objective = make_objective("distill", temperature=t)  # alpha 0.5, beta 0.2, lam 0.5, T² on the soft terms
    loss_fn = training_loss_fn(model, x, y, objective, batch_size=4, outliers=out, teacher_in=t_in, teacher_out=t_out)
    assert loss_fn() == pytest.approx(float(by_hand), rel=1e-5)
    result = landscape(model, loss_fn, steps=3, span=0.5, seed=0)
    assert result["center_loss"] == pytest.approx(float(by_hand), rel=1e-5) and np.isfinite(result["sharpness"])
    with pytest.raises(ValueError, match="teacher or outliers: pass outliers"):
        training_loss_fn(model, x, y, objective, teacher_in=t_in, teacher_out=t_out)
    ce_only = training_loss_fn(model, x, y, "ce", outliers=out)  # outliers of an objective that draws none: unused
    assert ce_only() == pytest.approx(training_loss_fn(model, x, y)(), rel=1e-6)


@pytest.fixture
def one_thread():
    """The network is tiny (width 4, 8x8): one intra-op thread is faster and does not thrash a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_real_network_landscape_and_plot(tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_network(SearchSpace().sample(0), num_classes=6, in_channels=1, width=4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 8, 8, generator=g), torch.randint(0, 6, (48,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = training_loss_fn(model, x, y)
    model.eval()
    unperturbed = loss_fn(model)
    model.train()

    result = landscape(model, loss_fn, steps=5, span=1.0, seed=0)
    assert result["surface"].shape == (5, 5) and np.all(np.isfinite(result["surface"]))
    assert result["grid"][2] == 0.0 and result["radius"] == 0.5
    assert result["center_loss"] == pytest.approx(unperturbed, rel=1e-6, abs=1e-7)
    assert np.isfinite(result["sharpness"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training
    json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()})

    other = landscape(model, loss_fn, steps=5, span=1.0, seed=1)
    line = landscape(model, loss_fn, steps=5, seed=0, dims=1)
    assert line["surface"].shape == (5,)
    path = plot_landscapes({"cross-entropy": result, "distillation": other}, tmp_path / "sub" / "landscape.png",
                           title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = json.loads(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in line.items()}))
    plot_landscapes({"line": as_json}, tmp_path / "line.png", log=False)  # the JSON form plots too
    scaled = {**other, "surface": 100 * other["surface"], "sharpness": 100 * other["sharpness"]}
    plot_landscapes({"cross-entropy": result, "another loss": scaled}, tmp_path / "own.png", shared_levels=False)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["landscape.png", "line.png", "own.png"]
