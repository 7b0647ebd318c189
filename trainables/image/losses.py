"""Training-objective registry: cross-entropy, outlier exposure, energy bounds, outlier distillation.

Conventions (every objective):

* Call signature ``objective(logits_in, labels, logits_out=None, teacher_in=None, teacher_out=None)``
  returning a scalar tensor, differentiable with respect to the student logits.
* ``logits_in`` (B, C): student logits on in-distribution (ID) inputs; ``labels`` (B,) long class indices.
* ``logits_out`` (B_out, C): student logits on auxiliary-outlier inputs (same C output classes).
* ``teacher_in`` (B, C) / ``teacher_out`` (B_out, C): the teacher ensemble's *probabilities* (not
  logits) at the distillation temperature, already averaged over teachers — see :func:`ensemble_probs`.
  They are treated as constants (no gradient flows into them).
* Every term is a mean over its batch (ID terms over B, outlier terms over B_out).
* ``needs_outliers`` / ``needs_teacher`` say which optional inputs the objective uses, so the training
  loop loads outlier batches and teachers only when needed. A required input that is missing raises
  ``ValueError`` naming it. Exception: ``outliers_optional`` objectives (outlier exposure) reduce to their
  ID term when ``logits_out`` is None, so protocols without auxiliary outliers can still run them.
* All registered objectives are sums of cross-entropies and squared hinges, hence non-negative.

Register a new objective with :func:`register_objective`; build one by name with :func:`make_objective`.
The tests are parametrised over :data:`OBJECTIVES`, so a new entry is tested as soon as it is registered.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.registry import Registry

#: name -> objective class; the class's constructor keywords are the objective's parameters.
OBJECTIVES: Registry = Registry("objective")

#: Decorator registering an objective class under a name (duplicate names raise ``ValueError``).
register_objective = OBJECTIVES.register


def make_objective(name: str, **kwargs) -> Objective:
    """The objective registered as ``name`` with parameters ``kwargs`` (any error: ``RegistryError``)."""
    return OBJECTIVES.build(name, **kwargs)


# ---------------------------------------------------------------------------------------------- helpers
def uniform_ce(logits: Tensor) -> Tensor:
    """Per-row cross-entropy from the uniform distribution to softmax(logits): ``-mean_c log_softmax``. (N,)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1)


def soft_ce(target_probs: Tensor, logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-row soft cross-entropy ``-sum_i p_i log softmax(logits / T)_i``. (N,)."""
    return -(target_probs * F.log_softmax(logits / temperature, dim=1)).sum(dim=1)


def energy(logits: Tensor) -> Tensor:
    """Free energy ``E(x) = -logsumexp(logits)`` per row. (N,)."""
    return -torch.logsumexp(logits, dim=1)


def _check(name: str, t: Tensor | None, shape: tuple[int, ...] | None = None) -> Tensor:
    if t is None:
        raise ValueError(f"{name}: required by this objective, got None")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    return t


def _check_in(logits_in: Tensor | None, labels: Tensor | None) -> None:
    _check("logits_in", logits_in)
    if logits_in.dim() != 2:
        raise ValueError(f"logits_in: expected shape (B, C), got {tuple(logits_in.shape)}")
    _check("labels", labels, (logits_in.shape[0],))


def _check_out(logits_out: Tensor | None, num_classes: int) -> Tensor:
    _check("logits_out", logits_out)
    if logits_out.dim() != 2 or logits_out.shape[1] != num_classes:
        raise ValueError(f"logits_out: expected shape (B_out, {num_classes}), got {tuple(logits_out.shape)}")
    return logits_out


def _nonneg(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name}: expected >= 0, got {value!r}")


# ------------------------------------------------------------------------------------------- objectives
class Objective:
    """Base class: flags and the call signature (see the module docstring)."""

    needs_outliers: bool = False
    needs_teacher: bool = False
    outliers_optional: bool = False

    def __call__(self, logits_in: Tensor, labels: Tensor, logits_out: Tensor | None = None,
                 teacher_in: Tensor | None = None, teacher_out: Tensor | None = None) -> Tensor:
        raise NotImplementedError


@register_objective("ce")
@dataclasses.dataclass(frozen=True)
class CrossEntropy(Objective):
    """Plain cross-entropy on the ID batch."""

    def __call__(self, logits_in, labels, logits_out=None, teacher_in=None, teacher_out=None):
        _check_in(logits_in, labels)
        return F.cross_entropy(logits_in, labels)


@register_objective("oe")
@dataclasses.dataclass(frozen=True)
class OutlierExposure(Objective):
    """Outlier exposure: ``CE(in) + lam * mean_out CE(U, softmax(logits_out))``.

    ``CE(U, p) = -mean_c log p_c`` (minimal, log C, at the uniform prediction). With ``logits_out=None``
    the objective reduces to plain CE (``outliers_optional``): protocols without auxiliary outliers use CE.
    """

    lam: float = 0.5
    needs_outliers = True
    outliers_optional = True

    def __post_init__(self):
        _nonneg("lam", self.lam)

    def __call__(self, logits_in, labels, logits_out=None, teacher_in=None, teacher_out=None):
        _check_in(logits_in, labels)
        loss = F.cross_entropy(logits_in, labels)
        if logits_out is None or self.lam == 0:
            return loss
        return loss + self.lam * uniform_ce(_check_out(logits_out, logits_in.shape[1])).mean()


@register_objective("energy")
@dataclasses.dataclass(frozen=True)
class EnergyBounded(Objective):
    """Energy-bounded training: ``CE(in) + lam * (mean relu(E_in - m_in)^2 + mean relu(m_out - E_out)^2)``.

    ``E = -logsumexp(logits)``: ID energies are pushed below ``m_in``, outlier energies above ``m_out``.
    """

    lam: float = 0.1
    m_in: float = -25.0
    m_out: float = -7.0
    needs_outliers = True

    def __post_init__(self):
        _nonneg("lam", self.lam)

    def __call__(self, logits_in, labels, logits_out=None, teacher_in=None, teacher_out=None):
        _check_in(logits_in, labels)
        logits_out = _check_out(logits_out, logits_in.shape[1])
        hinge = (F.relu(energy(logits_in) - self.m_in).pow(2).mean()
                 + F.relu(self.m_out - energy(logits_out)).pow(2).mean())
        return F.cross_entropy(logits_in, labels) + self.lam * hinge


@register_objective("distill")
@dataclasses.dataclass(frozen=True)
class OutlierDistillation(Objective):
    """Outlier distillation (DESIGN.md, "Methods as implemented", eq. 4.11)::

        L = mean_in[ a*L_DS(P_t, P_s^T) + (1-a)*CE(y, P_s) ] + lam*mean_out[ b*L_DS(P_t, P_s^T) + (1-b)*CE(U, P_s) ]

    ``L_DS = -sum_i P_t,i log P_s,i^T`` with ``P_s^T = softmax(student_logits / T)``; the teacher
    probabilities (``teacher_in`` / ``teacher_out``) arrive already softened at ``T``. The CE terms use the
    student's plain softmax (T = 1); ``CE(U, .)`` is the outlier-exposure uniform CE.

    ``t_squared=True`` multiplies ``L_DS`` by T^2 (Hinton et al.'s convention, keeping the soft term's
    gradient scale independent of T); the thesis does not say — set ``False`` for the literal formula.
    ``lam=0`` (the paper's setting without auxiliary outliers) needs neither outliers nor ``teacher_out``;
    inputs whose coefficient is 0 are not required (``needs_outliers`` / ``needs_teacher`` reflect this).
    """

    temperature: float = 20.0
    alpha: float = 0.5
    beta: float = 0.2
    lam: float = 0.5
    t_squared: bool = True

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature!r}")
        for name in ("alpha", "beta"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(self, name)!r}")
        _nonneg("lam", self.lam)

    @property
    def needs_outliers(self) -> bool:
        return self.lam > 0

    @property
    def needs_teacher(self) -> bool:
        return self.alpha > 0 or (self.lam > 0 and self.beta > 0)

    def _ds(self, teacher: Tensor, logits: Tensor) -> Tensor:
        scale = self.temperature**2 if self.t_squared else 1.0
        return scale * soft_ce(teacher.detach(), logits, self.temperature)

    def __call__(self, logits_in, labels, logits_out=None, teacher_in=None, teacher_out=None):
        _check_in(logits_in, labels)
        loss = (1 - self.alpha) * F.cross_entropy(logits_in, labels)
        if self.alpha > 0:
            teacher_in = _check("teacher_in", teacher_in, tuple(logits_in.shape))
            loss = loss + self.alpha * self._ds(teacher_in, logits_in).mean()
        if self.lam > 0:
            logits_out = _check_out(logits_out, logits_in.shape[1])
            out = (1 - self.beta) * uniform_ce(logits_out)
            if self.beta > 0:
                teacher_out = _check("teacher_out", teacher_out, tuple(logits_out.shape))
                out = out + self.beta * self._ds(teacher_out, logits_out)
            loss = loss + self.lam * out.mean()
        return loss


# ------------------------------------------------------------------------------------------- teachers
def ensemble_probs(teachers: Sequence[nn.Module] | nn.Module, x: Tensor, temperature: float = 1.0) -> Tensor:
    """Teacher-ensemble probabilities at temperature T: ``mean_k softmax(teacher_k(x) / T)``. (B, C), float32.

    ``teachers``: a sequence (list, ``nn.ModuleList``) of modules whose ``forward(x)`` returns (B, C)
    logits; a single module (other than ``nn.ModuleList``) is treated as a one-teacher ensemble. Runs under
    ``torch.no_grad()`` with every teacher in eval mode, restoring each teacher's mode afterwards.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature!r}")
    if isinstance(teachers, nn.Module) and not isinstance(teachers, nn.ModuleList):
        teachers = [teachers]
    teachers = list(teachers)
    if not teachers:
        raise ValueError("teachers: expected at least one teacher, got an empty sequence")
    total = None
    with torch.no_grad():
        for teacher in teachers:
            was_training = teacher.training
            teacher.eval()
            try:
                probs = F.softmax(teacher(x).float() / temperature, dim=1)
            finally:
                teacher.train(was_training)
            total = probs if total is None else total + probs
    return total / len(teachers)
