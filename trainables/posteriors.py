"""Variational posteriors q(z|x) for the text VAE, a registry, and the one KL code path they share.

Every posterior maps the encoder summary ``h`` [B, H] to *mixture components*:
``components(h, n) -> (mu [B, C, D], logvar [B, D])`` with ``C`` components of a shared diagonal
covariance. ``q(z|x)`` is (approximated by) the equal-weight mixture ``(1/C) Σ_c N(z; mu_c, diag exp(logvar))``.

- ``gaussian``: ``mu = W_μ h``, ``logvar = W_σ h``, always C = 1 (``n`` is ignored): q is exactly Gaussian.
- ``semi-implicit`` (SIVI, Yin & Zhou 2018; SI-VAE of the seed): the Gaussian parameters are themselves random,
  ``λ = f_φ(x, ε)`` with ε ~ N(0, I_E): ``mu_c = W_μ h + g([h, ε_c])``, ``logvar = W_σ h``; each of the ``n``
  components is one draw ψ_c of the mixing distribution, so ``q(z|x) = ∫ q(z|ψ) q_φ(ψ|x) dψ``.

Training objective (:func:`kl_bound`, the same for both): draw ψ_0 (component 0) and ``K`` more ψ_1..ψ_K,
z_j ~ N(mu_0, σ²) for j = 1..J. The KL term used is ``KL(N(mu_0, σ²) ‖ N(0, I)) − B_K`` with the repulsive term
``B_K = (1/J) Σ_j [log N(z_j; mu_0, σ²) − log q̃_K(z_j)]``, ``q̃_K = (1/(K+1)) Σ_{k=0..K} N(·; mu_k, σ²)``.
Its expectation is ``E[log q̃_K(z) − log p(z)]``, so ELBO − (this KL) is the SIVI lower bound L_K, which tends to
the true ELBO as K → ∞. With K = 0 (or a single component), B_K = 0 exactly and the term is the analytic
Gaussian KL — the Gaussian posterior *is* this code path with K = 0.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from search_space.registry import Registry

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
    """log (1/C) Σ_c N(z; mu_c, diag exp(logvar)).

    Shapes: ``z`` [S, B, D] (S samples per row), ``mu`` [B, C, D], ``logvar`` [B, D] -> [S, B].
    """
    lp = diag_normal_log_prob(z.unsqueeze(2), mu.unsqueeze(0), logvar[None, :, None, :])  # [S, B, C]
    return torch.logsumexp(lp, dim=2) - math.log(mu.shape[1])


def sample_component(mu: torch.Tensor, logvar: torch.Tensor, n: int, component: int = 0) -> torch.Tensor:
    """``n`` reparameterised draws z ~ N(mu[:, component], σ²): [n, B, D]."""
    std = (0.5 * logvar).exp()
    eps = torch.randn((n, *std.shape), dtype=std.dtype, device=std.device)
    return mu[:, component].unsqueeze(0) + eps * std.unsqueeze(0)


def kl_bound(mu: torch.Tensor, logvar: torch.Tensor, j_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL term of the training objective and the z samples to reconstruct from.

    Args:
        mu: [B, K+1, D] component means; component 0 is ψ_0 (z is drawn from it), 1..K the mixing draws.
        logvar: [B, D] shared log-variance.
        j_samples: J, z-samples per row.
    Returns:
        ``(kl [B], z [J, B, D])`` with ``kl = KL(N(mu_0, σ²) ‖ N(0, I)) − B_K`` (module docstring), nats.
    """
    z = sample_component(mu, logvar, j_samples)
    kl = gaussian_kl(mu[:, 0], logvar)
    if mu.shape[1] > 1:
        repulsive = (diag_normal_log_prob(z, mu[:, 0].unsqueeze(0), logvar.unsqueeze(0))
                     - mixture_log_prob(z, mu, logvar)).mean(0)
        kl = kl - repulsive
    return kl, z


class _GaussianHead(nn.Module):
    """The parameters every posterior has: ``mu = W_μ h``, ``logvar = W_σ h``."""

    def __init__(self, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)


@POSTERIORS.register("gaussian")
class GaussianPosterior(_GaussianHead):
    """Diagonal Gaussian q(z|x) = N(W_μ h, diag exp(W_σ h)); one component whatever ``n`` is."""

    def components(self, h: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h).unsqueeze(1), self.logvar(h)


@POSTERIORS.register("semi-implicit")
class SemiImplicitPosterior(_GaussianHead):
    """Semi-implicit q(z|x): ``mu_c = W_μ h + g([h, ε_c])``, ε_c ~ N(0, I_E), g a one-hidden-layer MLP
    (``noise_dim`` = E, ``mix_hidden`` units); ``n`` components = ``n`` independent draws of ε."""

    def __init__(self, hidden_dim: int, latent_dim: int, noise_dim: int = 8, mix_hidden: int = 64) -> None:
        super().__init__(hidden_dim, latent_dim)
        self.noise_dim = noise_dim
        self.mix = nn.Sequential(nn.Linear(hidden_dim + noise_dim, mix_hidden), nn.Tanh(),
                                 nn.Linear(mix_hidden, latent_dim))

    def components(self, h: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if n < 1:
            raise ValueError(f"semi-implicit posterior: need n >= 1 components, got {n}")
        eps = torch.randn((h.shape[0], n, self.noise_dim), dtype=h.dtype, device=h.device)
        shift = self.mix(torch.cat([h.unsqueeze(1).expand(-1, n, -1), eps], dim=-1))
        return self.mu(h).unsqueeze(1) + shift, self.logvar(h)


def make_posterior(name: str, hidden_dim: int, latent_dim: int, **options) -> nn.Module:
    """Instantiate the registered posterior ``name`` (any error: a one-line ``RegistryError``)."""
    return POSTERIORS.build(name, hidden_dim=hidden_dim, latent_dim=latent_dim, **options)
