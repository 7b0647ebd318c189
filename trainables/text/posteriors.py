"""Variational posteriors q(z|x) for the text VAE, a registry, and the one KL code path they share.

Every posterior maps the encoder summary ``h`` [B, H] to *mixture components*:
``components(h, n) -> (mu [B, C, D], logvar [B, C, D])``, component c being the diagonal Gaussian
``N(mu_c, diag exp(logvar_c))``; ``q(z|x)`` is (approximated by) their equal-weight mixture.

- ``gaussian``: ``mu = W_μ h``, ``logvar = W_σ h``, always C = 1 (``n`` is ignored): q is exactly Gaussian.
- ``semi-implicit`` (SIVI, Yin & Zhou 2018; the thesis's eq. 3.10–3.11): the Gaussian's parameters
  ψ = [μ, σ²] are themselves random, ψ = T_φ(x, ε) with ε ~ N(0, I_E):
  ``[mu_c, logvar_c] = [W_μ h, W_σ h] + g([h, ε_c])`` (g an MLP, the implicit mixing network), so both the mean
  and the variance depend on the noise. Each of the ``n`` components is one independent draw ψ_c of the mixing
  distribution q_φ(ψ|x), and ``q(z|x) = ∫ N(z; μ, σ²) q_φ(ψ|x) dψ``.

Training objective (:func:`kl_bound`, the same for both; Yin & Zhou's Algorithm 1): every z-sample j = 1..J draws
its own ψ_j (component j−1) and z_j ~ N(ψ_j); K further draws ψ̃_1..ψ̃_K (the components after the first J) are
shared by the J samples. The KL term used is

    kl = (1/J) Σ_j [KL(N(ψ_j) ‖ N(0, I)) − B_j],   B_j = log N(z_j; ψ_j) − log q̃_j(z_j),
    q̃_j = (1/(K+1)) [N(·; ψ_j) + Σ_k N(·; ψ̃_k)],

i.e. the Monte-Carlo estimate of ``E[log q̃_j(z_j) − log p(z_j)]`` with the log N(z_j; ψ_j) − log p(z_j) part
integrated analytically (lower variance); ``B_j`` is the repulsive term. ELBO − (this KL) is the SIVI lower
bound L_K: its KL is an *upper* bound of KL(q(z|x) ‖ p(z)) in expectation, non-increasing in K and tending to
it as K → ∞. With K = 0 (or a single component), every B_j = 0 exactly and the term is the analytic Gaussian
KL — the Gaussian posterior *is* this code path with K = 0 (its one component serves all J samples).

Refinement: ``refine(mu, logvar, neg_elbo, create_graph=...)`` turns the amortised components into the ones the
model uses for the batch at hand; ``neg_elbo(mu, logvar)`` [B, C, D] -> scalar is the batch's negative objective
summed over the sentences, computed by the model (whose decoder the posterior does not know). Amortised
posteriors (``gaussian``, ``semi-implicit``) return the components unchanged.

- ``sa`` (SA-VAE, Kim et al. 2018): the Gaussian posterior whose (μ, log σ²) of each sentence are refined by
  ``steps`` SVI steps of size ``lr`` on that sentence's objective (``trainables.text.semi_amortized.refine``);
  differentiably while the model trains (the encoder learns through the steps), detached in evaluation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from search_space.registry import Registry
from trainables.text.semi_amortized import refine

#: name -> posterior class ``cls(hidden_dim, latent_dim, **options)`` (an ``nn.Module``).
POSTERIORS = Registry("posterior")

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) ‖ N(0, I)) in nats, summed over the last dim: [..., D] -> [...]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def diag_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) in nats, summed over the last dim (broadcasting): [..., D] -> [...]."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def mixture_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/C) Σ_c N(z; mu_c, diag exp(logvar_c)).

    Shapes: ``z`` [S, B, D] (S samples per row), ``mu`` and ``logvar`` [B, C, D] -> [S, B]."""
    lp = diag_normal_log_prob(z.unsqueeze(2), mu.unsqueeze(0), logvar.unsqueeze(0))  # [S, B, C]
    return torch.logsumexp(lp, dim=2) - math.log(mu.shape[1])


def sample_components(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """One reparameterised draw z_c ~ N(mu_c, σ_c²) from each component: [B, C, D] -> [C, B, D]."""
    mu, std = mu.transpose(0, 1), (0.5 * logvar).exp().transpose(0, 1)
    return mu + torch.randn_like(std) * std


def gaussian_kl_to(mu: torch.Tensor, logvar: torch.Tensor, p_mu: torch.Tensor, p_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) ‖ N(p_mu, e^p_logvar)) in nats, summed over the last dim (broadcasting): [..., D] -> [...]."""
    return 0.5 * (p_logvar - logvar + (logvar.exp() + (mu - p_mu).pow(2)) / p_logvar.exp() - 1.0).sum(-1)


def kl_bound(mu: torch.Tensor, logvar: torch.Tensor, j_samples: int = 1,
             prior: tuple[torch.Tensor, torch.Tensor] | None = None,
             name: str = "kl_bound") -> tuple[torch.Tensor, torch.Tensor]:
    """The KL term of the training objective and the z samples to reconstruct from (module docstring).

    Args:
        mu, logvar: [B, C, D] components. C = 1: one component (a Gaussian posterior) used by all J samples.
            C > 1: components 0..J−1 are the J samples' own draws ψ_j, components J..C−1 the K = C − J shared
            mixing draws ψ̃_k (C >= J required).
        j_samples: J, z-samples per row.
        prior: ``(p_mu, p_logvar)`` [B, D] of a diagonal Gaussian prior in place of N(0, I) (a learned prior,
            e.g. the dialog CVAE's p(z|c)): the analytic part becomes KL(N(ψ_j) ‖ prior); the repulsive term
            does not involve the prior.
        name: the function an error message names.
    Returns:
        ``(kl [B], z [J, B, D])``, kl in nats; z_j is drawn from component j (from component 0 when C = 1).
    """
    c = mu.shape[1]
    if c == 1:
        own_mu, own_lv = mu.expand(-1, j_samples, -1), logvar.expand(-1, j_samples, -1)
    elif c >= j_samples:
        own_mu, own_lv = mu[:, :j_samples], logvar[:, :j_samples]
    else:
        raise ValueError(f"{name}: {c} components cannot give each of the J = {j_samples} samples its own draw")
    z = sample_components(own_mu, own_lv)  # [J, B, D]
    if prior is None:
        kl = gaussian_kl(own_mu, own_lv).mean(1)  # [B]
    else:
        kl = gaussian_kl_to(own_mu, own_lv, prior[0].unsqueeze(1), prior[1].unsqueeze(1)).mean(1)
    if c > j_samples:  # K >= 1 shared mixing draws: the repulsive term of each sample
        own_lp = diag_normal_log_prob(z, own_mu.transpose(0, 1), own_lv.transpose(0, 1))  # [J, B]
        mix_lp = diag_normal_log_prob(z.unsqueeze(2), mu[None, :, j_samples:], logvar[None, :, j_samples:])
        log_q = torch.logsumexp(torch.cat([own_lp.unsqueeze(2), mix_lp], dim=2), dim=2) - math.log(c - j_samples + 1)
        kl = kl - (own_lp - log_q).mean(0)
    return kl, z


class _GaussianHead(nn.Module):
    """The parameters every posterior has: ``mu = W_μ h``, ``logvar = W_σ h``."""

    def __init__(self, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def refine(self, mu: torch.Tensor, logvar: torch.Tensor, neg_elbo, *,
               create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The components [B, C, D] the model uses for this batch: an amortised posterior's, unchanged."""
        return mu, logvar


@POSTERIORS.register("gaussian")
class GaussianPosterior(_GaussianHead):
    """Diagonal Gaussian q(z|x) = N(W_μ h, diag exp(W_σ h)); one component whatever ``n`` is."""

    def components(self, h: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h).unsqueeze(1), self.logvar(h).unsqueeze(1)


@POSTERIORS.register("semi-implicit")
class SemiImplicitPosterior(_GaussianHead):
    """Semi-implicit q(z|x): ψ_c = [mu_c, logvar_c] = [W_μ h, W_σ h] + g([h, ε_c]), ε_c ~ N(0, I_E), g a
    one-hidden-layer MLP (``noise_dim`` = E, ``mix_hidden`` units) whose 2·D outputs shift the mean and the
    log-variance; ``n`` components = ``n`` independent draws of ε."""

    def __init__(self, hidden_dim: int, latent_dim: int, noise_dim: int = 8, mix_hidden: int = 64) -> None:
        super().__init__(hidden_dim, latent_dim)
        self.noise_dim = noise_dim
        self.mix = nn.Sequential(nn.Linear(hidden_dim + noise_dim, mix_hidden), nn.Tanh(),
                                 nn.Linear(mix_hidden, 2 * latent_dim))

    def components(self, h: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if n < 1:
            raise ValueError(f"semi-implicit posterior: need n >= 1 components, got {n}")
        eps = torch.randn((h.shape[0], n, self.noise_dim), dtype=h.dtype, device=h.device)
        shift_mu, shift_lv = self.mix(torch.cat([h.unsqueeze(1).expand(-1, n, -1), eps], dim=-1)).chunk(2, dim=-1)
        return self.mu(h).unsqueeze(1) + shift_mu, self.logvar(h).unsqueeze(1) + shift_lv


@POSTERIORS.register("sa")
class SemiAmortizedPosterior(GaussianPosterior):
    """SA-VAE's q(z|x) (Kim et al. 2018): the Gaussian posterior's N(W_μ h, diag exp(W_σ h)) refined per sentence
    by ``steps`` SVI steps of size ``lr`` on the model's objective (:func:`~trainables.text.semi_amortized.refine`,
    plain SGD, each sentence's gradient clipped to norm 5); ``steps`` = 0 is the Gaussian posterior."""

    def __init__(self, hidden_dim: int, latent_dim: int, steps: int = 10, lr: float = 0.1) -> None:
        super().__init__(hidden_dim, latent_dim)
        if steps < 0:
            raise ValueError(f"steps (SVI steps) must be >= 0, got {steps}")
        if not lr > 0:
            raise ValueError(f"lr (SVI step size) must be > 0, got {lr}")
        self.steps, self.lr = steps, lr

    def refine(self, mu: torch.Tensor, logvar: torch.Tensor, neg_elbo, *,
               create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` SVI steps on ``neg_elbo`` from the one component [B, 1, D]; differentiable through the steps
        with ``create_graph`` (training), detached without (evaluation)."""
        m, lv = refine(mu[:, 0], logvar[:, 0], lambda m, lv: neg_elbo(m.unsqueeze(1), lv.unsqueeze(1)),
                       self.steps, self.lr, create_graph=create_graph)
        return m.unsqueeze(1), lv.unsqueeze(1)


def make_posterior(name: str, hidden_dim: int, latent_dim: int, **options) -> nn.Module:
    """Instantiate the registered posterior ``name`` (any error: a one-line ``RegistryError``)."""
    return POSTERIORS.build(name, hidden_dim=hidden_dim, latent_dim=latent_dim, **options)
