"""Tests for trainables.image.losses: hand-computed examples per objective, contract tests over the registry."""
import math

import pytest
import torch
from torch import nn

from search_space.registry import RegistryError
from trainables.image.losses import OBJECTIVES, ensemble_probs, make_objective, register_objective

# 2 ID samples x 3 classes, 2 outlier samples; expected values below are computed with plain math.
LOGITS_IN = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
LABELS = [0, 2]
LOGITS_OUT = [[1.0, -1.0, 0.0], [0.0, 3.0, 1.0]]
TEACHER_IN = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
TEACHER_OUT = [[0.4, 0.3, 0.3], [0.2, 0.5, 0.3]]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def log_softmax_row(row, temp=1.0):
    z = [v / temp for v in row]
    lse = math.log(sum(math.exp(v) for v in z))
    return [v - lse for v in z]


def ce_ref(logits, labels):
    return sum(-log_softmax_row(r)[y] for r, y in zip(logits, labels)) / len(logits)


def uniform_ce_ref(logits):
    return sum(-sum(log_softmax_row(r)) / len(r) for r in logits) / len(logits)


def soft_ce_ref(probs, logits, temp):
    """Per-row -sum p log softmax(z / T)."""
    return [-sum(p * q for p, q in zip(pr, log_softmax_row(r, temp))) for pr, r in zip(probs, logits)]


def energy_ref(row):
    return -math.log(sum(math.exp(v) for v in row))


def call(obj, **over):
    inputs = {"logits_in": t(LOGITS_IN), "labels": torch.tensor(LABELS), "logits_out": t(LOGITS_OUT),
              "teacher_in": t(TEACHER_IN), "teacher_out": t(TEACHER_OUT)}
    inputs.update(over)
    return obj(**inputs).item()


# ------------------------------------------------------------------------------ hand-computed examples
def test_ce():
    assert call(make_objective("ce")) == pytest.approx(ce_ref(LOGITS_IN, LABELS))
    # explicit: sample 0 -> -log(e^2 / (e^2 + 1 + e^-1))
    s0 = -(2.0 - math.log(math.exp(2) + 1 + math.exp(-1)))
    s1 = -(0.0 - math.log(math.exp(0.5) + math.exp(1.5) + 1))
    assert call(make_objective("ce")) == pytest.approx((s0 + s1) / 2)


def test_oe_uniform_outliers_cost_log_c():
    uniform = torch.full((4, 3), 1.7, dtype=torch.float64)
    got = call(make_objective("oe", lam=0.5), logits_out=uniform)
    assert got == pytest.approx(ce_ref(LOGITS_IN, LABELS) + 0.5 * math.log(3))


def test_oe_nonuniform_and_none():
    got = call(make_objective("oe", lam=0.3))
    assert got == pytest.approx(ce_ref(LOGITS_IN, LABELS) + 0.3 * uniform_ce_ref(LOGITS_OUT))
    assert uniform_ce_ref(LOGITS_OUT) > math.log(3)  # non-uniform predictions cost more than log C
    # Without auxiliary outliers OE reduces to CE.
    assert call(make_objective("oe"), logits_out=None) == pytest.approx(ce_ref(LOGITS_IN, LABELS))


def test_energy_hinge_inactive():
    # Default margins: E_in = -logsumexp ~ -2.4 > m_in = -25 (active); use margins making both inactive.
    obj = make_objective("energy", lam=0.1, m_in=0.0, m_out=-10.0)
    assert all(energy_ref(r) < 0.0 for r in LOGITS_IN) and all(energy_ref(r) > -10.0 for r in LOGITS_OUT)
    assert call(obj) == pytest.approx(ce_ref(LOGITS_IN, LABELS))


def test_energy_hinge_active():
    lam, m_in, m_out = 0.1, -25.0, -7.0
    e_in = [energy_ref(r) for r in LOGITS_IN]
    e_out = [energy_ref(r) for r in LOGITS_OUT]
    hinge_in = sum(max(e - m_in, 0.0) ** 2 for e in e_in) / 2
    hinge_out = sum(max(m_out - e, 0.0) ** 2 for e in e_out) / 2
    assert hinge_in > 0 and hinge_out == 0  # E_out ~ -1.4, -3.2 are above m_out = -7
    assert call(make_objective("energy")) == pytest.approx(ce_ref(LOGITS_IN, LABELS) + lam * (hinge_in + hinge_out))
    # Outlier hinge active too: m_out = 0 lies above both outlier energies.
    hinge_out0 = sum(max(0.0 - e, 0.0) ** 2 for e in e_out) / 2
    got = call(make_objective("energy", lam=0.2, m_out=0.0))
    assert got == pytest.approx(ce_ref(LOGITS_IN, LABELS) + 0.2 * (hinge_in + hinge_out0))


@pytest.mark.parametrize("temp", [1.0, 4.0, 20.0])
def test_distill_alpha1_lam0_is_t2_soft_ce(temp):
    obj = make_objective("distill", temperature=temp, alpha=1.0, lam=0.0)
    assert not obj.needs_outliers
    expected = temp**2 * sum(soft_ce_ref(TEACHER_IN, LOGITS_IN, temp)) / 2
    assert call(obj, logits_out=None, teacher_out=None) == pytest.approx(expected)


def test_distill_t_squared_false():
    obj = make_objective("distill", temperature=4.0, alpha=1.0, lam=0.0, t_squared=False)
    assert call(obj, logits_out=None) == pytest.approx(sum(soft_ce_ref(TEACHER_IN, LOGITS_IN, 4.0)) / 2)


def test_distill_alpha0_is_ce():
    obj = make_objective("distill", alpha=0.0, lam=0.0)
    assert not obj.needs_teacher and not obj.needs_outliers
    assert call(obj, logits_out=None, teacher_in=None, teacher_out=None) == pytest.approx(ce_ref(LOGITS_IN, LABELS))


def test_distill_beta0_outlier_term_is_uniform_ce():
    obj = make_objective("distill", alpha=0.0, beta=0.0, lam=0.7)
    expected = ce_ref(LOGITS_IN, LABELS) + 0.7 * uniform_ce_ref(LOGITS_OUT)
    assert call(obj, teacher_in=None, teacher_out=None) == pytest.approx(expected)


def test_distill_lam0_default_without_outliers():
    obj = make_objective("distill", lam=0.0)  # the paper's setting without auxiliary outliers
    temp, a = 20.0, 0.5
    expected = a * temp**2 * sum(soft_ce_ref(TEACHER_IN, LOGITS_IN, temp)) / 2 + (1 - a) * ce_ref(LOGITS_IN, LABELS)
    assert call(obj, logits_out=None, teacher_out=None) == pytest.approx(expected)


@pytest.mark.parametrize("t_squared", [True, False])
def test_distill_full_formula(t_squared):
    temp, a, b, lam = 3.0, 0.4, 0.2, 0.5
    s = temp**2 if t_squared else 1.0
    ds_in = [s * v for v in soft_ce_ref(TEACHER_IN, LOGITS_IN, temp)]
    ce_in = [-log_softmax_row(r)[y] for r, y in zip(LOGITS_IN, LABELS)]
    ds_out = [s * v for v in soft_ce_ref(TEACHER_OUT, LOGITS_OUT, temp)]
    u_out = [-sum(log_softmax_row(r)) / 3 for r in LOGITS_OUT]
    expected = (sum(a * d + (1 - a) * c for d, c in zip(ds_in, ce_in)) / 2
                + lam * sum(b * d + (1 - b) * u for d, u in zip(ds_out, u_out)) / 2)
    obj = make_objective("distill", temperature=temp, alpha=a, beta=b, lam=lam, t_squared=t_squared)
    assert call(obj) == pytest.approx(expected)


def test_distill_requires_outliers_when_lam_positive():
    with pytest.raises(ValueError, match="logits_out"):
        call(make_objective("distill", lam=0.5), logits_out=None)


def test_distill_no_gradient_into_teacher():
    teacher = t(TEACHER_IN).requires_grad_()
    logits = t(LOGITS_IN).requires_grad_()
    make_objective("distill", lam=0.0)(logits, torch.tensor(LABELS), teacher_in=teacher).backward()
    assert teacher.grad is None and logits.grad is not None


# ------------------------------------------------------------------------------ contract over the registry
def contract_inputs(obj, batch=5, batch_out=7, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {"logits_in": (3 * torch.randn(batch, classes, generator=g)).requires_grad_(),
              "labels": torch.randint(0, classes, (batch,), generator=g)}
    if obj.needs_outliers:
        inputs["logits_out"] = (3 * torch.randn(batch_out, classes, generator=g)).requires_grad_()
    if obj.needs_teacher:
        inputs["teacher_in"] = torch.softmax(torch.randn(batch, classes, generator=g), 1)
        inputs["teacher_out"] = torch.softmax(torch.randn(batch_out, classes, generator=g), 1)
    return inputs


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contract_scalar_finite_differentiable_nonneg(name, seed):
    obj = make_objective(name)
    assert isinstance(obj.needs_outliers, bool) and isinstance(obj.needs_teacher, bool)
    inputs = contract_inputs(obj, seed=seed)
    loss = obj(**inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert loss.item() >= 0  # every registered objective is a sum of cross-entropies and squared hinges
    loss.backward()
    for key in ("logits_in", "logits_out"):
        if key in inputs:
            assert inputs[key].grad is not None and torch.isfinite(inputs[key].grad).all(), key


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_contract_missing_required_input(name):
    obj = make_objective(name)
    inputs = contract_inputs(obj)
    required = ["logits_in", "labels"]
    if obj.needs_outliers and not obj.outliers_optional:
        required.append("logits_out")
    if obj.needs_teacher:
        required += ["teacher_in", "teacher_out"]
    for key in required:
        with pytest.raises(ValueError, match=key):
            obj(**{**inputs, key: None})
    if obj.outliers_optional:
        assert torch.isfinite(obj(**{**inputs, "logits_out": None}))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_contract_shape_mismatch(name):
    obj = make_objective(name)
    inputs = contract_inputs(obj)
    with pytest.raises(ValueError, match="labels"):
        obj(**{**inputs, "labels": inputs["labels"][:-1]})


# ------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name, kwargs, message", [
    ("distill", {"alpha": 1.5}, "alpha: expected a value in [0, 1], got 1.5"),
    ("distill", {"beta": -0.1}, "beta: expected a value in [0, 1], got -0.1"),
    ("distill", {"lam": -1.0}, "lam: expected >= 0, got -1.0"),
    ("distill", {"temperature": 0.0}, "temperature: expected > 0, got 0.0"),
    ("oe", {"lam": -1.0}, "lam: expected >= 0, got -1.0"),
    ("energy", {"lam": -1.0}, "lam: expected >= 0, got -1.0"),
])
def test_invalid_params(name, kwargs, message):
    with pytest.raises(RegistryError) as err:
        make_objective(name, **kwargs)
    assert str(err.value) == f"objective {name!r}: {message}"


def test_duplicate_registration():
    with pytest.raises(ValueError, match="already registered"):
        register_objective("ce")(type("Dummy", (), {}))


# ------------------------------------------------------------------------------ ensemble_probs
def teachers(n, dropout=False):
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5) if dropout else nn.Identity()) for _ in range(n)]


def test_ensemble_rows_sum_to_one_and_average():
    ts, x = teachers(3), torch.randn(5, 6)
    probs = ensemble_probs(ts, x, temperature=5.0)
    assert probs.shape == (5, 3) and not probs.requires_grad
    assert torch.allclose(probs.sum(1), torch.ones(5))
    manual = sum(torch.softmax(m(x).detach() / 5.0, 1) for m in ts) / 3
    assert torch.allclose(probs, manual, atol=1e-6)


def test_ensemble_single_teacher_and_module_input():
    (m,), x = teachers(1), torch.randn(4, 6)
    expected = torch.softmax(m(x).detach() / 20.0, 1)
    assert torch.allclose(ensemble_probs([m], x, 20.0), expected, atol=1e-6)
    assert torch.allclose(ensemble_probs(m, x, 20.0), expected, atol=1e-6)  # a bare module = one teacher
    assert torch.allclose(ensemble_probs(nn.ModuleList([m]), x, 20.0), expected, atol=1e-6)


def test_ensemble_eval_mode_and_restore():
    ts, x = teachers(2, dropout=True), torch.randn(8, 6)
    ts[1].eval()
    a, b = ensemble_probs(ts, x, 2.0), ensemble_probs(ts, x, 2.0)
    assert torch.equal(a, b)  # dropout off in eval mode -> deterministic
    assert ts[0].training and not ts[1].training


def test_ensemble_errors():
    with pytest.raises(ValueError, match="teachers"):
        ensemble_probs([], torch.randn(2, 6))
    with pytest.raises(ValueError, match="temperature"):
        ensemble_probs(teachers(1), torch.randn(2, 6), temperature=0.0)
