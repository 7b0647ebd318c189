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
    is ``(N, C, H, W)`` (tensor or numpy), integer pixels 0..255 or floats in [0, 1] (:meth:`pixels`).
    ``score(images, kind)`` -> ``(N,)`` OOD scores, higher = more in-distribution; ``kind`` is ``msp`` or
    ``energy`` (those that need only the logits)."""

    KINDS = ("msp", "energy")

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, class_names: list[str] | None = None):
        super().__init__()
        self.net = net.eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.class_names = list(class_names or [])

    def forward(self, images) -> torch.Tensor:
        return self.net((self.pixels(images) - self.mean) / self.std)

    def pixels(self, images) -> torch.Tensor:
        """``images`` (a tensor or numpy array ``(N, C, H, W)``) as float32 in [0, 1] on the model's device:
        integers (any integer dtype) are pixel values 0..255, floats must already be in [0, 1]. Anything else is
        a one-line ``ValueError``, never a silently wrong number (e.g. sklearn's 0..16 digits passed unscaled)."""
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images: expected shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError("images: expected at least one image")
        low, high = float(x.min()), float(x.max())
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"images: expected integer pixels 0..255 or floats in [0, 1], got dtype {x.dtype}")
        if not x.is_floating_point():
            if low < 0 or high > 255:
                raise ValueError(f"images: integer pixels must be in 0..255, got values from {low:g} to {high:g}")
            return x.to(self.mean.device, torch.float32) / 255.0
        if not (low >= -1e-6 and high <= 1 + 1e-6):  # NaN fails too
            raise ValueError(f"images: float pixels must be in [0, 1], got values from {low:g} to {high:g}; "
                             "pass integers 0..255 or divide by the data's maximum (sklearn's digits: / 16)")
        return x.to(self.mean.device, torch.float32)

    @torch.no_grad()
    def score(self, images: torch.Tensor, kind: str = "msp") -> torch.Tensor:
        if kind not in self.KINDS:
            raise ValueError(f"kind: expected one of {', '.join(self.KINDS)}, got {kind!r}")
        return torch.as_tensor(SCORES.lookup(kind)().score_outputs(self(images), None))
