"""Train one candidate architecture and score it for near-OOD detection. Plain PyTorch, no Ray.

>>> from search_space import SearchSpace
>>> from trainables import make_protocol, train_candidate, TrainConfig
>>> result = train_candidate(SearchSpace().sample(0), make_protocol("digits"), TrainConfig(epochs=1, width=8))
>>> sorted(k for k in result if k.startswith("auroc_"))[:2]
['auroc_energy', 'auroc_maha']

Conventions: images live on the training device as uint8 and are augmented (pad-4 crop, flip) and normalised
there; the ID and auxiliary-outlier batches go through one forward pass (BN sees both); the learning rate
follows a per-step cosine from ``lr`` to 0; metrics are fractions in [0, 1]; ``train_seconds`` is the wall time
of the optimisation loop only (data already on the device, evaluation excluded).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from search_space import Genotype, build_network

from .augment import normalise, random_crop_flip
from .data import Protocol
from .losses import ensemble_probs, make_objective
from .ood import evaluate_ood


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; callers record the evaluation as failed with this reason."""


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Paper defaults (SGD momentum 0.9, lr 0.1, batch 128, weight decay 5e-4, cosine, 20 epochs)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"  # cosine | constant
    objective: str = "oe"  # a name in trainables.losses.OBJECTIVES
    objective_args: dict = field(default_factory=dict)
    outlier_batch_size: int | None = None  # default: batch_size
    width: int = 32
    augment: bool = True
    crop_padding: int | None = None  # random-crop padding in pixels; default image_size // 8 (4 at 32x32)
    flip: bool = True  # random horizontal flips (off for digits: a mirrored digit is another symbol)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool = True  # NHWC activations: faster convolutions on CUDA and on CPU (oneDNN)
    compile: bool = False  # torch.compile the model's training forward
    # torch.compile mode: default | reduce-overhead (CUDA graphs on CUDA) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    teacher_mode: str = "online"  # online | cached (see TeacherCache)
    scores: tuple = ("msp", "energy", "maha")
    eval_split: str = "val"  # val (search stages) | test (final report)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.lr > 0, "lr", "a positive number"),
            (self.schedule in ("cosine", "constant"), "schedule", "cosine or constant"),
            (self.precision in ("auto", "fp32", "bf16"), "precision", "auto, fp32 or bf16"),
            (self.teacher_mode in ("online", "cached"), "teacher_mode", "online or cached"),
            (self.compile_mode in COMPILE_MODES, "compile_mode", ", ".join(COMPILE_MODES)),
            (self.eval_split in ("val", "test"), "eval_split", "val or test"),
            (self.width >= 1, "width", "an integer >= 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        self.scores = tuple(self.scores)

    @staticmethod
    def fields() -> list[str]:
        return [f.name for f in dataclasses.fields(TrainConfig)]

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = set(changes) - set(self.fields())
        if unknown:
            raise ValueError(f"config: unknown key(s) {sorted(unknown)}; valid: {', '.join(self.fields())}")
        return dataclasses.replace(self, **changes)


#: Named starting points; a preset may also name the protocol it is meant for.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"protocol": "cifar10-split"},
    # digits (8x8): 1-pixel crops, no flips; ~20 s per candidate on a 2-core CPU
    "quick": {"protocol": "digits", "epochs": 10, "batch_size": 64, "lr": 0.05, "width": 8, "flip": False},
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DeviceData:
    """A protocol's tensors moved to one device once (reuse it across candidates of one worker)."""

    def __init__(self, protocol: Protocol, device: torch.device | str):
        self.protocol = protocol
        self.device = torch.device(device)
        put = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        self.train_x, self.train_y = (put(t) for t in protocol.id_train)
        self.aux = put(protocol.aux)
        self.eval = {
            "val": (put(protocol.id_val[0]), put(protocol.id_val[1]), put(protocol.ood["val"])),
            "test": (put(protocol.id_test[0]), put(protocol.id_test[1]), put(protocol.ood["test"])),
        }
        mean, std = protocol.mean_std()
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self._normalised: dict[str, tuple] = {}

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mean, self.std)

    def evaluation_sets(self, split: str) -> tuple[torch.Tensor, ...]:
        """``(id_x, id_y, ood_x, train_x, train_y)`` for evaluation, images normalised (float32), computed once
        per split and kept: every candidate of a worker is scored on the same tensors."""
        if split not in self._normalised:
            id_x, id_y, ood_x = self.eval[split]
            self._normalised[split] = (self.norm(id_x), id_y, self.norm(ood_x), self._train_normalised(), self.train_y)
        return self._normalised[split]

    def _train_normalised(self) -> torch.Tensor:
        for sets in self._normalised.values():  # shared between the val and test splits
            return sets[3]
        return self.norm(self.train_x)


class TeacherCache:
    """The cached teacher path: the ensemble's temperature-softened probabilities computed once per
    iteration on the *un-augmented* ID training and auxiliary images, then looked up by index for every
    student (instead of running every teacher on every augmented batch). ``train``: (N_train, C);
    ``aux``: (N_aux, C) or None."""

    def __init__(self, train: torch.Tensor, aux: torch.Tensor | None):
        self.train, self.aux = train, aux

    @staticmethod
    def compute(teachers: Sequence[nn.Module], data: DeviceData, temperature: float, batch_size: int = 1024) -> "TeacherCache":
        def probs(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([ensemble_probs(teachers, data.norm(x[i:i + batch_size]), temperature)
                              for i in range(0, len(x), batch_size)])

        return TeacherCache(probs(data.train_x), None if data.aux is None else probs(data.aux))

    def to(self, device: torch.device) -> "TeacherCache":
        return TeacherCache(self.train.to(device), None if self.aux is None else self.aux.to(device))


def _as_model(candidate, protocol: Protocol, width: int) -> tuple[nn.Module, str | None, str | None]:
    """Genotype, genotype JSON, or an nn.Module -> (model, arch_hash, genotype JSON)."""
    if isinstance(candidate, str):
        candidate = Genotype.from_json(candidate)
    if isinstance(candidate, Genotype):
        model = build_network(candidate, num_classes=protocol.num_classes, in_channels=protocol.in_channels, width=width)
        return model, candidate.arch_hash, candidate.to_json()
    if isinstance(candidate, nn.Module):
        return candidate, None, None
    raise ValueError(f"candidate: expected a Genotype, genotype JSON or nn.Module, got {type(candidate).__name__}")


def train_candidate(candidate, data: Protocol | DeviceData, config: TrainConfig | None = None,
                    teachers: Sequence[nn.Module] | TeacherCache | None = None,
                    distributed: tuple[int, int, Callable[[nn.Module], nn.Module]] | None = None) -> dict[str, Any]:
    """Train ``candidate`` on ``data`` with ``config`` and evaluate it on ``config.eval_split``.

    ``teachers``: the ensemble for the ``distill`` objective, either modules (online path: every teacher runs
    on every augmented batch) or a :class:`TeacherCache` (cached path).
    ``distributed``: ``(rank, world_size, wrap)`` for data-parallel training (e.g. under Ray Train): every
    rank draws the same epoch permutation and takes its own ``batch_size`` slice of each global step
    (``world_size * batch_size`` images), outliers come from a rank-seeded generator, and ``wrap`` turns the
    model into the gradient-synchronising one (e.g. ``ray.train.torch.prepare_model``). Every rank evaluates.
    Returns metrics (``id_acc``, ``auroc_<score>``, ``aupr_in_<score>``, ``aupr_out_<score>``,
    ``fpr95_<score>``), ``train_seconds``, ``eval_seconds``, ``epochs``, ``precision`` (``bf16``/``fp32``, as
    autocast ran), ``params``, ``arch_hash``,
    ``genotype`` and ``state_dict`` (trained weights on the CPU).
    Raises :class:`DivergedError` if the loss becomes non-finite.
    """
    config = config or TrainConfig()
    if isinstance(data, Protocol):
        data = DeviceData(data, resolve_device(config.device))
    device = data.device
    torch.manual_seed(config.seed)
    model, arch_hash, genotype_json = _as_model(candidate, data.protocol, config.width)
    model.to(device)
    cuda = device.type == "cuda"
    channels_last = config.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda)
    rank, world, wrap = distributed or (0, 1, None)
    forward = wrap(model) if wrap is not None else model
    if config.compile:
        forward = torch.compile(forward, mode=None if config.compile_mode == "default" else config.compile_mode)

    objective = make_objective(config.objective, **config.objective_args)
    use_aux = objective.needs_outliers and data.aux is not None and len(data.aux) > 0
    if objective.needs_teacher and teachers is None:
        raise ValueError(f"teachers: objective {config.objective!r} needs a teacher ensemble")
    cache = teachers.to(device) if isinstance(teachers, TeacherCache) else None
    if config.teacher_mode == "cached" and teachers is not None and cache is None:
        cache = TeacherCache.compute(teachers, data, objective.temperature).to(device)
    temperature = getattr(objective, "temperature", 1.0)

    n = len(data.train_y)
    batch = min(config.batch_size, n)
    batch = min(batch, n // world)
    steps_per_epoch = n // (batch * world)  # drop the last partial batch: fixed shapes (graph/compile friendly)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    aux_gen = gen if world == 1 else torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + rank)
    out_batch = config.outlier_batch_size or batch

    pad = data.protocol.image_size // 8 if config.crop_padding is None else config.crop_padding

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = data.norm(random_crop_flip(x, gen, pad=pad, flip=config.flip) if config.augment else x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    model.train()
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(n, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            start_at = (step * world + rank) * batch
            idx = order[start_at:start_at + batch]
            x_in = prepare(data.train_x[idx])
            labels = data.train_y[idx]
            aux_idx = torch.randint(0, len(data.aux), (out_batch,), device=device, generator=aux_gen) if use_aux else None
            x = torch.cat([x_in, prepare(data.aux[aux_idx])]) if use_aux else x_in
            teacher_in = teacher_out = None
            if objective.needs_teacher:
                if cache is not None:
                    teacher_in = cache.train[idx]
                    teacher_out = cache.aux[aux_idx] if use_aux and cache.aux is not None else None
                else:
                    probs = ensemble_probs(teachers, x, temperature)
                    teacher_in, teacher_out = probs[:batch], (probs[batch:] if use_aux else None)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = forward(x)
            logits = logits.float()
            loss = objective(logits[:batch], labels, logits[batch:] if use_aux else None, teacher_in, teacher_out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        mean_loss = float(loss_sum) / steps_per_epoch  # one host sync per epoch
        if not math.isfinite(mean_loss):
            raise DivergedError(f"training loss became {mean_loss} in epoch {epoch + 1} of {config.epochs}")
    if cuda:
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        metrics = evaluate_ood(model, *data.evaluation_sets(config.eval_split), scores=config.scores,
                               batch_size=config.eval_batch_size)
    eval_seconds = time.perf_counter() - start
    return {
        **metrics,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "final_loss": mean_loss,
        "epochs": config.epochs,
        "precision": "bf16" if use_bf16 else "fp32",
        "params": sum(p.numel() for p in model.parameters()),
        "arch_hash": arch_hash,
        "genotype": genotype_json,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def metrics_json(result: dict[str, Any]) -> str:
    """One JSON line of a result without the weights."""
    return json.dumps({k: v for k, v in result.items() if k != "state_dict"}, sort_keys=True)
