"""Operator registry: the candidate operations of a cell's operator vertices.

Every operator maps ``in_channels`` (the concatenation of its predecessors' outputs) to
``out_channels`` (the cell width) at unchanged spatial size, in the order conv -> BN -> ReLU.
Register a new operator with :func:`register_op`; the search space, the encoding and the
tests pick it up from :data:`OPS` (the encoding length depends on ``len(OPS)``).
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .registry import Registry

OpBuilder = Callable[[int, int], nn.Module]

#: name -> builder(in_channels, out_channels) -> module. Insertion order is the canonical order
#: used for the default operator assignment and the one-hot encoding.
OPS: Registry = Registry("operator")

#: Decorator registering ``builder(in_channels, out_channels) -> nn.Module`` under a name.
register_op = OPS.register


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _dwsep_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """Depthwise k x k over all concatenated channels, then a pointwise 1 x 1 to the width."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_op("conv1x1")
def conv1x1(in_channels: int, out_channels: int) -> nn.Module:
    return _conv_bn_relu(in_channels, out_channels, 1)


@register_op("conv3x3")
def conv3x3(in_channels: int, out_channels: int) -> nn.Module:
    return _conv_bn_relu(in_channels, out_channels, 3)


@register_op("conv5x5")
def conv5x5(in_channels: int, out_channels: int) -> nn.Module:
    return _conv_bn_relu(in_channels, out_channels, 5)


@register_op("dwconv3x3")
def dwconv3x3(in_channels: int, out_channels: int) -> nn.Module:
    return _dwsep_bn_relu(in_channels, out_channels, 3)


@register_op("dwconv5x5")
def dwconv5x5(in_channels: int, out_channels: int) -> nn.Module:
    return _dwsep_bn_relu(in_channels, out_channels, 5)


def op_names() -> tuple[str, ...]:
    """Registered operator names in canonical order."""
    return tuple(OPS)
