"""Whole-step CUDA-graph capture of a candidate's training step (``TrainConfig.cuda_graph``). Plain PyTorch, no Ray.

Small cell networks are launch-bound: one optimisation step of a K = 6, width-32 candidate is several hundred
small kernels, each a few microseconds of Python and driver work. :class:`GraphedStep` records the whole step
once per candidate — augmentation, the forward under bf16 autocast, the objective, the backward and a fused
SGD update — as one ``torch.cuda.CUDAGraph`` and replays it for every batch: one launch instead of hundreds.
The capture costs :data:`WARMUP_STEPS` eager steps plus one recording per candidate (counted in
``train_seconds``), where ``torch.compile`` costs a compilation per candidate.

What the graph reads and writes (static tensors, fixed addresses for the candidate's lifetime):

* inputs copied in before every replay: ``images`` uint8 ``(B, C, H, W)``, ``labels`` long ``(B,)`` and, with a
  :class:`~trainables.image.train.TeacherCache`, ``teacher_in`` float32 ``(B, classes)``. Outlier indices are drawn
  inside the graph (``torch.randint`` on the run's generator), outlier images and their cached teacher
  probabilities gathered inside it from the device-resident tensors; online teachers run inside it.
* state updated in place: the weights, BN running statistics, SGD momentum buffers, the step counter
  ``counter`` (0-dim float64, steps taken) and the learning rate ``lr`` (0-dim float32, the value for the next
  step). The schedule is :func:`scheduled_lr` on the counter, i.e. tensor ops on the device: a Python float
  (``LambdaLR``) would be frozen into the graph at capture.
* output: ``loss`` (0-dim float32), overwritten by the next replay.

Capture follows PyTorch's whole-network recipe: the static buffers hold the first batch, :data:`WARMUP_STEPS`
eager steps run on a side stream (cuDNN autotuning, the optimizer's momentum buffers and the autograd
engine's streams all settle outside the capture), then the weights, buffers, generator states, counter and lr
are put back as they were (the momentum buffers zeroed: with dampening 0, ``0.9·0 + g = g`` is SGD's first
step exactly), the gradients are set to None so that the captured backward allocates them in the graph's pool,
and the step is recorded. The first replay is then the candidate's first step: the warm-up leaves no trace.
Autocast runs with ``cache_enabled=False`` (:meth:`~trainables.image.train.CandidateTraining.autocast`), as graph
capture requires.

Randomness and determinism: augmentation crops and flips and the outlier indices come from the run's
``torch.Generator`` on the CUDA device (``gen``; ``aux_gen`` is the same generator on one rank), registered
with the graph (``CUDAGraph.register_generator_state``). A graph advances a registered generator's Philox
offset by exactly what the recorded kernels consumed, before each replay, so replay k draws the same numbers
as eager step k of the same seed, and the epoch permutations (drawn eagerly from the same generator between
replays) stay the same too; ``tests/test_device.py`` checks the generator state after graph and eager steps.
What holds: the same seed on the same GPU and software gives the same run, up to cuDNN's own
non-determinism (``cudnn.benchmark`` may choose other algorithms in another process) and the bf16 rounding
of atomics; graph and eager training of one seed agree within bf16 tolerance, not bitwise (fused vs. foreach
SGD kernels).

Fall-back (:func:`fallback_reason`, :meth:`GraphedStep.fits`): a non-CUDA device is an error at set-up
(one line, ValueError) — there is nothing to capture; data-parallel training (``world > 1``: DDP's gradient
all-reduce hooks are not captured here) trains eagerly with one warning; a batch whose shapes differ from the
static buffers (a last partial batch; the epoch loop drops it) runs the same step eagerly. ``compile`` and
``cuda_graph`` together are refused by :class:`~trainables.image.train.TrainConfig`.
"""
from __future__ import annotations

import functools
import math
import warnings
import weakref
from typing import Protocol

import torch
from torch import Tensor, nn

#: Eager steps run (and undone) on a side stream before a candidate's step is captured.
WARMUP_STEPS = 3


class StepSettings(Protocol):
    """The settings a captured step reads (a :class:`~trainables.image.train.TrainConfig` has them)."""

    @property
    def cuda_graph(self) -> bool: ...
    @property
    def epochs(self) -> int: ...
    @property
    def schedule(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def nesterov(self) -> bool: ...


class ImageShape(Protocol):
    """The input images' shape (an :class:`~trainables.image.data.Protocol` has it)."""

    @property
    def in_channels(self) -> int: ...
    @property
    def image_size(self) -> int: ...


class ProtocolData(Protocol):
    """The data a run trains on (a :class:`~trainables.image.train.DeviceData` has it): its protocol's shape."""

    @property
    def protocol(self) -> ImageShape: ...


class TeacherProbabilities(Protocol):
    """Cached teacher probabilities (a :class:`~trainables.image.train.TeacherCache`): ``train`` ``(N, classes)``."""

    @property
    def train(self) -> Tensor: ...


class CapturableRun(Protocol):
    """What :class:`GraphedStep` reads of a candidate's training, declared here so that this module does not import
    :mod:`trainables.image.train` (which imports this one): :class:`~trainables.image.train.CandidateTraining`
    satisfies it. ``optimizer`` is written (the graphed step installs its fused SGD); the rest is read."""

    optimizer: torch.optim.Optimizer

    @property
    def config(self) -> StepSettings: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def world(self) -> int: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def data(self) -> ProtocolData: ...
    @property
    def batch(self) -> int: ...
    @property
    def steps_per_epoch(self) -> int: ...
    @property
    def train_x(self) -> Tensor: ...
    @property
    def train_y(self) -> Tensor: ...
    @property
    def cache(self) -> TeacherProbabilities | None: ...
    @property
    def gen(self) -> torch.Generator: ...
    @property
    def aux_gen(self) -> torch.Generator: ...

    def loss(self, images: Tensor, labels: Tensor, teacher_in: Tensor | None = None) -> Tensor: ...


def scheduled_lr(step: Tensor, base_lr: float, total_steps: int, cosine: bool = True) -> Tensor:
    """The learning rate after ``step`` optimisation steps (0-dim float64 tensor on any device), computed with
    tensor ops on that device: ``base_lr · 0.5 · (1 + cos(π · step / total_steps))`` for ``cosine``, else
    ``base_lr`` — the value :class:`~trainables.image.train.CandidateTraining`'s ``LambdaLR`` gives the same step.
    Returns a 0-dim float64 tensor."""
    if not (isinstance(total_steps, int) and total_steps >= 1):
        raise ValueError(f"total_steps: expected an integer >= 1, got {total_steps!r}")
    if not cosine:
        return torch.full_like(step, base_lr, dtype=torch.float64)
    return base_lr * (0.5 * (1 + torch.cos(math.pi * step.double() / total_steps)))


@functools.cache
def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device and process for every warm-up (new streams would each get their own cuBLAS
    workspace, kept for the process's lifetime)."""
    return torch.cuda.Stream(device)


def fallback_reason(device: torch.device, world: int) -> str | None:
    """Why a training on ``device`` with ``world`` data-parallel ranks cannot be captured (then it trains
    eagerly), or None when it can. A non-CUDA device raises ValueError: ``cuda_graph`` is a CUDA setting."""
    if device.type != "cuda":
        raise ValueError(f"cuda_graph: expected a CUDA device, got {device} (set cuda_graph=false)")
    if world > 1:
        return f"data-parallel training on {world} ranks (DDP's gradient all-reduce is not captured)"
    return None


class GraphedStep:
    """A drop-in for :meth:`CandidateTraining.step <trainables.image.train.CandidateTraining.step>`: same arguments,
    same update, replayed from a CUDA graph captured at the first call (see the module docstring).

    Takes over ``run.optimizer`` (a fused SGD with the tensor ``lr``; ``run.schedule`` is no longer stepped).
    ``capture=False`` runs the identical step eagerly on the static buffers (any device): the CPU tests check it
    against the eager step. Counters: ``captures``, ``replays``, ``eager_steps`` (steps run without the graph).
    Holds the run through a weak reference, so a finished candidate's graph and its memory pool go with it."""

    def __init__(self, run: CapturableRun, capture: bool = True, warmup_steps: int = WARMUP_STEPS):
        self.run = weakref.proxy(run)
        self.capture, self.warmup_steps = capture, warmup_steps
        config, device = run.config, run.device
        self.total_steps = max(1, run.steps_per_epoch * config.epochs)
        self.cosine = config.schedule == "cosine"
        self.counter = torch.zeros((), dtype=torch.float64, device=device)
        self.lr = torch.tensor(float(config.lr), dtype=torch.float32, device=device)
        self.optimizer = torch.optim.SGD(run.model.parameters(), lr=self.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov, fused=True)
        run.optimizer = self.optimizer
        channels, size = run.data.protocol.in_channels, run.data.protocol.image_size
        self.images = torch.zeros((run.batch, channels, size, size), dtype=run.train_x.dtype, device=device)
        self.labels = torch.zeros((run.batch,), dtype=run.train_y.dtype, device=device)
        self.teacher_in = (None if run.cache is None else
                           torch.zeros((run.batch, run.cache.train.shape[1]), dtype=run.cache.train.dtype,
                                       device=device))
        self.loss: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captures = self.replays = self.eager_steps = 0

    def fits(self, images: Tensor, labels: Tensor, teacher_in: Tensor | None) -> bool:
        """Whether a batch can go through the static buffers (same shapes, dtypes and device; teacher
        probabilities exactly when the buffers have them); anything else runs eagerly."""
        pairs = [(images, self.images), (labels, self.labels)]
        if (teacher_in is None) != (self.teacher_in is None):
            return False
        if teacher_in is not None:
            pairs.append((teacher_in, self.teacher_in))
        return all(t.shape == s.shape and t.dtype == s.dtype and t.device == s.device for t, s in pairs)

    def __call__(self, images: Tensor, labels: Tensor, teacher_in: Tensor | None = None) -> Tensor:
        """One optimisation step on one ID batch (arguments as in ``CandidateTraining.step``). Returns the loss,
        a detached 0-dim float32 tensor; on the graph path it is the graph's output, overwritten by the next
        call (clone it to keep it)."""
        if not self.fits(images, labels, teacher_in):
            self.eager_steps += 1
            return self.update(images, labels, teacher_in)
        self.images.copy_(images)
        self.labels.copy_(labels)
        if teacher_in is not None:
            self.teacher_in.copy_(teacher_in)
        if not self.capture:
            self.eager_steps += 1
            return self.update(self.images, self.labels, self.teacher_in)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        self.replays += 1
        return self.loss

    def update(self, images: Tensor, labels: Tensor, teacher_in: Tensor | None,
               set_grads_to_none: bool = True) -> Tensor:
        """The step on the given tensors, as the graph records it: ``run.loss`` (augmentation, forward, objective),
        backward, fused SGD at ``lr``, ``counter += 1``, ``lr = scheduled_lr(counter)``. ``set_grads_to_none``:
        clear the gradients first (eager steps); the capture clears them before recording instead, so that the
        recorded backward writes fresh gradients. Returns the detached loss."""
        if set_grads_to_none:
            self.optimizer.zero_grad(set_to_none=True)
        loss = self.run.loss(images, labels, teacher_in)
        loss.backward()
        self.optimizer.step()
        self.counter += 1
        self.lr.copy_(scheduled_lr(self.counter, self.run.config.lr, self.total_steps, self.cosine))
        return loss.detach()

    def snapshot(self) -> dict:
        """Copies of everything a step changes: weights and buffers (BN statistics), generator states,
        ``counter`` and ``lr``."""
        model = self.run.model
        return {"tensors": [t.detach().clone() for t in (*model.parameters(), *model.buffers())],
                "generators": [g.get_state() for g in self._generators()],
                "counter": self.counter.clone(), "lr": self.lr.clone()}

    def restore(self, saved: dict) -> None:
        """Put a :meth:`snapshot` back in place (same tensors, same addresses) and zero the momentum buffers."""
        model = self.run.model
        with torch.no_grad():
            for t, s in zip((*model.parameters(), *model.buffers()), saved["tensors"], strict=True):
                t.copy_(s)
            for state in self.optimizer.state.values():
                if state.get("momentum_buffer") is not None:
                    state["momentum_buffer"].zero_()
            self.counter.copy_(saved["counter"])
            self.lr.copy_(saved["lr"])
        for g, state in zip(self._generators(), saved["generators"], strict=True):
            g.set_state(state)

    def warm_up(self) -> None:
        """``warmup_steps`` eager steps on the static buffers (on a side stream on CUDA), then everything
        restored: the model, generators and schedule are as before, the momentum buffers exist (zeroed)."""
        saved = self.snapshot()
        if self.images.device.type == "cuda":
            side = _warmup_stream(self.images.device)
            side.wait_stream(torch.cuda.current_stream(self.images.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup_steps):
                    self.update(self.images, self.labels, self.teacher_in)
            torch.cuda.current_stream(self.images.device).wait_stream(side)
        else:
            for _ in range(self.warmup_steps):
                self.update(self.images, self.labels, self.teacher_in)
        self.restore(saved)

    def _generators(self) -> list[torch.Generator]:
        gens = [self.run.gen]
        return gens if self.run.aux_gen is self.run.gen else [*gens, self.run.aux_gen]

    def _capture(self) -> None:
        self.warm_up()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        for g in self._generators():
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            self.loss = self.update(self.images, self.labels, self.teacher_in, set_grads_to_none=False)
        self.graph = graph
        self.captures += 1


def graphed_step(run: CapturableRun) -> GraphedStep | None:
    """The :class:`GraphedStep` for ``run`` when ``run.config.cuda_graph`` is set and the training can be
    captured; None (eager steps) otherwise, with one warning naming the reason. A non-CUDA device raises
    ValueError."""
    if not run.config.cuda_graph:
        return None
    reason = fallback_reason(run.device, run.world)
    if reason is not None:
        warnings.warn(f"cuda_graph: training eagerly: {reason}", stacklevel=3)
        return None
    return GraphedStep(run)
