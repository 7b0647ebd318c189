"""Posterior contract over every registered posterior, the shared KL path, and Gaussian == SI with K = 0."""
import math

import pytest
import torch

from trainables.posteriors import (
    POSTERIORS,
    GaussianPosterior,
    SemiImplicitPosterior,
    diag_normal_log_prob,
    gaussian_kl,
    kl_bound,
    make_posterior,
    mixture_log_prob,
)

H, D, B = 12, 3, 5


@pytest.mark.parametrize("name", list(POSTERIORS))
@pytest.mark.parametrize("n", [1, 4])
def test_contract(name, n):
    torch.manual_seed(0)
    post = make_posterior(name, H, D)
    h = torch.randn(B, H)
    mu, logvar = post.components(h, n)
    assert mu.dim() == 3 and mu.shape[0] == B and mu.shape[2] == D and mu.shape[1] in (1, n)
    assert logvar.shape == (B, D)
    kl, z = kl_bound(mu, logvar, j_samples=2)
    assert kl.shape == (B,) and z.shape == (2, B, D)
    assert torch.isfinite(kl).all() and torch.isfinite(z).all()
    # gradients reach every parameter through the training objective (n > 1 exercises the mixing network)
    (kl.sum() + z.pow(2).sum()).backward()
    grads = [p.grad for p in post.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list(POSTERIORS))
def test_kl_bound_with_one_component_is_the_analytic_gaussian_kl(name):
    torch.manual_seed(1)
    mu, logvar = make_posterior(name, H, D).components(torch.randn(B, H), 1)
    kl, _ = kl_bound(mu, logvar, j_samples=3)
    torch.testing.assert_close(kl, gaussian_kl(mu[:, 0], logvar))


def test_gaussian_kl_known_values():
    assert float(gaussian_kl(torch.zeros(D), torch.zeros(D))) == 0.0
    # KL(N(1, e^2) || N(0, 1)) = 0.5 (1 + e^2 - 1 - 2) per dim
    val = float(gaussian_kl(torch.ones(1), torch.full((1,), 2.0)))
    assert val == pytest.approx(0.5 * (1 + math.e ** 2 - 1 - 2))


def test_gaussian_equals_semi_implicit_code_path_with_k_zero():
    """Same W_μ, W_σ; SI with K = 0 (one component) gives exactly the Gaussian's KL and z for the same seed;
    with the mixing network switched off (last layer zero) it equals the Gaussian for any K."""
    torch.manual_seed(2)
    gauss, si = GaussianPosterior(H, D), SemiImplicitPosterior(H, D, noise_dim=4)
    si.mu.load_state_dict(gauss.mu.state_dict())
    si.logvar.load_state_dict(gauss.logvar.state_dict())
    h = torch.randn(B, H)

    def run(post, k, seed=7):
        torch.manual_seed(seed)
        mu, logvar = post.components(h, k + 1)
        torch.manual_seed(seed + 1)
        return kl_bound(mu, logvar, j_samples=2)

    kl_g, z_g = run(gauss, 0)
    # K = 0: the SI mean carries its (random) shift, so compare the path, not the numbers, via the analytic KL
    mu_si, logvar_si = si.components(h, 1)
    kl_si, _ = kl_bound(mu_si, logvar_si)
    torch.testing.assert_close(kl_si, gaussian_kl(mu_si[:, 0], logvar_si))
    with torch.no_grad():
        si.mix[-1].weight.zero_()
        si.mix[-1].bias.zero_()
    for k in (0, 3, 10):
        kl_s, z_s = run(si, k)
        torch.testing.assert_close(kl_s, kl_g)
        torch.testing.assert_close(z_s, z_g)


def test_repulsive_term_lowers_kl_when_components_differ():
    """B_K >= 0 on average: spreading the mixing draws makes q̃_K wider than q(z|ψ_0), so the KL used drops."""
    torch.manual_seed(3)
    mu = torch.randn(2000, 6, D) * 2.0
    logvar = torch.zeros(2000, D)
    kl, _ = kl_bound(mu, logvar, j_samples=4)
    assert float((gaussian_kl(mu[:, 0], logvar) - kl).mean()) > 0.1


def test_mixture_log_prob_known_values():
    z = torch.zeros(1, 1, D)
    one = torch.zeros(1, 1, D)
    assert float(mixture_log_prob(z, one, torch.zeros(1, D))) == pytest.approx(-0.5 * D * math.log(2 * math.pi))
    # two components, z at one of them, the other infinitely far away: log(0.5 N(0; 0, 1))
    far = torch.stack([torch.zeros(D), torch.full((D,), 1e3)]).unsqueeze(0)
    expected = math.log(0.5) + float(diag_normal_log_prob(torch.zeros(D), torch.zeros(D), torch.zeros(D)))
    assert float(mixture_log_prob(z, far, torch.zeros(1, D))) == pytest.approx(expected)


def test_semi_implicit_components_differ_between_draws():
    torch.manual_seed(4)
    mu, _ = SemiImplicitPosterior(H, D).components(torch.randn(B, H), 5)
    assert mu.shape == (B, 5, D) and float(mu.detach().std(1).mean()) > 1e-4
