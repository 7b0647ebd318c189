"""The training machinery the text VAE and the dialog CVAE share (plain PyTorch).

- :class:`AnnealedTrainConfig`: the settings both trainers read (β schedule, the semi-implicit K, aggressive
  training, evaluation sizes); each trainer's config adds its own.
- :class:`AnnealedTraining`: one run's Adam optimisers (encoder side and decoder side), its β schedule over the
  whole run with K annealed in sync (``K_t = k_min + round((k_max − k_min) · level_t)``), the iteration count and
  the aggressive switch (off for good after the first epoch whose validation I(x, z) does not exceed the best so
  far).
- :func:`optimizer_step` (one update with gradient clipping) and :func:`aggressive_encoder_steps` (He et al.
  2019: encoder-only updates on random training batches before each outer step).

A model trained here has ``encoder_parameters()`` and ``decoder_parameters()`` and returns ``{"loss": ...}``
when called with ``(batch, beta, k, j_samples)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.text.beta_schedules import make_schedule


@dataclass
class AnnealedTrainConfig:
    """Settings shared by the VAE trainers (lr in Adam units). ``schedule``: a schedule entry (a name of
    ``trainables.text.beta_schedules.SCHEDULES``, optionally ``name@β_max``); ``ratio`` = R of each cyclical cycle,
    ``cycles`` = M, ``monotonic_ratio`` = R of the monotonic warm-up, ``beta_max`` = the largest β."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "cyclical"
    cycles: int = 4
    ratio: float = 0.5
    monotonic_ratio: float = 0.25
    beta_max: float = 1.0
    shape: str = "linear"
    k_max: int = 0
    k_min: int = 0
    j_samples: int = 1
    aggressive: bool = False
    aggressive_max_steps: int = 30
    aggressive_window: int = 5
    clip: float = 5.0
    seed: int = 0
    eval_batch_size: int = 128
    eval_components: int = 20
    mi_rows: int = 500


@dataclass
class TrainingResult:
    """Per-epoch history (dicts), final test metrics and the trained model (on the training device)."""

    history: list[dict[str, Any]]
    test: dict[str, Any]
    model: nn.Module


def optimizer_step(optimizers: list[torch.optim.Optimizer], params: list[nn.Parameter], loss: torch.Tensor,
                   clip: float) -> torch.Tensor:
    """One update; returns the gradient norm before clipping (after DDP's all-reduce, so equal on all ranks)."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    for opt in optimizers:
        opt.step()
    return norm


def all_reduce_sum(values: list[float], world: int) -> list[float]:
    """Element-wise sum over ranks (identity when ``world == 1``)."""
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def aggressive_encoder_steps(net: nn.Module, model: nn.Module, train: list[tuple[Any, float]],
                             opt_enc: torch.optim.Optimizer, beta: float, k: int, cfg: AnnealedTrainConfig,
                             rng: np.random.Generator, world: int) -> int:
    """Encoder-only updates on random training batches until the windowed loss stops falling or the cap; returns
    the number of inner steps taken. Under DDP the rng draws the same batch on every rank and the stopping
    test uses the loss summed over ranks, so all ranks take the same number of steps."""
    params = model.encoder_parameters()
    losses: list[float] = []
    w = cfg.aggressive_window
    for step in range(1, cfg.aggressive_max_steps + 1):
        batch, share = train[int(rng.integers(len(train)))]
        loss = net(batch, beta, k, cfg.j_samples)["loss"] * (share * world)
        optimizer_step([opt_enc], params, loss, cfg.clip)
        losses.append(float(loss.detach()))
        if step % w == 0 and step >= 2 * w:
            recent, before = all_reduce_sum([float(np.mean(losses[-w:])), float(np.mean(losses[-2 * w:-w]))], world)
            if recent >= before:
                return step
    return cfg.aggressive_max_steps


class AnnealedTraining:
    """The optimisers, β/K schedule, iteration count and aggressive switch of one training of ``model`` on
    ``train_size`` training rows (module docstring)."""

    def __init__(self, model: nn.Module, cfg: AnnealedTrainConfig, train_size: int) -> None:
        self.cfg = cfg
        self.opt_enc = torch.optim.Adam(model.encoder_parameters(), lr=cfg.lr)
        self.opt_dec = torch.optim.Adam(model.decoder_parameters(), lr=cfg.lr)
        self.all_params = list(model.parameters())
        self.total = cfg.epochs * math.ceil(train_size / cfg.batch_size)
        self.beta_of = make_schedule(cfg.schedule, self.total, cycles=cfg.cycles, ratio=cfg.ratio,
                                     monotonic_ratio=cfg.monotonic_ratio, beta_max=cfg.beta_max, shape=cfg.shape)
        self.aggressive, self.best_mi = cfg.aggressive, -math.inf
        self.t = 0

    def next_iteration(self) -> tuple[float, int]:
        """Count one outer iteration t; its ``(β_t, K_t)``."""
        self.t += 1
        cfg = self.cfg
        return self.beta_of(self.t), cfg.k_min + round((cfg.k_max - cfg.k_min) * self.beta_of.level(self.t))

    def update(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """The outer update: the decoder side only while aggressive (the encoder had its inner steps), else
        every weight; the gradient norm before clipping."""
        if self.aggressive:
            return optimizer_step([self.opt_dec], model.decoder_parameters(), loss, self.cfg.clip)
        return optimizer_step([self.opt_enc, self.opt_dec], self.all_params, loss, self.cfg.clip)

    def end_epoch(self, val_mi: float) -> None:
        """Switch aggressive training off for good once the validation I(x, z) stops exceeding the best."""
        if self.aggressive:
            if val_mi <= self.best_mi:
                self.aggressive = False
            self.best_mi = max(self.best_mi, val_mi)
