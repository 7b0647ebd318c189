"""Genotype -> ``torch.nn.Module``.

Macro structure (inputs of any size >= 8x8, 1 or 3 channels, NCHW):

* stem: conv3x3(in_channels -> width) -> BN -> ReLU;
* 3 stages of 3 cells; stage ``s`` has width ``width·2^s``. Stages 2 and 3 start with a reduction
  block conv3x3 stride 2 (doubling the width) -> BN -> ReLU, so the spatial size halves twice;
* head: global average pooling -> penultimate features (``4·width`` values) -> linear classifier.

Cell (built from the pruned cell DAG; the cell of stage ``s`` is repeated 3 times, weights not shared):

* every operator vertex maps the channel-concatenation of its predecessors (``n_pred·C`` channels,
  predecessors in index order) straight to ``C`` channels: no separate projection before the op;
  operators are post-activation (conv -> BN -> ReLU, see :mod:`search_space.ops`);
* the leaves are concatenated (``n_leaves·C`` channels) and projected by conv1x1 -> BN to ``C``;
* wiring (``genotype.residual``): with the residual path ``cell(x) = ReLU(x + BN(conv1x1(concat(leaves))))``;
  without it (the thesis's eq. 4.6: the output vertex concatenates the leaves) ``cell(x) =
  ReLU(BN(conv1x1(concat(leaves))))`` — the conv1x1 projection back to ``C`` channels stays in both, so the
  next cell sees a fixed width and both wirings have the same parameters.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .genotype import CELLS_PER_STAGE, Cell, Genotype
from .ops import OPS


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)]


class CellModule(nn.Module):
    """One cell instance with ``channels`` channels in and out, spatial size unchanged."""

    def __init__(self, cell: Cell, channels: int, residual: bool = True):
        super().__init__()
        self.residual = residual
        pruned = cell.pruned()
        self.order = sorted(pruned.live - {0})
        self.preds = {i: pruned.predecessors(i) for i in self.order}
        self.leaves = pruned.leaves()
        self.vertex_ops = nn.ModuleDict(
            {str(i): OPS[cell.ops[i - 1]](len(self.preds[i]) * channels, channels) for i in self.order}
        )
        self.project = nn.Sequential(*_conv_bn(len(self.leaves) * channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = {0: x}
        for i in self.order:
            preds = self.preds[i]
            inp = states[preds[0]] if len(preds) == 1 else torch.cat([states[j] for j in preds], dim=1)
            states[i] = self.vertex_ops[str(i)](inp)
        out = states[self.leaves[0]] if len(self.leaves) == 1 else torch.cat([states[v] for v in self.leaves], 1)
        out = self.project(out)
        return torch.relu(x + out if self.residual else out)


class PooledClassifier(nn.Module):
    """``body`` (NCHW -> ``feature_dim`` channels) -> global average pooling -> linear classifier: the head and the
    ``forward`` contract every network of the project shares. ``forward(x)`` -> logits ``(N, num_classes)``;
    ``forward(x, return_features=True)`` -> ``(logits, features)`` with the penultimate features
    ``(N, feature_dim)``. Inputs: ``(N, in_channels, H, W)`` with ``H, W >= MIN_SIZE``, else a one-line ValueError."""

    MIN_SIZE = 8

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < self.MIN_SIZE:
            raise ValueError(
                f"x: expected shape (N, {self.in_channels}, H, W) with H, W >= {self.MIN_SIZE}, got {tuple(x.shape)}"
            )
        features = torch.flatten(self.pool(self.body(x)), 1)
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


class DCSODNet(PooledClassifier):
    """The network of a genotype (a :class:`PooledClassifier` whose body is the stem and the cell stages)."""

    def __init__(self, genotype: Genotype, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        if num_classes < 1 or in_channels < 1 or width < 1:
            raise ValueError(
                "num_classes, in_channels, width: expected positive integers, "
                f"got {num_classes}, {in_channels}, {width}"
            )
        layers: list[nn.Module] = [*_conv_bn(in_channels, width, 3), nn.ReLU(inplace=True)]
        channels = width
        for stage, cell in enumerate(genotype.cells):
            if stage > 0:
                layers += [*_conv_bn(channels, 2 * channels, 3, stride=2), nn.ReLU(inplace=True)]
                channels *= 2
            layers += [CellModule(cell, channels, genotype.residual) for _ in range(CELLS_PER_STAGE)]
        super().__init__(nn.Sequential(*layers), channels, num_classes, in_channels)
        self.genotype = genotype


def build_network(genotype: Genotype, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> DCSODNet:
    return DCSODNet(genotype, num_classes=num_classes, in_channels=in_channels, width=width)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Forward FLOPs for one input batch of ``input_shape`` as counted by ``torch.utils.flop_counter``
    (a multiply-add counts 2; convolutions and matmuls only, BN/ReLU/pooling not counted)."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(input_shape, dtype=param.dtype, device=param.device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
