"""A trained candidate packaged for use outside the pipeline (what the MLflow registry stores).

>>> model = ScoredClassifier(net, mean, std)                  # doctest: +SKIP
>>> logits = model(images)                                    # (N, C, H, W) uint8 or float in [0, 1]
>>> model.score(images)                                       # (N,) MSP, higher = more in-distribution
"""
from __future__ import annotations

import torch
from torch import nn

from .ood import SCORES


class ScoredClassifier(nn.Module):
    """Network + its input normalisation. ``forward(images)`` -> logits ``(N, num_classes)``, where ``images``
    is ``(N, C, H, W)``, either uint8 in 0..255 or floating point in [0, 1] (the training images' scale).
    ``score(images, kind)`` -> ``(N,)`` OOD scores, higher = more in-distribution; ``kind`` is ``msp`` or
    ``energy`` (those that need only the logits)."""

    KINDS = ("msp", "energy")

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, class_names: list[str] | None = None):
        super().__init__()
        self.net = net.eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.class_names = list(class_names or [])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.net((x - self.mean) / self.std)

    @torch.no_grad()
    def score(self, images: torch.Tensor, kind: str = "msp") -> torch.Tensor:
        if kind not in self.KINDS:
            raise ValueError(f"kind: expected one of {', '.join(self.KINDS)}, got {kind!r}")
        return torch.as_tensor(SCORES.lookup(kind)().score_outputs(self(images), None))
