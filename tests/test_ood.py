"""OOD metrics, the OOD-score registry (every registered score is contract-tested) and evaluate_ood."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from trainables.image.ood import (
    DETECTION_METRICS,
    SCORES,
    OODScore,
    aupr_in,
    aupr_out,
    auroc,
    evaluate_ood,
    fpr_at_tpr,
    make_score,
    register_score,
)

# ---------------------------------------------------------------------------------------------- metrics

ID, OOD = [0.9, 0.8, 0.7, 0.6], [0.75, 0.5, 0.4, 0.3]


def test_perfect_and_reversed_separation():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0 and fpr_at_tpr([3, 4, 5], [0, 1, 2]) == 0.0
    assert aupr_in([3, 4, 5], [0, 1, 2]) == 1.0 and aupr_out([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1, 2], [3, 4, 5]) == 0.0 and fpr_at_tpr([0, 1, 2], [3, 4, 5]) == 1.0


def test_hand_computed_example():
    # 16 (id, ood) pairs; 0.7 and 0.6 lose to 0.75 -> 14/16.
    assert auroc(ID, OOD) == pytest.approx(14 / 16)
    # Keeping all 4 ID needs threshold 0.6, which accepts OOD 0.75 -> 1/4.
    assert fpr_at_tpr(ID, OOD) == pytest.approx(0.25)
    # Ranked: I I O I I O O O; precision at each ID hit: 1, 1, 3/4, 4/5.
    assert aupr_in(ID, OOD) == pytest.approx((1 + 1 + 0.75 + 0.8) / 4)
    # OOD positive, ascending: O O O I I O; precision at each OOD hit: 1, 1, 1, 4/6.
    assert aupr_out(ID, OOD) == pytest.approx((3 + 4 / 6) / 4)
    assert isinstance(auroc(np.array(ID), np.array(OOD)), float)


def test_fpr_at_tpr_small_cases():
    assert fpr_at_tpr([3, 1], [2, 0], tpr=0.5) == 0.0  # threshold 3 keeps half the ID, no OOD
    assert fpr_at_tpr([1, 3], [2, 4], tpr=0.5) == 0.5  # threshold 3 accepts OOD 4
    assert fpr_at_tpr(ID, OOD, tpr=0.5) == 0.0 and fpr_at_tpr(ID, OOD, tpr=0.75) == 0.25
    assert fpr_at_tpr([1, 1], [1, 0]) == 0.5  # ties: score >= threshold is accepted
    assert auroc([1, 1], [1, 0]) == 0.75  # ties count one half
    assert fpr_at_tpr(np.arange(20.0), np.full(5, 0.5)) == 0.0  # 19/20 ID kept counts as 95%


@given(st.lists(st.integers(0, 6), min_size=1, max_size=25), st.lists(st.integers(0, 6), min_size=1, max_size=25),
       st.sampled_from([0.2, 0.5, 0.95, 1.0]))
@settings(max_examples=60, deadline=None)
def test_fpr_at_tpr_matches_brute_force_definition(id_s, ood_s, tpr):
    i, o = np.array(id_s, float), np.array(ood_s, float)
    t = max(t for t in np.unique(np.r_[i, o]) if (i >= t).mean() >= tpr)  # highest threshold keeping tpr of ID
    assert fpr_at_tpr(i, o, tpr) == pytest.approx((o >= t).mean())
    for m in (auroc, aupr_in, aupr_out):
        assert 0.0 <= m(i, o) <= 1.0
    assert auroc(i, o) + auroc(o, i) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", [auroc, aupr_in, aupr_out, fpr_at_tpr])
@pytest.mark.parametrize("id_s, ood_s, arg", [
    ([], [1.0], "id_scores"), ([1.0], [], "ood_scores"), ([[1.0, 2.0]], [1.0], "id_scores"),
    ([1.0], np.ones((2, 2)), "ood_scores"), ([1.0, math.nan], [0.0], "id_scores"), ([1.0], [math.nan], "ood_scores"),
])
def test_metric_errors_name_the_argument(metric, id_s, ood_s, arg):
    with pytest.raises(ValueError, match=arg):
        metric(id_s, ood_s)


def test_fpr_at_tpr_rejects_bad_tpr():
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=1.5)


# ------------------------------------------------------------------------------------------- toy model


class Toy(nn.Module):
    """Input (N, 2, 1, 1) -> features (N, 2) by an identity linear layer -> dropout -> 3 logits whose weight
    rows point at the class angles 0, 120, 240 degrees. Dropout makes train mode visibly nondeterministic."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.feat = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(2, 3)
        ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(2)), self.feat.bias.zero_()
            self.head.weight.copy_(scale * torch.stack([ang.cos(), ang.sin()], 1)), self.head.bias.zero_()

    def forward(self, x, return_features=False):
        f = self.feat(x.flatten(1))
        logits = self.head(self.drop(f))
        return (logits, f) if return_features else logits


def blobs(n_per_class, seed, offset=0.0, radius=5.0):
    """Points at radius ~5 around the class angles (+ offset radians), as (N, 2, 1, 1) images and labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    ang = y * 2 * math.pi / 3 + offset + 0.08 * torch.randn(len(y), generator=g)
    r = radius + 0.3 * torch.randn(len(y), generator=g)
    return torch.stack([r * ang.cos(), r * ang.sin()], 1).view(-1, 2, 1, 1), y


@pytest.fixture(scope="module")
def toy():
    train_x, train_y = blobs(60, seed=0)
    id_x, id_y = blobs(20, seed=1)
    ood_x, _ = blobs(20, seed=2, offset=math.pi / 3)  # between the classes: ambiguous, far from every mean
    return Toy(), train_x, train_y, id_x, id_y, ood_x


@torch.no_grad()
def eval_logits(model, x):
    """float64 logits in eval mode (dropout off); the model's mode is left as it was."""
    was = model.training
    out = model.eval()(x).double()
    model.train(was)
    return out


def fitted(name, model, train_x, train_y, **kw):
    s = make_score(name, **kw)
    s.setup(model, train_x, train_y, batch_size=64)
    return s


# ------------------------------------------------------------------------------------- score contract


@pytest.mark.parametrize("name", list(SCORES))
def test_score_contract(name, toy):
    model, train_x, train_y, id_x, _id_y, ood_x = toy
    s = fitted(name, model, train_x, train_y)
    for training in (True, False):
        model.train(training)
        a, b = s.score(model, id_x), s.score(model, id_x)
        assert model.training is training and model.drop.training is training
        assert a.shape == (len(id_x),) and a.dtype == np.float64 and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(s.score(model, id_x, batch_size=7), a, rtol=1e-6, atol=1e-9)
    assert auroc(a, s.score(model, ood_x)) > 0.9


@pytest.mark.parametrize("name", list(SCORES))
def test_score_on_a_real_network(name):
    from search_space import SearchSpace, build_network

    torch.manual_seed(0)
    net = build_network(SearchSpace(k=4).sample(0), num_classes=3, in_channels=1, width=4)
    x, y = torch.randn(10, 1, 8, 8), torch.arange(10) % 3
    s = fitted(name, net, x, y)
    out = s.score(net, x[:5], batch_size=2)
    assert out.shape == (5,) and np.isfinite(out).all() and net.training
    assert all(p.grad is None for p in net.parameters())


def test_scores_that_need_setup_refuse_to_score_before_it(toy):
    model, *_, id_x, _, _ = toy
    needs = [n for n, cls in SCORES.items() if cls.needs_setup]
    assert {"maha", "knn"} <= set(needs)
    for name in needs:
        with pytest.raises(RuntimeError, match="setup"):
            make_score(name).score(model, id_x)


def test_registry():
    assert {"msp", "energy", "maha", "odin", "knn"} <= set(SCORES)
    with pytest.raises(ValueError, match="already registered"):
        register_score("msp")(type("Dup", (OODScore,), {}))
    assert make_score("energy", temperature=2).temperature == 2.0


# -------------------------------------------------------------------------------------- specific scores


def test_msp_and_energy_match_their_formulas(toy):
    model, *_, id_x, _, _ = toy
    logits = eval_logits(model, id_x)
    np.testing.assert_allclose(make_score("msp").score(model, id_x), logits.softmax(1).amax(1).numpy(), rtol=1e-12)
    for t in (1.0, 2.0):
        want = (t * torch.logsumexp(logits / t, 1)).numpy()
        np.testing.assert_allclose(make_score("energy", temperature=t).score(model, id_x), want, rtol=1e-12)


def test_maha_is_highest_near_the_class_means(toy):
    model, train_x, train_y, *_ = toy
    s = fitted("maha", model, train_x, train_y)
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(3)])
    near, far = s.score(model, means), s.score(model, 0.5 * means)
    assert np.allclose(near, 0, atol=1e-8) and (far < -10).all()
    # two Gaussian blobs with a non-isotropic tied covariance: the score falls with Mahalanobis distance
    g = torch.Generator().manual_seed(3)
    z = torch.randn(400, 2, generator=g) * torch.tensor([1.0, 0.2])
    y = torch.arange(400) % 2
    x = (z + torch.tensor([[-3.0, 0.0], [3.0, 0.0]])[y]).view(-1, 2, 1, 1)
    s = fitted("maha", model, x, y)
    probe = torch.tensor([[3.0, 0.0], [3.0, 0.4], [3.0, 1.0], [2.0, 0.0], [0.0, 0.0]]).view(-1, 2, 1, 1)
    sc = s.score(model, probe)
    assert sc[0] > sc[3] > sc[1] > sc[2]  # a 0.4 step across the narrow axis costs more than 1.0 along the wide one
    assert sc[0] > sc[4]


def test_knn_distance_to_self_is_zero(toy):
    model, train_x, train_y, *_ = toy
    s = fitted("knn", model, train_x, train_y, k=1)
    np.testing.assert_allclose(s.score(model, train_x[:10]), 0.0, atol=1e-6)
    assert (fitted("knn", model, train_x, train_y, k=10_000).score(model, train_x[:3]) < -0.1).all()  # k clamped


def test_odin_without_perturbation_is_tempered_msp(toy):
    model, *_, id_x, _, _ = toy
    for t in (1.0, 10.0):
        want = (eval_logits(model, id_x) / t).softmax(1).amax(1).numpy()
        np.testing.assert_allclose(make_score("odin", temperature=t, epsilon=0.0).score(model, id_x), want, rtol=1e-12)
    np.testing.assert_allclose(make_score("odin", temperature=1.0, epsilon=0.0).score(model, id_x),
                               make_score("msp").score(model, id_x), rtol=1e-12)
    # the perturbation raises the tempered max softmax
    assert (make_score("odin", temperature=10.0, epsilon=0.05).score(model, id_x) > want).all()


def test_odin_input_gradients_in_sub_batches_are_exact(toy):
    """The perturbation is taken in sub-batches to bound memory; in eval mode that changes no score."""
    model, *_, id_x, _, _ = toy
    whole = make_score("odin", temperature=10.0, epsilon=0.05)
    whole.grad_batch = len(id_x)
    split = make_score("odin", temperature=10.0, epsilon=0.05)
    split.grad_batch = 7  # uneven: the last sub-batch is partial
    assert len(id_x) % 7
    np.testing.assert_allclose(split.score(model, id_x), whole.score(model, id_x), rtol=1e-6)


# ------------------------------------------------------------------------------------------ evaluate_ood


def test_evaluate_ood_returns_every_metric_in_unit_interval(toy):
    model, train_x, train_y, id_x, id_y, ood_x = toy
    scores = tuple(SCORES)
    out = evaluate_ood(model, id_x, id_y, ood_x, train_x, train_y, scores=scores, batch_size=16)
    kinds = ("auroc", "aupr_in", "aupr_out", "fpr95", "openood_aupr_in", "openood_aupr_out", "openood_fpr95")
    keys = {"id_acc"} | {f"{m}_{s}" for s in scores for m in kinds}
    assert set(out) == keys
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    assert out["id_acc"] == 1.0 and out["auroc_msp"] > 0.9 and out["fpr95_maha"] < 0.1
    assert set(evaluate_ood(model, id_x, id_y, ood_x, train_x, train_y)) == {"id_acc"} | {
        f"{m}_{s}" for s in ("msp", "energy", "maha") for m in DETECTION_METRICS}


@pytest.mark.parametrize("name", [n for n, cls in SCORES.items() if cls.from_outputs])
def test_shared_forward_path_equals_per_score_path(name, toy):
    """evaluate_ood feeds output-based scores from one forward pass; it must match score(model, x)."""
    model, train_x, train_y, id_x, _id_y, _ood_x = toy
    per_score = fitted(name, model, train_x, train_y)
    shared = make_score(name)
    if shared.needs_setup:
        with torch.no_grad():
            shared.setup_features(model.eval()(train_x, return_features=True)[1], train_y)
    with torch.no_grad():
        logits, features = model.eval()(id_x, return_features=True)
    np.testing.assert_allclose(shared.score_outputs(logits, features), per_score.score(model, id_x),
                               rtol=1e-5, atol=1e-7)


def test_model_based_score_refuses_outputs():
    with pytest.raises(TypeError, match="needs the model"):
        make_score("odin").score_outputs(torch.zeros(2, 3), torch.zeros(2, 4))


def test_fpr95_conventions_on_a_hand_computed_case():
    """ID positive (``fpr95``): keep every ID sample (threshold 0.2) and all 4 OOD samples pass: 1.0. OpenOOD
    (``openood_fpr95``, OOD positive): flag every OOD sample (conf <= 0.75) and 2 of 4 ID samples are flagged too."""
    from trainables.image.ood import fpr95, openood_fpr95

    id_s, ood_s = [0.9, 0.8, 0.7, 0.2], [0.75, 0.5, 0.4, 0.3]
    assert fpr95(id_s, ood_s) == 1.0
    assert openood_fpr95(id_s, ood_s) == 0.5


def test_aupr_conventions_on_a_hand_computed_case():
    """Ranking by score: ID 0.9, OOD 0.6, ID 0.4, OOD 0.1. ID positive: precision/recall points (1, 0.5),
    (0.5, 0.5), (2/3, 1), (0.5, 1). Average precision = 0.5·1 + 0.5·2/3; OpenOOD's trapezoid = 0.5·1 (recall 0 to
    0.5 at precision 1) + 0.5·(0.5 + 2/3)/2."""
    from trainables.image.ood import openood_aupr_in, openood_aupr_out

    id_s, ood_s = [0.9, 0.4], [0.6, 0.1]
    assert aupr_in(id_s, ood_s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert openood_aupr_in(id_s, ood_s) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    # OOD positive on negated scores: OOD 0.1 first, then ID 0.4, OOD 0.6, ID 0.9 -> the same shape
    assert aupr_out(id_s, ood_s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert openood_aupr_out(id_s, ood_s) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
