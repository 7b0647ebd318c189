"""Standard CNNs as registered fixed models: trained, scored and recorded exactly like searched genotypes.

A standard model travels as its JSON, ``{"args":{...},"model":"<entry>"}`` (:class:`StandardModel`), in the same
``genotype`` field a genotype JSON uses; :mod:`search_space.architecture` maps either to a network.

Every entry of :data:`STANDARD_MODELS` is a CIFAR-style network for NCHW inputs of any size >= 8x8 with 1 or 3
channels, with the interface of :class:`search_space.network.DCSODNet`: ``forward(x)`` -> logits ``(N,
num_classes)``, ``forward(x, return_features=True)`` -> ``(logits, features)`` with the penultimate features ``(N,
feature_dim)`` after global average pooling; attributes ``in_channels`` and ``feature_dim``.

Width convention: ``width`` is the one scale every entry shares. A searched network (DCSODNet) built at
``TrainConfig.width = w`` has stage widths ``w, 2w, 4w``; a standard model built at the same ``w`` has the same
stage widths (times ``widen`` for WideResNet; DenseNet-BC grows ``growth = round(12·w/16)`` channels per layer),
so the two are comparable. At ``width=16`` each entry is its paper's CIFAR model. Trainable parameters of the
canonical models at 10 classes, 3 input channels (:func:`search_space.network.count_params`; published figure
in parentheses):

==========================================  ==========================  =================
model                                       entry and args              parameters
==========================================  ==========================  =================
ResNet-20 (He et al. 2016)                  ``resnet`` depth 20         272,474 (0.27 M)
ResNet-110                                  ``resnet`` depth 110        1,730,714 (1.7 M)
WRN-16-4 (Zagoruyko & Komodakis 2016)       ``wide_resnet`` (defaults)  2,748,890 (2.7 M)
WRN-40-2                                    ``wide_resnet`` 40-2        2,243,546 (2.2 M)
DenseNet-BC-100-12 (Huang et al. 2017)      ``densenet_bc`` (defaults)  769,162 (0.8 M)
==========================================  ==========================  =================

The ResNets use projection shortcuts (1x1 conv + BN, He et al.'s option B) where the shape changes, which adds
2,752 parameters to the paper's zero-padding option A. Convolutions carry no bias; weights are initialised like
torchvision's (Kaiming normal, fan-out, for convolutions; BN weight 1, bias 0; classifier bias 0). Only
``channels_last``-friendly ops are used (Conv2d, BatchNorm2d, ReLU, Dropout, AvgPool2d, AdaptiveAvgPool2d).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .network import PooledClassifier
from .registry import Registry, RegistryError

#: name -> builder(num_classes, in_channels, width, **args) -> StandardNet.
STANDARD_MODELS: Registry = Registry("standard model")

#: The arguments the protocol and the training config give; a :class:`StandardModel` may not fix them.
_GIVEN = ("num_classes", "in_channels")


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def _blocks(depth: int, offset: int, examples: str) -> int:
    """Blocks per stage ``n`` of a depth ``6n + offset``; a ValueError naming that form otherwise."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 6 + offset or (depth - offset) % 6:
        raise ValueError(f"depth: expected 6n+{offset} with n >= 1 ({examples}, ...), got {depth!r}")
    return (depth - offset) // 6


class StandardNet(PooledClassifier):
    """A standard model: ``body`` (post-activation) in the :class:`~search_space.network.PooledClassifier` head,
    initialised like torchvision's."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, in_channels: int):
        super().__init__(body, feature_dim, num_classes, in_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.classifier.bias)


# --------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """Post-activation basic block: ``ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))``; the shortcut is
    the identity, or conv1x1 (stride) + BN where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, out_channels, 3, stride), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = _conv(out_channels, out_channels, 3), nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@STANDARD_MODELS.register("resnet")
def resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16, depth: int = 20) -> StandardNet:
    """He et al. 2016 CIFAR ResNet: stem conv3x3 -> BN -> ReLU to ``width``; 3 stages of ``n = (depth-2)/6``
    basic blocks at ``width, 2·width, 4·width`` channels, stride 2 at the start of stages 2 and 3."""
    _check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
    n = _blocks(depth, 2, "8, 14, 20, 32, 44, 56, 110")
    layers: list[nn.Module] = [_conv(in_channels, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    channels = width
    for stage in range(3):
        out = width * 2**stage
        layers += [BasicBlock(channels if i == 0 else out, out, 2 if stage and i == 0 else 1) for i in range(n)]
        channels = out
    return StandardNet(nn.Sequential(*layers), channels, num_classes, in_channels)


# --------------------------------------------------------------------------------------------- WideResNet
class WideBlock(nn.Module):
    """Pre-activation wide basic block: ``conv3x3(dropout(ReLU(BN(conv3x3(a))))) + shortcut`` with ``a =
    ReLU(BN(x))``; the shortcut is ``x``, or conv1x1 (stride) of ``a`` where the shape changes (as in the
    authors' code)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), _conv(in_channels, out_channels, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(out_channels), _conv(out_channels, out_channels, 3)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _conv(in_channels, out_channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


@STANDARD_MODELS.register("wide_resnet")
def wide_resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16, depth: int = 16, widen: int = 4,
                dropout: float = 0.0) -> StandardNet:
    """Zagoruyko & Komodakis 2016 WRN-``depth``-``widen``: stem conv3x3 to ``width``; 3 stages of ``n =
    (depth-4)/6`` pre-activation wide blocks at ``widen·(width, 2·width, 4·width)`` channels (stride 2 at
    stages 2 and 3); BN -> ReLU before pooling. ``dropout``: probability between the block's two convs."""
    _check_positive(num_classes=num_classes, in_channels=in_channels, width=width, widen=widen)
    n = _blocks(depth, 4, "10, 16, 22, 28, 40")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = [_conv(in_channels, width, 3)]
    channels = width
    for stage in range(3):
        out = width * widen * 2**stage
        layers += [WideBlock(channels if i == 0 else out, out, 2 if stage and i == 0 else 1, float(dropout))
                   for i in range(n)]
        channels = out
    layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return StandardNet(nn.Sequential(*layers), channels, num_classes, in_channels)


# --------------------------------------------------------------------------------------------- DenseNet-BC
class DenseLayer(nn.Module):
    """Bottleneck layer: ``concat(x, conv3x3(ReLU(BN(conv1x1(ReLU(BN(x)))))))``, 4·growth channels in between,
    ``growth`` new channels out."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), _conv(in_channels, 4 * growth, 1),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), _conv(4 * growth, growth, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


@STANDARD_MODELS.register("densenet_bc")
def densenet_bc(num_classes: int = 10, in_channels: int = 3, width: int = 16, depth: int = 100,
                growth: int | None = None, compression: float = 0.5) -> StandardNet:
    """Huang et al. 2017 DenseNet-BC-``depth``-``growth``: stem conv3x3 to ``2·growth``; 3 dense blocks of ``n =
    (depth-4)/6`` bottleneck layers; between blocks a transition BN -> ReLU -> conv1x1 to ``floor(compression ·
    channels)`` -> avgpool 2x2; BN -> ReLU before pooling. ``growth`` default: ``max(1, round(12·width/16))``."""
    _check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
    n = _blocks(depth, 4, "10, 16, 22, 40, 100, 190")
    growth = max(1, round(12 * width / 16)) if growth is None else growth
    _check_positive(growth=growth)
    if not isinstance(compression, (int, float)) or isinstance(compression, bool) or not 0 < compression <= 1:
        raise ValueError(f"compression: expected a fraction in (0, 1], got {compression!r}")
    channels = 2 * growth
    layers: list[nn.Module] = [_conv(in_channels, channels, 3)]
    for block in range(3):
        layers += [DenseLayer(channels + i * growth, growth) for i in range(n)]
        channels += n * growth
        if block < 2:
            out = max(1, int(compression * channels))
            layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), _conv(channels, out, 1), nn.AvgPool2d(2)]
            channels = out
    layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return StandardNet(nn.Sequential(*layers), channels, num_classes, in_channels)


# --------------------------------------------------------------------------------------------- identity
def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


@functools.lru_cache(maxsize=256)
def _validate(name: str, args_json: str) -> None:
    # Built on the meta device: the registry checks names, arguments and the entry's own value checks (depth,
    # widen, ...) without allocating or initialising any weights.
    with torch.device("meta"):
        STANDARD_MODELS.build(name, **json.loads(args_json))


@dataclass(frozen=True)
class StandardModel:
    """A registered standard model with its arguments: ``name`` (an entry of :data:`STANDARD_MODELS`) and
    ``args`` (its keyword arguments other than ``num_classes``/``in_channels``; JSON scalars, stored sorted).

    Validated on construction: an unknown name or argument or a bad value (``StandardModel("resnet", {"depth":
    21})``) is the registry's one-line :class:`~search_space.registry.RegistryError`, before any training.
    ``width`` in ``args`` fixes the scale; without it :meth:`build` takes the caller's (``TrainConfig.width``).
    """

    name: str
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"standard model: expected a model name, got {self.name!r}")
        if not isinstance(self.args, dict):
            raise RegistryError(f"standard model {self.name!r}: args: expected an object, got "
                                f"{type(self.args).__name__}")
        odd = [k for k, v in self.args.items() if not isinstance(k, str) or not _is_scalar(v)]
        if odd:
            raise RegistryError(f"standard model {self.name!r}: args {', '.join(map(str, odd))}: expected string "
                                "keys and JSON scalar values (numbers, strings, booleans, null)")
        given = [k for k in _GIVEN if k in self.args]
        if given:
            raise RegistryError(f"standard model {self.name!r}: args may not set {', '.join(given)} "
                                "(the protocol gives them)")
        object.__setattr__(self, "args", dict(sorted(self.args.items())))
        _validate(self.name, json.dumps(self.args))

    def __hash__(self) -> int:
        return hash(self.to_json())

    @property
    def arch_hash(self) -> str:
        """Readable, filesystem-safe identity: the name, then ``<arg><value>`` per given argument in sorted order,
        joined by ``-`` (``resnet-depth20``, ``wide_resnet-depth16-widen4``). It names the arguments as given,
        so spell a preset's arguments the same way everywhere (``resnet`` and ``resnet-depth20`` are one net)."""
        parts = [self.name] + [f"{k}{json.dumps(v).strip(chr(34))}" for k, v in self.args.items()]
        return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))

    @property
    def label(self) -> str:
        """The paper's name (``ResNet-110``, ``WRN-40-2``, ``DenseNet-BC-100-12``) from the entry's defaults and
        args, `` (width w)`` appended off the canonical 16 when ``args`` fixes it; another entry: its arch_hash."""
        import inspect

        entry = STANDARD_MODELS.get(self.name)
        defaults = {k: p.default for k, p in inspect.signature(entry).parameters.items()} if entry else {}
        a = {**defaults, **self.args}
        names = {"resnet": lambda: f"ResNet-{a['depth']}", "wide_resnet": lambda: f"WRN-{a['depth']}-{a['widen']}",
                 "densenet_bc": lambda: f"DenseNet-BC-{a['depth']}" + (f"-{a['growth']}" if a.get("growth") else "")}
        if self.name not in names:
            return self.arch_hash
        width = self.args.get("width")
        return names[self.name]() + (f" (width {width})" if width not in (None, 16) else "")

    def build(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
        """The network; ``width`` (the shared scale, see the module docstring) unless ``args`` fixes it."""
        args = {k: v for k, v in self.args.items() if k != "width"}
        return STANDARD_MODELS.build(self.name, num_classes=num_classes, in_channels=in_channels,
                                     width=self.args.get("width", width), **args)

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "args": dict(self.args)}

    def to_json(self) -> str:
        """Compact, key-sorted JSON (stable text for the same model and arguments)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(data: Any) -> StandardModel:
        """Parse ``{"model": name, "args": {...}}`` (``args`` optional); a one-line ``ValueError`` otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"standard model: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"model", "args"}
        if unknown:
            raise ValueError(f"standard model: unknown field(s) {sorted(unknown)}; valid: args, model")
        return StandardModel(data.get("model"), data.get("args", {}))

    @staticmethod
    def from_json(text: str) -> StandardModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"standard model: malformed JSON ({err})") from None
        return StandardModel.from_dict(data)
