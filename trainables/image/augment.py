"""Batch augmentation and normalisation on whatever device the uint8 images live on.

Same semantics on CPU and GPU: pad-4 random crop (zero padding) and horizontal flip with probability 0.5,
drawn per image from a ``torch.Generator`` on the images' device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` (any dtype) -> same shape, each image shifted by up to ``pad`` pixels and
    mirrored left-right with probability 0.5."""
    b, c, h, w = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    else:
        padded = images
        oy = ox = torch.zeros(b, 1, dtype=torch.long, device=dev)
    rows = oy + torch.arange(h, device=dev)  # (B, H)
    cols = ox + torch.arange(w, device=dev)  # (B, W)
    if flip:
        mirror = torch.rand(b, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    channel = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(x / 255 - mean) / std`` with per-channel ``mean``, ``std`` of shape (C,)."""
    x = images.to(dtype) / 255.0
    return (x - mean.to(x)[:, None, None]) / std.to(x)[:, None, None]
