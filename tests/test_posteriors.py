"""Posterior contract over every registered posterior, the shared KL path, Gaussian == SI with K = 0, the
semi-implicit posterior of eq. 3.10–3.11: ψ = [μ, σ²] random, one ψ_j per z-sample, the bound still a bound, and
the refinement hook (identity for the amortised posteriors, SVI steps for ``sa``)."""
import math

import pytest
import torch

from search_space.registry import RegistryError
from trainables.text.posteriors import (
    POSTERIORS,
    GaussianPosterior,
    SemiAmortizedPosterior,
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
    assert logvar.shape == mu.shape
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
    kl, _ = kl_bound(mu, logvar, j_samples=1)
    torch.testing.assert_close(kl, gaussian_kl(mu[:, 0], logvar[:, 0]))


@pytest.mark.parametrize("name", list(POSTERIORS))
def test_refine_keeps_the_shapes_and_only_a_refining_posterior_moves_the_components(name):
    torch.manual_seed(3)
    post = make_posterior(name, H, D)
    mu, logvar = post.components(torch.randn(B, H), 1)
    target = torch.ones_like(mu)

    def neg_elbo(m, lv):
        return (m - target).pow(2).sum() + lv.pow(2).sum()

    refined = post.refine(mu, logvar, neg_elbo, create_graph=True)
    assert refined[0].shape == mu.shape and refined[1].shape == logvar.shape
    if isinstance(post, SemiAmortizedPosterior):
        assert float(neg_elbo(*refined).detach()) < float(neg_elbo(mu, logvar).detach())
        refined[0].sum().backward()
        assert post.mu.weight.grad is not None, "differentiable through the steps with create_graph"
    else:
        assert refined[0] is mu and refined[1] is logvar


def test_sa_posterior_is_the_gaussian_refined_by_svi_and_checks_its_options():
    post = make_posterior("sa", H, D)
    assert (post.steps, post.lr) == (10, 0.1) and isinstance(post, GaussianPosterior)
    h = torch.randn(B, H)
    mu, logvar = post.components(h, 4)
    assert mu.shape == (B, 1, D), "one component, as the Gaussian"
    still = make_posterior("sa", H, D, steps=0)
    kept = still.refine(mu, logvar, lambda m, lv: m.sum(), create_graph=False)
    torch.testing.assert_close(kept, (mu, logvar))
    for options, message in (({"steps": -1}, "posterior 'sa': steps (SVI steps) must be >= 0, got -1"),
                              ({"lr": 0.0}, "posterior 'sa': lr (SVI step size) must be > 0, got 0.0")):
        with pytest.raises(RegistryError) as err:
            make_posterior("sa", H, D, **options)
        assert str(err.value) == message


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
        mu, logvar = post.components(h, k + 2)
        torch.manual_seed(seed + 1)
        return kl_bound(mu, logvar, j_samples=2)

    kl_g, z_g = run(gauss, 0)
    # K = 0: the SI mean carries its (random) shift, so compare the path, not the numbers, via the analytic KL
    mu_si, logvar_si = si.components(h, 1)
    kl_si, _ = kl_bound(mu_si, logvar_si)
    torch.testing.assert_close(kl_si, gaussian_kl(mu_si[:, 0], logvar_si[:, 0]))
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
    logvar = torch.zeros(2000, 6, D)
    kl, _ = kl_bound(mu, logvar, j_samples=4)
    assert float((gaussian_kl(mu[:, :4], logvar[:, :4]).mean(1) - kl).mean()) > 0.1


def test_mixture_log_prob_known_values():
    z = torch.zeros(1, 1, D)
    one = torch.zeros(1, 1, D)
    assert float(mixture_log_prob(z, one, torch.zeros(1, 1, D))) == pytest.approx(-0.5 * D * math.log(2 * math.pi))
    # two components, z at one of them, the other infinitely far away: log(0.5 N(0; 0, 1))
    far = torch.stack([torch.zeros(D), torch.full((D,), 1e3)]).unsqueeze(0)
    expected = math.log(0.5) + float(diag_normal_log_prob(torch.zeros(D), torch.zeros(D), torch.zeros(D)))
    assert float(mixture_log_prob(z, far, torch.zeros(1, 2, D))) == pytest.approx(expected)
    # each component has its own variance: N(0; 0, e^2) = N(0; 0, 1) / e per dimension
    lv = torch.stack([torch.full((D,), 2.0), torch.zeros(D)]).unsqueeze(0)
    expected = math.log(0.5 * math.exp(-D) + 0.5) - 0.5 * D * math.log(2 * math.pi)
    assert float(mixture_log_prob(z, torch.zeros(1, 2, D), lv)) == pytest.approx(expected)


def test_semi_implicit_components_differ_between_draws():
    torch.manual_seed(4)
    mu, logvar = SemiImplicitPosterior(H, D).components(torch.randn(B, H), 5)
    assert mu.shape == logvar.shape == (B, 5, D) and float(mu.detach().std(1).mean()) > 1e-4


# --- eq. 3.10–3.11: ψ = [μ, σ²] is random, one ψ_j per z-sample ------------------------------------------
def test_semi_implicit_variance_depends_on_the_noise():
    """Same input x (same h), different noise ε: every component has its own σ² (and μ); the same ε gives the
    same ψ, so the randomness is the noise's."""
    post = SemiImplicitPosterior(H, D, noise_dim=4)
    h = torch.randn(B, H)
    torch.manual_seed(5)
    mu, logvar = post.components(h, 6)
    assert (logvar.detach().std(1) > 1e-3).all(), "σ² must vary with ε for every row and dimension"
    assert (mu.detach().std(1) > 1e-3).all()
    torch.manual_seed(5)
    mu2, logvar2 = post.components(h, 6)
    torch.testing.assert_close((mu2, logvar2), (mu, logvar))
    # σ² is the mixing network's: with its log-variance outputs switched off, σ² no longer varies
    with torch.no_grad():
        post.mix[-1].weight[D:].zero_()
        post.mix[-1].bias[D:].zero_()
    assert float(post.components(h, 6)[1].detach().std(1).max()) == 0.0


def test_each_of_the_j_samples_draws_its_own_psi():
    """kl_bound's J samples come from the J first components, one each (distinct μ_j and σ_j), and a posterior
    asked for J + K components returns J + K distinct draws."""
    torch.manual_seed(6)
    j, k, rows = 3, 2, 4000
    post = SemiImplicitPosterior(H, D)
    mu, logvar = post.components(torch.randn(B, H), j + k)
    for a in range(j + k):
        for b in range(a):
            assert (mu[:, a] - mu[:, b]).abs().amin() > 0 and (logvar[:, a] - logvar[:, b]).abs().amin() > 0
    # components with known, far apart means and different spreads: z_j must come from component j
    means = torch.tensor([0.0, 100.0, 200.0, -500.0, 500.0])  # the last K = 2 are the shared mixing draws
    stds = torch.tensor([0.1, 0.5, 2.0, 1.0, 1.0])
    mu = means[None, :, None].expand(rows, -1, D).clone()
    logvar = (2 * stds.log())[None, :, None].expand(rows, -1, D).clone()
    _, z = kl_bound(mu, logvar, j_samples=j)
    assert z.shape == (j, rows, D)
    for i in range(j):
        assert float((z[i].mean() - means[i]).abs()) < 0.1
        assert float(z[i].std()) == pytest.approx(float(stds[i]), rel=0.05)


def test_kl_bound_by_hand_with_per_sample_psi():
    """kl = (1/J) Σ_j [KL(N(ψ_j) ‖ N(0, I)) − log N(z_j; ψ_j) + log (1/(K+1)) (N(z_j; ψ_j) + Σ_k N(z_j; ψ̃_k))]:
    sample j's mixture holds its own ψ_j and the K shared draws, not the other samples' ψ."""
    torch.manual_seed(7)
    j, k = 3, 4
    mu, logvar = torch.randn(B, j + k, D), torch.randn(B, j + k, D) * 0.5
    kl, z = kl_bound(mu, logvar, j_samples=j)
    expected = torch.zeros(B)
    for i in range(j):
        own = diag_normal_log_prob(z[i], mu[:, i], logvar[:, i])
        mixing = [diag_normal_log_prob(z[i], mu[:, j + m], logvar[:, j + m]) for m in range(k)]
        log_q = torch.logsumexp(torch.stack([own, *mixing]), 0) - math.log(k + 1)
        expected += (gaussian_kl(mu[:, i], logvar[:, i]) - own + log_q) / j
    torch.testing.assert_close(kl, expected)
    with pytest.raises(ValueError, match="J = 3"):
        kl_bound(mu[:, :2], logvar[:, :2], j_samples=3)


@pytest.mark.parametrize("j", [1, 3])
def test_kl_term_bounds_the_true_kl_from_above_and_tightens_with_k(j):
    """A 1-D toy semi-implicit q(z) = ∫ N(z; μ, σ²) q(ψ) dψ with μ = 1.5 ε₁, log σ² = log 0.09 + 0.8 ε₂.
    KL(q ‖ N(0, 1)) by Monte Carlo (z ~ q, log q(z) from 2,000 fresh ψ draws) = 0.26 nats; the expected KL term
    of kl_bound (so ELBO − KL is a lower bound of the ELBO) is above it for every K, falls with K and is within
    0.15 nats of it at K = 50 (0.07 above it here)."""
    gen = torch.Generator().manual_seed(8)
    d, n, m = 1, 8000, 2000

    def draw(rows, count):
        e = torch.randn(rows, count, 2 * d, generator=gen, dtype=torch.float64)
        return 1.5 * e[..., :d], math.log(0.3 ** 2) + 0.8 * e[..., d:]

    mu, logvar = draw(n, 1)
    z = mu[:, 0] + torch.randn(n, d, generator=gen, dtype=torch.float64) * (0.5 * logvar[:, 0]).exp()
    ref_mu, ref_lv = draw(1, m)
    log_q = torch.cat([torch.logsumexp(diag_normal_log_prob(zc[:, None], ref_mu, ref_lv), 1) - math.log(m)
                       for zc in z.split(2000)])
    terms = log_q - diag_normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
    true_kl, se = float(terms.mean()), float(terms.std()) / math.sqrt(n)
    assert 0.2 < true_kl < 0.33
    torch.manual_seed(9)
    means = []
    for k in (0, 1, 5, 50):
        kl, _ = kl_bound(*draw(n, j + k), j_samples=j)
        means.append((float(kl.mean()), float(kl.std()) / math.sqrt(n)))
    for (a, sa), (b, sb) in zip(means, means[1:]):
        assert a - b > 3 * math.hypot(sa, sb), means
    assert means[-1][0] - true_kl > -3 * math.hypot(means[-1][1], se) and means[-1][0] - true_kl < 0.15, means
