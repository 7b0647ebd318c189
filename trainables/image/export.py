"""A trained candidate packaged for use outside the pipeline (what the MLflow registry stores).

>>> model = ScoredClassifier(net, mean, std)                  # doctest: +SKIP
>>> logits = model(images)                                    # (N, C, H, W) uint8 or float in [0, 1]
>>> model.score(images)                                       # (N,) MSP, higher = more in-distribution
>>> model.outputs(images)                                     # logits, predicted class, MSP and energy at once

MLflow's ``python_function`` flavour (``mlflow.pyfunc.load_model(uri).predict(images, params)`` and
``mlflow models serve``) is :class:`ServedClassifier`, loaded by :func:`_load_pyfunc` from the files
:func:`save_served` writes (weights as a state dict, the architecture as JSON: no pickled code).

Pixel rule of the served model (params ``{"pixels": ...}``; JSON has no dtypes, so it is stated here):

- ``auto`` (default): integers (an integer dtype; in JSON, numbers written without a decimal point, which the
  scoring server reads as int64) are pixel values 0..255; floats (in JSON, numbers with a decimal point) must
  lie in [0, 1]. Integers whose maximum is exactly 1 are refused as ambiguous (a [0, 1] image written by a
  client that prints ``1.0`` as ``1``, or an almost black 0..255 image?); all-zero images are black either way.
- ``0-255``: every value is a pixel value 0..255 and must be a whole number (``128.0`` is fine, ``12.5`` is not).
- ``0-1``: every value must lie in [0, 1] (integers 0 and 1 included).

Anything else (NaN, values out of range, floats 0..16 such as sklearn's unscaled digits, a wrong shape) is a
one-line error, never a silently wrong number; the scoring server answers it with HTTP 400.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.image.ood import SCORES

#: Pixel scales of :meth:`ScoredClassifier.pixels`: ``dtype`` is ``forward``'s rule, the others the served rule.
PIXEL_SCALES = ("dtype", "auto", "0-255", "0-1")
#: The ``pixels`` values the served model accepts (its MLflow params schema).
SERVED_PIXEL_SCALES = ("auto", "0-255", "0-1")
#: Files of the served (``python_function``) flavour inside its MLflow model directory.
SERVED_WEIGHTS, SERVED_RECIPE = "weights.pt", "model.json"
#: Keys of :meth:`ScoredClassifier.outputs` and of the served model's prediction.
OUTPUT_KEYS = ("logits", "predicted_class", "score_msp", "score_energy")


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

    def pixels(self, images, scale: str = "dtype") -> torch.Tensor:
        """``images`` (a tensor or numpy array ``(N, C, H, W)``) as float32 in [0, 1] on the model's device.
        ``scale`` (:data:`PIXEL_SCALES`): ``dtype`` (``forward``'s rule): integers (any integer dtype) are pixel
        values 0..255, floats must already be in [0, 1]; ``auto``, ``0-255`` and ``0-1`` are the served
        model's rule (module docstring). Anything else is a one-line ``ValueError``, never a silently wrong
        number (e.g. sklearn's 0..16 digits passed unscaled)."""
        if scale not in PIXEL_SCALES:
            raise ValueError(f"pixels: expected one of {', '.join(PIXEL_SCALES)}, got {scale!r}")
        x = self._checked(images)
        return unit_pixels(x, scale).to(self.mean.device, torch.float32)

    def _checked(self, images) -> torch.Tensor:
        """``images`` as a real-valued tensor of shape ``(N, C, H, W)``, N >= 1, C the model's channels."""
        try:
            x = torch.as_tensor(images)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"images: expected a numeric array (N, {self.mean.shape[1]}, H, W), "
                             f"got {type(images).__name__} that is not one (ragged lists or strings?)") from None
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images: expected shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError("images: expected at least one image")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"images: expected integer pixels 0..255 or floats in [0, 1], got dtype {x.dtype}")
        return x

    @torch.no_grad()
    def score(self, images: torch.Tensor, kind: str = "msp") -> torch.Tensor:
        if kind not in self.KINDS:
            raise ValueError(f"kind: expected one of {', '.join(self.KINDS)}, got {kind!r}")
        return torch.as_tensor(SCORES.lookup(kind)().score_outputs(self(images), None))

    @torch.no_grad()
    def outputs(self, images, scale: str = "dtype") -> dict[str, np.ndarray]:
        """One forward pass -> numpy arrays (:data:`OUTPUT_KEYS`): ``logits`` (N, num_classes) float32,
        ``predicted_class`` (N,) int64 (the arg max), ``score_msp`` and ``score_energy`` (N,) float64 (higher =
        more in-distribution, as :meth:`score`). ``scale`` as in :meth:`pixels`."""
        logits = self.net((self.pixels(images, scale) - self.mean) / self.std).float().cpu()
        scores = {f"score_{kind}": SCORES.lookup(kind)().score_outputs(logits, None) for kind in self.KINDS}
        return {"logits": logits.numpy(), "predicted_class": logits.argmax(1).numpy(), **scores}


def unit_pixels(x: torch.Tensor, scale: str) -> torch.Tensor:
    """Pixels ``x`` (a real-valued tensor) on the ``scale`` of :data:`PIXEL_SCALES` -> float tensor in [0, 1]
    (float32 divisions for integers: the same numbers as ``x / 255`` in float64 rounded to float32)."""
    integer = not x.is_floating_point()
    low, high = float(x.min()), float(x.max())
    if scale == "auto" and integer and high == 1 and low >= 0:
        raise ValueError("images: integer pixels whose maximum is 1 are ambiguous (0..255, or [0, 1] written "
                         "without decimals); pass params {\"pixels\": \"0-255\"} or {\"pixels\": \"0-1\"}")
    if scale in ("dtype", "auto"):
        scale = "0-255" if integer else "[0, 1] by dtype"
    if scale == "0-255":
        if not (low >= 0 and high <= 255):  # NaN fails too
            kind = "integer pixels" if integer else "pixels (pixels='0-255')"
            raise ValueError(f"images: {kind} must be in 0..255, got values from {low:g} to {high:g}")
        if not integer and not bool((x == x.round()).all()):
            raise ValueError("images: pixels='0-255' needs whole numbers 0..255, got fractional values")
        return x.to(torch.float32) / 255.0
    if not (low >= -1e-6 and high <= 1 + 1e-6):  # NaN fails too
        if scale == "0-1":
            raise ValueError(f"images: pixels='0-1' needs values in [0, 1], got values from {low:g} to {high:g}")
        raise ValueError(f"images: float pixels must be in [0, 1], got values from {low:g} to {high:g}; "
                         "pass integers 0..255 or divide by the data's maximum (sklearn's digits: / 16)")
    return x


class ServedClassifier:
    """MLflow ``python_function`` implementation of a :class:`ScoredClassifier` (what ``mlflow.pyfunc`` and
    ``mlflow models serve`` call). ``predict(images, params)``: ``images`` ``(N, C, H, W)`` as a numpy array, a
    torch tensor or nested lists (the scoring server's JSON ``{"inputs": [...]}``); ``params["pixels"]`` one of
    :data:`SERVED_PIXEL_SCALES` (default ``auto``, see the module docstring). Returns :meth:`ScoredClassifier.outputs`
    (a dict of arrays; served as ``{"predictions": {"logits": [[...]], "predicted_class": [...], ...}}``). Bad
    input raises an ``MlflowException`` (INVALID_PARAMETER_VALUE: HTTP 400) with a one-line message."""

    def __init__(self, model: ScoredClassifier):
        self.model = model.eval()

    def predict(self, data, params: dict | None = None) -> dict[str, np.ndarray]:
        from mlflow.exceptions import MlflowException

        scale = (params or {}).get("pixels") or "auto"
        try:
            if scale not in SERVED_PIXEL_SCALES:
                raise ValueError(f"params pixels: expected one of {', '.join(SERVED_PIXEL_SCALES)}, got {scale!r}")
            if not isinstance(data, (np.ndarray, torch.Tensor, list)):
                raise ValueError(f"images: expected an array (N, C, H, W) (JSON: {{\"inputs\": [...]}}), "
                                 f"got {type(data).__name__}")
            return self.model.outputs(data, scale)
        except ValueError as err:
            raise MlflowException.invalid_parameter_value(str(err)) from None


def architecture_recipe(model: ScoredClassifier) -> dict:
    """What rebuilds ``model``'s network without pickles: ``architecture`` (genotype JSON), ``num_classes``,
    ``in_channels``, ``width`` (a DCSODNet's penultimate features are ``4·width`` values) and ``class_names``.
    A network that does not say its genotype (not a :class:`search_space.network.DCSODNet`) is a ValueError."""
    net = model.net
    genotype = getattr(net, "genotype", None)
    if genotype is None or not hasattr(genotype, "to_json"):
        raise ValueError(f"model.net: the served flavour rebuilds the network from its genotype; "
                         f"{type(net).__name__} has none (expected a DCSODNet from search_space.build_model)")
    return {"architecture": genotype.to_json(), "num_classes": int(net.classifier.out_features),
            "in_channels": int(net.in_channels), "width": int(net.feature_dim) // 4,
            "class_names": list(model.class_names)}


def save_served(model: ScoredClassifier, directory: str | Path) -> Path:
    """Write the served flavour's files into ``directory`` (created): ``weights.pt`` (the state dict, network
    and normalisation) and ``model.json`` (:func:`architecture_recipe`). Returns the directory."""
    directory = Path(directory)
    recipe = architecture_recipe(model)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / SERVED_WEIGHTS)
    (directory / SERVED_RECIPE).write_text(json.dumps(recipe, indent=1, sort_keys=True))
    return directory


def load_served(directory: str | Path) -> ScoredClassifier:
    """The :class:`ScoredClassifier` that :func:`save_served` wrote (CPU, eval mode); weights are read with
    ``weights_only=True`` (no code is unpickled)."""
    from search_space import build_model

    directory = Path(directory)
    recipe = json.loads((directory / SERVED_RECIPE).read_text())
    net = build_model(recipe["architecture"], recipe["num_classes"], recipe["in_channels"], recipe["width"])
    channels = recipe["in_channels"]
    model = ScoredClassifier(net, torch.zeros(channels), torch.ones(channels), recipe["class_names"])
    model.load_state_dict(torch.load(directory / SERVED_WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def _load_pyfunc(path: str, model_config: dict | None = None) -> ServedClassifier:
    """MLflow's ``python_function`` loader hook (``loader_module: trainables.image.export``): ``path`` is the flavour's
    data directory written by :func:`save_served`."""
    return ServedClassifier(load_served(path))
