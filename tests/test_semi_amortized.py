"""trainables.text.semi_amortized.refine: SVI steps on (μ, log σ²) with known answers on a quadratic objective, the
per-example gradient clip, and gradients through the steps (create_graph) or none (detached)."""
import pytest
import torch

from trainables.text.semi_amortized import refine

B, D = 4, 3


def quadratic(target_mu: torch.Tensor, target_lv: torch.Tensor):
    """neg_elbo(m, lv) = Σ (m − a)² + Σ (lv − b)²: each row's gradient is its own, 2 (λ − λ*)."""
    return lambda m, lv: (m - target_mu).pow(2).sum() + (lv - target_lv).pow(2).sum()


def test_zero_steps_return_the_inputs_unchanged():
    mu, logvar = torch.randn(B, D, requires_grad=True), torch.randn(B, D, requires_grad=True)
    calls = []
    out = refine(mu, logvar, lambda m, lv: calls.append(1) or m.sum(), 0, 1.0, create_graph=True)
    assert out[0] is mu and out[1] is logvar and not calls
    with pytest.raises(ValueError, match="steps must be >= 0"):
        refine(mu, logvar, quadratic(mu, logvar), -1, 1.0, create_graph=False)


def test_steps_decrease_a_quadratic_neg_elbo_by_the_known_factor():
    """Plain SGD on Σ (λ − λ*)²: λ_k − λ* = (1 − 2 lr)^k (λ_0 − λ*), so the objective falls by (1 − 2 lr)^2 a step."""
    torch.manual_seed(0)
    a, b = torch.randn(B, D), torch.randn(B, D)
    mu, logvar = torch.randn(B, D), torch.randn(B, D)
    f = quadratic(a, b)
    values = [float(f(*refine(mu, logvar, f, k, 0.1, create_graph=False, max_grad_norm=None))) for k in range(6)]
    assert all(later < earlier for earlier, later in zip(values, values[1:]))
    assert values[5] == pytest.approx(values[0] * 0.8 ** 10, rel=1e-5)
    m5, lv5 = refine(mu, logvar, f, 5, 0.1, create_graph=False, max_grad_norm=None)
    torch.testing.assert_close(m5, a + 0.8 ** 5 * (mu - a))
    torch.testing.assert_close(lv5, b + 0.8 ** 5 * (logvar - b))


def test_each_examples_gradient_is_clipped_on_its_own():
    """Row 0 starts far from its optimum (gradient norm 2·10·√(2D) > 5), row 1 close: one step of lr 1 moves row 0
    by exactly the clip norm and row 1 by its full gradient."""
    a = torch.zeros(2, D)
    mu = torch.stack([torch.full((D,), 10.0), torch.full((D,), 0.01)])
    logvar = mu.clone()
    m1, lv1 = refine(mu, logvar, quadratic(a, a), 1, 1.0, create_graph=False, max_grad_norm=5.0)
    step = torch.cat([mu - m1, logvar - lv1], dim=-1)
    assert float(step[0].norm()) == pytest.approx(5.0)
    torch.testing.assert_close(step[1], 2 * torch.cat([mu[1], logvar[1]]))


def test_gradients_reach_the_encoder_through_the_steps_only_with_create_graph():
    """Encoder λ_0 = W x; loss L = Σ (λ_K − λ*)² at the refined parameters. Through K steps of lr on the quadratic,
    λ_K − λ* = c (λ_0 − λ*) with c = (1 − 2 lr)^K, so dL/dλ_0 = 2 c² (λ_0 − λ*): the second-order path of the
    steps contributes the factor c² (a first-order shortcut, the gradient at λ_K alone, would give 2 c)."""
    torch.manual_seed(1)
    encoder = torch.nn.Linear(5, 2 * D)
    x, a, b = torch.randn(B, 5), torch.randn(B, D), torch.randn(B, D)
    f = quadratic(a, b)
    steps, lr = 3, 0.2
    mu, logvar = encoder(x).chunk(2, dim=-1)
    m, lv = refine(mu, logvar, f, steps, lr, create_graph=True, max_grad_norm=None)
    grad_mu, grad_lv = torch.autograd.grad(f(m, lv), (mu, logvar), retain_graph=True)
    c = (1 - 2 * lr) ** steps
    torch.testing.assert_close(grad_mu, 2 * c ** 2 * (mu - a).detach())
    torch.testing.assert_close(grad_lv, 2 * c ** 2 * (logvar - b).detach())
    (chain,) = torch.autograd.grad((mu * grad_mu).sum() + (logvar * grad_lv).sum(), encoder.weight, retain_graph=True)
    f(m, lv).backward()  # as training does: the encoder's .grad is the chain rule of dL/dλ_0, nothing more
    torch.testing.assert_close(encoder.weight.grad, chain)
    assert chain.abs().sum() > 0

    mu, logvar = encoder(x).chunk(2, dim=-1)
    m, lv = refine(mu, logvar, f, steps, lr, create_graph=False)
    assert not m.requires_grad and not lv.requires_grad, "without create_graph no gradient reaches the encoder"


def test_gradients_reach_the_objectives_own_weights_through_the_steps():
    """The decoder's weights get the total derivative (Kim et al.'s Algorithm 1): with neg_elbo = Σ (w·m − 1)², a
    step's size depends on w, so the refined λ does too."""
    w = torch.tensor(2.0, requires_grad=True)
    mu, logvar = torch.ones(1, 1, requires_grad=True), torch.zeros(1, 1, requires_grad=True)
    m, _ = refine(mu, logvar, lambda m, lv: (w * m - 1).pow(2).sum() + lv.pow(2).sum(), 1, 0.1, create_graph=True)
    (grad_w,) = torch.autograd.grad(m.sum(), w)
    # m_1 = m_0 − 0.1 · 2w (w m_0 − 1) = 1 − 0.2 w (w − 1); d m_1 / d w = −0.2 (2w − 1) = −0.6
    assert float(grad_w) == pytest.approx(-0.6)


def test_refine_works_under_no_grad_as_evaluation_calls_it():
    mu, logvar = torch.full((B, D), 2.0), torch.zeros(B, D)
    f = quadratic(torch.zeros(B, D), torch.zeros(B, D))
    with torch.no_grad():
        m, lv = refine(mu, logvar, f, 2, 0.25, create_graph=False, max_grad_norm=None)
        assert not torch.is_grad_enabled(), "the caller's grad mode is restored"
    torch.testing.assert_close(m, torch.full((B, D), 0.5))  # each step halves λ − λ*: 2 -> 1 -> 0.5
    assert not m.requires_grad and not lv.requires_grad
