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

Structure: :func:`train_candidate` builds a :class:`CandidateTraining` (set-up), runs its epoch loop
(:meth:`~CandidateTraining.train`, one :meth:`~CandidateTraining.step` per batch: the unit a CUDA graph can
capture), then :meth:`~CandidateTraining.evaluate`, and packages the result dict.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from search_space import Genotype, StandardModel, architecture_json, build_model, count_flops, parse_architecture
from trainables.errors import DivergedError
from trainables.image.augment import normalise, random_crop_flip
from trainables.image.cuda_graph import graphed_step
from trainables.image.data import Protocol
from trainables.image.losses import ensemble_probs, make_objective
from trainables.image.ood import evaluate_ood

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
    objective: str = "oe"  # a name in trainables.image.losses.OBJECTIVES
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
    # Capture the whole training step as one CUDA graph per candidate and replay it (trainables/image/cuda_graph.py).
    # CUDA only: a CPU device is a ValueError at set-up; DDP training falls back to eager steps with a warning.
    cuda_graph: bool = False
    teacher_mode: str = "online"  # online | cached (see TeacherCache)
    scores: tuple = ("msp", "energy", "maha")
    eval_split: str = "val"  # val (search stages) | test (final report)
    eval_batch_size: int = 1024
    # Data budget (thesis §4.4.1: search stages 50 %, final retrain all): train on the protocol's seeded,
    # class-stratified `train_fraction` of the ID training images (Protocol.train_subset); 1.0 = all of them.
    train_fraction: float = 1.0
    # Also train on the ID validation images (the final retrain; only a model scored on `test` may).
    train_on_val: bool = False
    # Evaluate on `eval_split` every `eval_every` epochs as well as after the last one (0: after the last only);
    # the per-epoch reports then carry the metrics, which an early-stopping scheduler (ASHA) needs.
    eval_every: int = 0

    def __post_init__(self) -> None:
        def number(name: str) -> bool:  # not a bool, not a string such as '1e6x'
            value = getattr(self, name)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def integer(name: str) -> bool:
            return number(name) and isinstance(getattr(self, name), int)

        checks = [
            (integer("epochs") and self.epochs >= 1, "epochs", "an integer >= 1"),
            (integer("batch_size") and self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (number("lr") and self.lr > 0, "lr", "a positive number"),
            (self.schedule in ("cosine", "constant"), "schedule", "cosine or constant"),
            (self.precision in ("auto", "fp32", "bf16"), "precision", "auto, fp32 or bf16"),
            (self.teacher_mode in ("online", "cached"), "teacher_mode", "online or cached"),
            (self.compile_mode in COMPILE_MODES, "compile_mode", ", ".join(COMPILE_MODES)),
            (isinstance(self.cuda_graph, bool), "cuda_graph", "true or false"),
            (not (self.cuda_graph and self.compile), "cuda_graph",
             "false when compile is true (a captured step replaces torch.compile: choose one)"),
            (not (self.cuda_graph and self.device == "cpu"), "cuda_graph", "false on device cpu (it needs CUDA)"),
            (self.eval_split in ("val", "test"), "eval_split", "val or test"),
            (integer("width") and self.width >= 1, "width", "an integer >= 1"),
            (integer("eval_every") and self.eval_every >= 0, "eval_every", "an integer >= 0"),
            (number("train_fraction") and 0 < self.train_fraction <= 1, "train_fraction", "a fraction in (0, 1]"),
            (not self.train_on_val or self.eval_split == "test", "train_on_val",
             "false unless eval_split is test (a model that trained on the validation images is scored on test)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        self.scores = tuple(self.scores)

    @staticmethod
    def fields() -> list[str]:
        return [f.name for f in dataclasses.fields(TrainConfig)]

    def replace(self, **changes: Any) -> TrainConfig:
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
    """A protocol's tensors moved to one device once (reuse it across candidates of one worker).

    What a training draws from: :meth:`training_set` (the ID training images, plus the validation images for
    ``train_on_val``) restricted to :meth:`subset` (the protocol's ``train_fraction`` subset; None = all)."""

    def __init__(self, protocol: Protocol, device: torch.device | str):
        self.protocol = protocol
        self.device = torch.device(device)
        self.train_x, self.train_y = (t.to(self.device) for t in protocol.id_train)
        self.aux = None if protocol.aux is None else protocol.aux.to(self.device)
        self.eval = {split: (*(t.to(self.device) for t in id_xy), protocol.ood[split].to(self.device))
                     for split, id_xy in (("val", protocol.id_val), ("test", protocol.id_test))}
        mean, std = protocol.mean_std()  # of all ID training images, whatever part a training uses
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self._normalised: dict[tuple, tuple] = {}
        self._with_val: tuple[torch.Tensor, torch.Tensor] | None = None
        self._subsets: dict[tuple, torch.Tensor | None] = {}

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mean, self.std)

    def training_set(self, with_val: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels a training draws from: the ID training part, followed by the ID validation
        part if ``with_val`` (concatenated once and kept)."""
        if not with_val:
            return self.train_x, self.train_y
        if self._with_val is None:
            val_x, val_y = self.eval["val"][:2]
            self._with_val = (torch.cat([self.train_x, val_x]), torch.cat([self.train_y, val_y]))
        return self._with_val

    def subset(self, fraction: float = 1.0, with_val: bool = False) -> torch.Tensor | None:
        """Indices (long, on the device) into :meth:`training_set` of the protocol's seeded ``fraction``
        (:meth:`Protocol.train_subset`), or None for all images; computed once per (fraction, with_val)."""
        key = (float(fraction), bool(with_val))
        if key not in self._subsets:
            index = self.protocol.train_subset(fraction, with_val)
            self._subsets[key] = None if index is None else torch.from_numpy(index).to(self.device)
        return self._subsets[key]

    def evaluation_sets(self, split: str, train_fraction: float = 1.0,
                        with_val: bool = False) -> tuple[torch.Tensor, ...]:
        """``(id_x, id_y, ood_x, train_x, train_y)`` for evaluation, images normalised (float32), computed once
        per split and training set and kept: every candidate of a worker is scored on the same tensors.
        ``train_*`` (what scores such as maha fit on) are the images the training used: its ``train_fraction``
        subset of :meth:`training_set`."""
        key = (split, float(train_fraction), bool(with_val))
        if key not in self._normalised:
            id_x, id_y, ood_x = self.eval[split]
            self._normalised[key] = (self.norm(id_x), id_y, self.norm(ood_x),
                                     *self._train_normalised(train_fraction, with_val))
        return self._normalised[key]

    def _train_normalised(self, fraction: float, with_val: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for (_, f, v), sets in self._normalised.items():  # shared between the val and test splits
            if (f, v) == (float(fraction), bool(with_val)):
                return sets[3], sets[4]
        x, y = self.training_set(with_val)
        index = self.subset(fraction, with_val)
        if index is not None:
            x, y = x[index], y[index]
        return self.norm(x), y


class TeacherCache:
    """The cached teacher path: the ensemble's temperature-softened probabilities computed once per
    iteration on the *un-augmented* ID training and auxiliary images, then looked up by index for every
    student (instead of running every teacher on every augmented batch). ``train``: (N_train, C);
    ``aux``: (N_aux, C) or None."""

    def __init__(self, train: torch.Tensor, aux: torch.Tensor | None):
        self.train, self.aux = train, aux

    @staticmethod
    def compute(teachers: Sequence[nn.Module], data: DeviceData, temperature: float,
                batch_size: int = 1024, with_val: bool = False) -> TeacherCache:
        """Over all of ``data.training_set(with_val)`` (a ``train_fraction`` subset indexes into it)."""
        def probs(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([ensemble_probs(teachers, data.norm(x[i:i + batch_size]), temperature)
                              for i in range(0, len(x), batch_size)])

        return TeacherCache(probs(data.training_set(with_val)[0]), None if data.aux is None else probs(data.aux))

    def to(self, device: torch.device) -> TeacherCache:
        return TeacherCache(self.train.to(device), None if self.aux is None else self.aux.to(device))


#: Input channels below which a strided 1×1 convolution's weight gradient is not computed in NHWC on the CPU:
#: oneDNN's 1×1 kernel blocks input channels by 8 (AVX2) or 16 (AVX-512); fewer than one block is the bug's case.
NHWC_MIN_CHANNELS = 16


def nhwc_safe(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` may train in channels-last (NHWC) memory format on ``device``.

    On x86 CPUs, oneDNN's 1×1 convolution computes the weight gradient of a stride > 1 convolution over fewer
    input channels than its channel block (8 with AVX2, 16 with AVX-512) past the end of a workspace
    (uxlfoundation/oneDNN#6035, open; oneDNN v3.12 as bundled with PyTorch 2.14.1): with one OpenMP thread the
    heap is corrupted ("corrupted double-linked list", a segfault or a bus error in ``backward``; 3 of 3 runs at
    1×1/stride 2/4→8 channels on this project's AVX2 machine), with more threads the issue reports hangs and wrong
    gradients. Stride 1, larger kernels, enough input channels and NCHW are unaffected. ResNet's first projection
    shortcut at width 4 or 8 is such a layer. A model holding one trains in NCHW on the CPU, where PyTorch's own
    kernel computes that gradient; every other model, and every model on CUDA, keeps channels-last (18–23 %
    faster on the CPU, benchmarks/RESULTS.md)."""
    if device.type != "cpu":
        return True
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
                   and m.in_channels < NHWC_MIN_CHANNELS for m in model.modules())


def _as_model(candidate, protocol: Protocol, width: int) -> tuple[nn.Module, str | None, str | None]:
    """An architecture (Genotype, StandardModel or either's JSON/dict) or an nn.Module -> (model, arch_hash,
    architecture JSON); the last two are None for a module."""
    if isinstance(candidate, nn.Module):
        return candidate, None, None
    if not isinstance(candidate, (str, dict, Genotype, StandardModel)):
        raise ValueError("candidate: expected a Genotype, StandardModel, architecture JSON or nn.Module, "
                         f"got {type(candidate).__name__}")
    arch = parse_architecture(candidate)
    model = build_model(arch, num_classes=protocol.num_classes, in_channels=protocol.in_channels, width=width)
    return model, arch.arch_hash, architecture_json(arch)


class CandidateTraining:
    """The set-up of one candidate's training on ``data.device``: model, ``forward`` (DDP-wrapped and/or
    compiled model), objective, SGD optimizer, per-step lr ``schedule`` (a LambdaLR; swappable alone),
    generators (``gen``: permutations, augmentation; ``aux_gen``: outlier indices, ``gen`` on one rank),
    per-rank ``batch``/``out_batch`` sizes (images), ``steps_per_epoch``, the training images (``train_x``,
    ``train_y``: :meth:`DeviceData.training_set`; ``index``: the ``train_fraction`` subset of it or None;
    ``n_train`` images used), teachers (``cache`` on the device or online ``teachers``; None without
    distillation), the ``bf16`` flag and ``graphed`` (the captured step under ``config.cuda_graph``, else
    None). :meth:`step` is one optimisation
    step, :meth:`train` the epoch loop, :meth:`evaluate` the OOD evaluation.

    ``initial_state``: a state dict (tensors on any device) loaded strictly into the model right
    after it is built, before it moves to the device, channels-last, DDP or compile: the training then fine-tunes
    those weights (BN running statistics included) instead of a seeded random initialisation; the optimiser,
    schedule and data order start fresh from ``config``. None: train from scratch."""

    def __init__(self, candidate, data: DeviceData, config: TrainConfig,
                 teachers: Sequence[nn.Module] | TeacherCache | None = None,
                 distributed: tuple[int, int, Callable[[nn.Module], nn.Module]] | None = None,
                 initial_state: Mapping[str, torch.Tensor] | None = None):
        self.data, self.config, self.device = data, config, data.device
        torch.manual_seed(config.seed)
        self.model, self.arch_hash, self.genotype = _as_model(candidate, data.protocol, config.width)
        if initial_state is not None:
            self.model.load_state_dict(initial_state)
        self.model.to(self.device)
        self.channels_last = config.channels_last and nhwc_safe(self.model, self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.rank, self.world, wrap = distributed or (0, 1, None)
        self.forward = wrap(self.model) if wrap is not None else self.model
        if config.compile:
            mode = None if config.compile_mode == "default" else config.compile_mode
            self.forward = torch.compile(self.forward, mode=mode)

        self.objective = make_objective(config.objective, **config.objective_args)
        self.use_aux = self.objective.needs_outliers and data.aux is not None and len(data.aux) > 0
        if self.objective.needs_teacher and teachers is None:
            raise ValueError(f"teachers: objective {config.objective!r} needs a teacher ensemble")
        self.temperature = getattr(self.objective, "temperature", 1.0)
        teachers = teachers if self.objective.needs_teacher else None
        self.train_x, self.train_y = data.training_set(config.train_on_val)
        self.index = data.subset(config.train_fraction, config.train_on_val)
        if config.teacher_mode == "cached" and teachers is not None and not isinstance(teachers, TeacherCache):
            teachers = TeacherCache.compute(teachers, data, self.temperature, with_val=config.train_on_val)
        self.cache = teachers.to(self.device) if isinstance(teachers, TeacherCache) else None
        if self.cache is not None and len(self.cache.train) != len(self.train_y):
            raise ValueError(f"teachers: the TeacherCache covers {len(self.cache.train)} training images, this "
                             f"training draws from {len(self.train_y)} (compute it with with_val=train_on_val)")
        self.teachers = None if self.cache is not None else teachers  # online: modules run on every batch

        n = self.n_train = len(self.train_y) if self.index is None else len(self.index)
        self.batch = min(config.batch_size, n // self.world)
        self.out_batch = config.outlier_batch_size or self.batch
        self.steps_per_epoch = n // (self.batch * self.world)  # drop the last partial batch: fixed shapes
        total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov)
        cosine = config.schedule == "cosine"
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)) if cosine else 1.0)
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.aux_gen = (self.gen if self.world == 1
                        else torch.Generator(device=self.device).manual_seed(config.seed * 1_000_003 + self.rank))
        self.pad = data.protocol.image_size // 8 if config.crop_padding is None else config.crop_padding
        self.graphed = graphed_step(self)  # config.cuda_graph: step() replays a captured graph (None: eager)

    def autocast(self) -> torch.autocast:
        """bf16 autocast if ``bf16``; without its weight-cast cache under ``cuda_graph`` (graph capture needs that)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16,
                              cache_enabled=not self.config.cuda_graph)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32, augmented (if ``config.augment``, drawing from ``gen``) and
        normalised, in channels-last memory format if configured and safe (:func:`nhwc_safe`)."""
        if self.config.augment:
            images = random_crop_flip(images, self.gen, pad=self.pad, flip=self.config.flip)
        x = self.data.norm(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, images: torch.Tensor, labels: torch.Tensor, teacher_in: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step on one ID batch, all on the device: ``images`` uint8 ``(B, C, H, W)``,
        ``labels`` long ``(B,)``, ``teacher_in`` the cached teacher probabilities ``(B, C)`` (None unless
        ``cache``): :meth:`loss`, backward, SGD step and one ``schedule`` step.
        Returns the loss as a detached 0-dim float32 tensor. No host synchronisation and no branch on tensor
        values (branches depend on the set-up only): the unit to capture as a CUDA graph. With ``graphed`` (a
        :class:`~trainables.image.cuda_graph.GraphedStep`) the same step is replayed from its graph instead."""
        if self.graphed is not None:
            return self.graphed(images, labels, teacher_in)
        loss = self.loss(images, labels, teacher_in)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.detach()

    def loss(self, images: torch.Tensor, labels: torch.Tensor, teacher_in: torch.Tensor | None = None) -> torch.Tensor:
        """The objective on one ID batch (arguments as in :meth:`step`), differentiable: draws ``out_batch``
        outlier indices from ``aux_gen`` (if ``use_aux``), runs ID and outliers through one forward under
        autocast. Returns a 0-dim float32 tensor."""
        x = self.prepare(images)
        teacher_out = None
        if self.use_aux:
            aux_idx = torch.randint(0, len(self.data.aux), (self.out_batch,), device=self.device,
                                    generator=self.aux_gen)
            x = torch.cat([x, self.prepare(self.data.aux[aux_idx])])
            if self.cache is not None and self.cache.aux is not None:
                teacher_out = self.cache.aux[aux_idx]
        b = len(labels)
        if self.teachers is not None:  # online: the teachers see the augmented batch
            probs = ensemble_probs(self.teachers, x, self.temperature)
            teacher_in, teacher_out = probs[:b], (probs[b:] if self.use_aux else None)
        with self.autocast():
            logits = self.forward(x).float()
        return self.objective(logits[:b], labels, logits[b:] if self.use_aux else None, teacher_in, teacher_out)

    def train(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> tuple[float, float]:
        """``config.epochs`` epochs of ``steps_per_epoch`` steps; returns (mean loss of the last epoch, wall
        seconds of training, evaluations between epochs excluded). Every rank draws the same epoch permutation
        from ``gen`` and takes its own ``batch`` slice of each global step (positions in ``index`` when training
        on a subset). One host sync per epoch; raises :class:`DivergedError` on a non-finite loss.

        After every epoch but the last, ``on_epoch`` (if given) gets that epoch's entry of :attr:`curve`:
        ``epoch`` (1-based), ``epochs``, ``train_loss`` (mean over the epoch), ``lr`` (at the epoch's end),
        ``epoch_seconds`` and, every ``config.eval_every`` epochs, the metrics of :meth:`evaluate`. The last
        epoch's entry is completed by :func:`train_candidate` with the final evaluation."""
        epochs = self.config.epochs
        self.curve: list[dict[str, Any]] = []
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        paused = 0.0  # seconds spent evaluating between epochs
        for epoch in range(epochs):
            epoch_start = time.perf_counter()
            order = torch.randperm(self.n_train, device=self.device, generator=self.gen)
            loss_sum = torch.zeros((), device=self.device)
            for step in range(self.steps_per_epoch):
                first = (step * self.world + self.rank) * self.batch
                idx = order[first:first + self.batch]
                if self.index is not None:
                    idx = self.index[idx]
                teacher_in = None if self.cache is None else self.cache.train[idx]
                loss_sum += self.step(self.train_x[idx], self.train_y[idx], teacher_in)
            mean_loss = float(loss_sum) / self.steps_per_epoch
            if not math.isfinite(mean_loss):
                raise DivergedError(f"training loss became {mean_loss} in epoch {epoch + 1} of {epochs}")
            entry = {"epoch": epoch + 1, "epochs": epochs, "train_loss": mean_loss,
                     "lr": float(self.optimizer.param_groups[0]["lr"]),  # a tensor under cuda_graph
                     "epoch_seconds": time.perf_counter() - epoch_start}
            self.curve.append(entry)
            if epoch + 1 < epochs:
                every = self.config.eval_every
                if every and (epoch + 1) % every == 0:
                    metrics, seconds = self.evaluate()
                    entry.update(metrics)
                    paused += seconds
                if on_epoch is not None:
                    on_epoch(dict(entry))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return mean_loss, time.perf_counter() - start - paused

    def evaluate(self) -> tuple[dict[str, float], float]:
        """:func:`evaluate_ood` on ``config.eval_split`` under autocast; returns (metrics, wall seconds)."""
        start = time.perf_counter()
        with self.autocast():
            config = self.config
            sets = self.data.evaluation_sets(config.eval_split, config.train_fraction, config.train_on_val)
            metrics = evaluate_ood(self.model, *sets, scores=self.config.scores, batch_size=self.config.eval_batch_size)
        return metrics, time.perf_counter() - start


def train_candidate(candidate, data: Protocol | DeviceData, config: TrainConfig | None = None,
                    teachers: Sequence[nn.Module] | TeacherCache | None = None,
                    distributed: tuple[int, int, Callable[[nn.Module], nn.Module]] | None = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None,
                    initial_state: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train ``candidate`` on ``data`` with ``config`` and evaluate it on ``config.eval_split``.

    ``teachers``: the ensemble for the ``distill`` objective, either modules (online path: every teacher runs
    on every augmented batch) or a :class:`TeacherCache` (cached path).
    ``distributed``: ``(rank, world_size, wrap)`` for data-parallel training (e.g. under Ray Train): every
    rank draws the same epoch permutation and takes its own ``batch_size`` slice of each global step
    (``world_size * batch_size`` images), outliers come from a rank-seeded generator, and ``wrap`` turns the
    model into the gradient-synchronising one (e.g. ``ray.train.torch.prepare_model``). Every rank evaluates.
    Returns metrics (``id_acc``, ``auroc_<score>``, ``aupr_in_<score>``, ``aupr_out_<score>``,
    ``fpr95_<score>``), ``train_seconds``, ``eval_seconds``, ``final_loss`` (mean loss of the last epoch),
    ``epochs``, ``precision`` (``bf16``/``fp32``, as autocast ran), ``params``, ``flops`` (forward, one image, a
    multiply-add counts 2), ``aux_images`` (auxiliary outlier images the objective drew from; 0 without),
    ``arch_hash``, ``genotype``, ``curve`` (one dict per epoch, see :meth:`CandidateTraining.train`; the last
    one holds the final metrics) and ``state_dict`` (trained weights on the CPU).
    ``on_epoch``: called after every epoch but the last with that epoch's ``curve`` entry (e.g. to report it).
    ``initial_state``: weights to fine-tune instead of a random initialisation (see :class:`CandidateTraining`).
    Raises :class:`DivergedError` if the loss becomes non-finite.
    """
    config = config or TrainConfig()
    if isinstance(data, Protocol):
        data = DeviceData(data, resolve_device(config.device))
    run = CandidateTraining(candidate, data, config, teachers, distributed, initial_state=initial_state)
    final_loss, train_seconds = run.train(on_epoch)
    metrics, eval_seconds = run.evaluate()
    run.curve[-1].update(metrics)
    return {
        **metrics,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "final_loss": final_loss,
        "epochs": config.epochs,
        "precision": "bf16" if run.bf16 else "fp32",
        "params": sum(p.numel() for p in run.model.parameters()),
        "flops": count_flops(run.model, (1, data.protocol.in_channels, data.protocol.image_size,
                                         data.protocol.image_size)),
        "aux_images": len(data.aux) if run.use_aux else 0,
        "arch_hash": run.arch_hash,
        "genotype": run.genotype,
        "curve": run.curve,
        "state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }


def metrics_json(result: dict[str, Any]) -> str:
    """One JSON line of a result without the weights."""
    return json.dumps({k: v for k, v in result.items() if k != "state_dict"}, sort_keys=True)
