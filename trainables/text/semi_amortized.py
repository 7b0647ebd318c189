"""Semi-amortised variational inference (SA-VAE, Kim et al. 2018): refine the encoder's Gaussian parameters of
each example by a few steps of stochastic variational inference (SVI) with the decoder held fixed.

:func:`refine` is the one job of this module; the text VAE's ``sa`` posterior
(``trainables.text.posteriors.SemiAmortizedPosterior``) and any other model with a diagonal Gaussian q use it.

Conventions (the choices where Kim et al.'s reference code, harvardnlp/sa-vae, differs are stated):

- Each step is plain SGD on the negative ELBO, ``λ ← λ − lr · g`` with λ = (μ, log σ²) and g its gradient.
  The reference uses momentum 0.5 and 20 steps of lr 1 on the *batch-mean* loss, i.e. a step of lr / B per
  example; here ``neg_elbo`` is the *sum* over the examples, so each example's step is ``lr`` times the gradient
  of its own negative ELBO, whatever the batch size.
- ``max_grad_norm`` clips each example's gradient (μ and log σ² together, one row of 2·D values) to that L2 norm
  before the step (the reference clips the whole batch's μ- and log σ²-gradients to norm 5); None: no clipping.
- ``create_graph=True`` keeps the steps in the autograd graph, so a loss at the refined parameters
  backpropagates through every step, second-order terms included, into the encoder that produced ``mu``,
  ``logvar`` (and into the decoder's weights through the steps): exactly Kim et al.'s Algorithm 1 (with momentum
  0), which the reference computes with finite-difference Hessian-vector products. ``create_graph=False``
  (evaluation, or SVI without end-to-end training) returns detached tensors: no gradient reaches the encoder.
  Read the encoder's gradient from its weights (or ``torch.autograd.grad``), not from ``mu.retain_grad()``: the
  steps' own gradient calls also add to a retained ``mu.grad``.
- Every step calls ``neg_elbo`` afresh, so a Monte-Carlo ELBO draws new noise at each step.
- cuDNN is off during the steps: its RNN kernels have no double backward and refuse any backward in eval mode.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

#: The reference's SVI gradient-norm clip (harvardnlp/sa-vae, ``--svi_max_grad_norm 5``).
MAX_GRAD_NORM = 5.0


def refine(mu: torch.Tensor, logvar: torch.Tensor, neg_elbo: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           steps: int, lr: float, *, create_graph: bool,
           max_grad_norm: float | None = MAX_GRAD_NORM) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` SVI steps from the amortised ``(mu, logvar)`` (module docstring for the conventions).

    Args:
        mu, logvar: [B, D], the encoder's mean and log-variance of q(z|x) = N(mu, diag exp(logvar)).
        neg_elbo: ``neg_elbo(mu, logvar)`` -> scalar, the negative ELBO of the B examples summed, in nats; row b
            of its arguments must affect example b's term only (each example is refined on its own ELBO).
        steps: SVI steps, >= 0; 0 returns ``(mu, logvar)`` unchanged (the same tensors).
        lr: SGD step size, applied to each example's own gradient.
        create_graph: keep the steps differentiable (training) or not (evaluation: detached results).
        max_grad_norm: per-example clip of the gradient's L2 norm; None or <= 0: none.
    Returns:
        The refined ``(mu, logvar)``, [B, D] each.
    """
    if steps < 0:
        raise ValueError(f"refine: steps must be >= 0, got {steps}")
    if steps == 0:
        return mu, logvar
    clip = max_grad_norm is not None and max_grad_norm > 0
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        if not (create_graph and mu.requires_grad):
            mu = mu.detach().requires_grad_()
        if not (create_graph and logvar.requires_grad):
            logvar = logvar.detach().requires_grad_()
        for _ in range(steps):
            g_mu, g_lv = torch.autograd.grad(neg_elbo(mu, logvar), (mu, logvar), create_graph=create_graph)
            if clip:
                norm = torch.linalg.vector_norm(torch.cat([g_mu, g_lv], dim=-1), dim=-1, keepdim=True)
                scale = max_grad_norm / norm.clamp(min=max_grad_norm)
                g_mu, g_lv = g_mu * scale, g_lv * scale
            mu, logvar = mu - lr * g_mu, logvar - lr * g_lv
            if not create_graph:
                mu, logvar = mu.detach().requires_grad_(), logvar.detach().requires_grad_()
    if not create_graph:
        return mu.detach(), logvar.detach()
    return mu, logvar
