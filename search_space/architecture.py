"""The one place that maps an architecture to a network: a searched :class:`~search_space.genotype.Genotype` or a
registered :class:`~search_space.standard_models.StandardModel`, each given as the object, its dict or its JSON.

An architecture travels as its JSON in the ``genotype`` field (Tune configs, history rows, records): an object
with a ``"model"`` key is a standard model (``{"args":{"depth":20},"model":"resnet"}``), any other object a
genotype (``{"cells":[...],"k":6,"residual":true}``). ``width`` is the shared scale (``TrainConfig.width``): the
stage widths of a genotype's network, and of a standard model that does not fix ``width`` in its args.
"""
from __future__ import annotations

import json
from typing import Any

from torch import nn

from .genotype import Genotype
from .network import build_network, count_flops, count_params
from .standard_models import StandardModel

Architecture = Genotype | StandardModel


def parse_architecture(value: Any) -> Architecture:
    """A Genotype or StandardModel (returned as is), a dict or a JSON string -> the architecture; a one-line
    ``ValueError`` naming the problem otherwise."""
    if isinstance(value, (Genotype, StandardModel)):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"architecture: malformed JSON ({err})") from None
        if not isinstance(value, dict):
            raise ValueError(f"architecture: expected a JSON object, got {type(value).__name__}")
    if isinstance(value, dict):
        return StandardModel.from_dict(value) if "model" in value else Genotype.from_dict(value)
    raise ValueError("architecture: expected a Genotype, StandardModel, dict or JSON string, "
                     f"got {type(value).__name__}")


def architecture_json(value: Any) -> str:
    """The canonical (compact, key-sorted) JSON of an architecture."""
    return parse_architecture(value).to_json()


def arch_hash_of(value: Any) -> str:
    """The architecture's identity: ``Genotype.arch_hash`` (16 hex digits) or ``StandardModel.arch_hash``
    (readable, e.g. ``resnet-depth20``); both are filesystem-safe."""
    return parse_architecture(value).arch_hash


def build_model(value: Any, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    """The untrained network of an architecture (``forward(x, return_features=False)``, ``in_channels``,
    ``feature_dim``: see :class:`search_space.network.DCSODNet`)."""
    arch = parse_architecture(value)
    if isinstance(arch, Genotype):
        return build_network(arch, num_classes=num_classes, in_channels=in_channels, width=width)
    return arch.build(num_classes=num_classes, in_channels=in_channels, width=width)


def describe_architecture(value: Any, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                          width: int = 32) -> dict:
    """``arch_hash``, trainable ``params`` and forward ``flops`` (batch 1, ``in_channels x input_size^2``; see
    :func:`search_space.network.count_flops`) of an architecture's network, with the shape it was measured at."""
    arch = parse_architecture(value)
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, width=width)
    return {
        "arch_hash": arch.arch_hash,
        "params": count_params(model),
        "flops": count_flops(model, (1, in_channels, input_size, input_size)),
        "input_shape": [in_channels, input_size, input_size],
        "num_classes": num_classes,
        "width": width,
    }


def describe(genotype: Genotype, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 32) -> dict:
    """:func:`describe_architecture` of a genotype, plus its ``k`` and the number of live operators per cell."""
    return {**describe_architecture(genotype, num_classes, in_channels, input_size, width), "k": genotype.k,
            "live_operators": [len(c.live) - 1 for c in genotype.cells]}
