"""OOD detection metrics and post-hoc OOD scores (plain PyTorch + numpy + scikit-learn).

Conventions
-----------
- Every score is "higher = more in-distribution" (ID). Metrics take ``id_scores`` and ``ood_scores``
  (1-D arrays or lists) and treat **ID as the positive class**, except ``aupr_out`` (OOD positive, scores
  negated). All metrics are Python floats, fractions in [0, 1] (not percentages).
- ``fpr_at_tpr(id, ood, tpr=0.95)`` is the classic FPR@95TPR: the fraction of OOD samples accepted
  (score >= threshold) at the highest threshold that still keeps at least 95% of the ID samples.
  OpenOOD v1.5 reverses the roles (OOD positive: fraction of ID rejected at 95% of OOD caught), so its
  FPR@95 numbers are not directly comparable with these.
- Models are ``nn.Module``s: ``model(x)`` -> logits ``(N, num_classes)``; ``model(x, return_features=True)``
  -> ``(logits, features)`` with penultimate features ``(N, D)``. Images are float tensors ``(N, C, H, W)``,
  already normalised; each batch is moved to the model's device. Scores run the model in eval mode and
  restore every submodule's previous mode afterwards.
- Scores live in the registry :data:`SCORES` (OpenOOD-postprocessor style): ``make_score(name, **kw)``,
  then ``setup(model, train_images, train_labels)`` (fit on the ID training set; no-op for most) and
  ``score(model, images) -> np.ndarray (N,) float64``. Register new ones with :func:`register_score`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from sklearn.covariance import EmpiricalCovariance
from sklearn.metrics import auc as _trapezoid_area
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve
from torch import nn

from search_space.registry import Registry

# ----------------------------------------------------------------------------------------------- metrics


def _check(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains {int((~np.isfinite(a)).sum())} NaN or infinite score(s)")
    return a


def _labels_scores(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    """-> (y, s): y = 1 for ID, 0 for OOD; s the concatenated scores."""
    i, o = _check(id_scores, "id_scores"), _check(ood_scores, "ood_scores")
    return np.r_[np.ones(i.size), np.zeros(o.size)], np.r_[i, o]


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve, ID positive (1 = every ID sample scores above every OOD sample)."""
    return float(roc_auc_score(*_labels_scores(id_scores, ood_scores)))


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as the positive class (step-wise, sklearn's ``average_precision_score``;
    :func:`openood_aupr_in` is the trapezoidal area OpenOOD reports)."""
    return float(average_precision_score(*_labels_scores(id_scores, ood_scores)))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class (scores negated; step-wise like :func:`aupr_in`)."""
    y, s = _labels_scores(id_scores, ood_scores)
    return float(average_precision_score(1 - y, -s))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Fraction of OOD samples with score >= t, for the highest threshold t keeping >= ``tpr`` of ID samples."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr: expected a value in (0, 1], got {tpr}")
    fprs, tprs, _ = roc_curve(*_labels_scores(id_scores, ood_scores), drop_intermediate=False)
    return float(fprs[tprs >= tpr - 1e-12].min())  # tolerance: 19/20 must count as 0.95


def fpr95(id_scores, ood_scores) -> float:
    """:func:`fpr_at_tpr` at 95 % of ID samples kept: the fraction of OOD samples still accepted (ID positive,
    the convention of Hendrycks & Gimpel and ODIN). :func:`openood_fpr95` is OpenOOD's OOD-positive variant."""
    return fpr_at_tpr(id_scores, ood_scores, 0.95)


def openood_fpr95(id_scores, ood_scores) -> float:
    """OpenOOD v1.5's FPR@95 (OOD positive): at the highest threshold that flags >= 95 % of OOD samples as OOD
    (score below it), the fraction of ID samples flagged too. Differs from :func:`fpr95` on the same scores."""
    y, s = _labels_scores(id_scores, ood_scores)
    fprs, tprs, _ = roc_curve(1 - y, -s)
    return float(fprs[np.argmax(tprs >= 0.95)])


def _pr_area(positive: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(positive, scores)
    return float(_trapezoid_area(recall, precision))


def openood_aupr_in(id_scores, ood_scores) -> float:
    """OpenOOD's AUPR-In: the trapezoidal area under the precision-recall curve, ID positive."""
    y, s = _labels_scores(id_scores, ood_scores)
    return _pr_area(y, s)


def openood_aupr_out(id_scores, ood_scores) -> float:
    """OpenOOD's AUPR-Out: the trapezoidal area under the precision-recall curve, OOD positive (scores negated)."""
    y, s = _labels_scores(id_scores, ood_scores)
    return _pr_area(1 - y, -s)


#: The detection metrics computed for every configured score s, reported as ``<kind>_<s>`` (fractions in [0, 1]).
#: ``auroc`` equals OpenOOD's AUROC; the ``openood_*`` kinds reproduce OpenOOD v1.5's AUPR (trapezoidal) and
#: FPR@95 (OOD positive), for comparison with numbers reported by it.
DETECTION_METRICS: dict[str, Callable] = {"auroc": auroc, "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr95": fpr95,
                                          "openood_aupr_in": openood_aupr_in, "openood_aupr_out": openood_aupr_out,
                                          "openood_fpr95": openood_fpr95}
#: Detection metrics for which lower is better; every other metric (and ``id_acc``) is higher = better.
LOWER_IS_BETTER = ("fpr95", "openood_fpr95")


def metric_names(scores) -> list[str]:
    """Every metric a candidate evaluation reports for ``scores``: ``id_acc`` then ``<kind>_<score>`` for each
    score and each kind of :data:`DETECTION_METRICS` (``auroc_msp``, ``aupr_in_msp``, ..., ``fpr95_knn``)."""
    return ["id_acc", *(f"{kind}_{score}" for score in scores for kind in DETECTION_METRICS)]


def parse_metric(name: str) -> tuple[str, str | None]:
    """``"aupr_in_msp"`` -> ``("aupr_in", "msp")``; ``"id_acc"`` -> ``("id_acc", None)``. Whether the score is
    registered is not checked here. Anything else is a one-line ``ValueError``."""
    if name == "id_acc":
        return name, None
    for kind in sorted(DETECTION_METRICS, key=len, reverse=True):  # aupr_in_ before a shorter prefix
        if name.startswith(kind + "_") and len(name) > len(kind) + 1:
            return kind, name[len(kind) + 1:]
    raise ValueError(f"metric: expected id_acc or <{'|'.join(DETECTION_METRICS)}>_<score>, got {name!r}")


def is_metric_name(name: str) -> bool:
    """Whether ``name`` is ``id_acc`` or ``<kind>_<registered score>``."""
    try:
        kind, score = parse_metric(name)
    except ValueError:
        return False
    return score is None or score in SCORES


# ------------------------------------------------------------------------------------------------ scores

#: name -> OODScore subclass. Insertion order is the reporting order.
SCORES: Registry = Registry("OOD score")


def register_score(name: str) -> Callable[[type], type]:
    """Class decorator registering an :class:`OODScore` subclass under ``name`` (also set as ``cls.name``)."""

    def decorator(cls: type) -> type:
        cls.name = name
        return SCORES.register(name)(cls)

    return decorator


def make_score(name: str, **kwargs) -> OODScore:
    """Instantiate the registered score ``name`` with its keyword parameters (any error: ``RegistryError``)."""
    return SCORES.build(name, **kwargs)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore each submodule's previous ``training`` flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _device(model: nn.Module, fallback: torch.Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else fallback.device


def _batches(model: nn.Module, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    device = _device(model, images)
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size].to(device, non_blocking=True)


class OODScore:
    """Base class. Most scores are functions of the model's outputs: they implement
    ``_score_outputs(logits, features) -> tensor (B,)`` (and, if they fit state on the ID train set,
    ``setup_features`` plus ``needs_setup = True``), so one forward pass can feed all of them
    (:func:`evaluate_ood`). Scores that need the model itself (e.g. input perturbation) set
    ``from_outputs = False`` and override ``_score_batch(model, x)`` (called under no_grad, in eval mode)."""

    name = "base"
    needs_setup = False
    from_outputs = True

    def __init__(self):
        self.fitted = False

    def setup(self, model: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
              batch_size: int = 512) -> None:
        """Fit on the ID training set: ``train_images`` (N, C, H, W) float, ``train_labels`` (N,) long."""
        if self.needs_setup:
            _check_train(train_images, train_labels)
            self.setup_features(_features(model, train_images, batch_size), train_labels)
        self.fitted = True

    def setup_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit on penultimate ID-train ``features`` (N, D) and ``labels`` (N,)."""
        self.fitted = True

    def score_outputs(self, logits: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        """Scores from precomputed ``logits`` (N, C) and ``features`` (N, D) -> (N,) float64."""
        if not self.from_outputs:
            raise TypeError(f"OOD score {self.name!r} needs the model, not its outputs")
        if self.needs_setup and not self.fitted:
            raise RuntimeError(f"OOD score {self.name!r} needs setup() before scoring")
        return self._score_outputs(logits, features).detach().double().cpu().numpy()

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits, features = model(x, return_features=True)
        return self._score_outputs(logits, features)

    def _score_outputs(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """-> (N,) float64, higher = more in-distribution."""
        if self.needs_setup and not self.fitted:
            raise RuntimeError(f"OOD score {self.name!r} needs setup(model, train_images, train_labels) "
                               "before score()")
        with eval_mode(model):
            out = [self._score_batch(model, x).detach().double().cpu() for x in _batches(model, images, batch_size)]
        return torch.cat(out).numpy() if out else np.empty(0)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if isinstance(v, (int, float)) and k != "fitted")
        return f"{type(self).__name__}({params})"


@torch.no_grad()
def _outputs(model: nn.Module, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and penultimate features (N, D), float32 on the model's device, model in eval mode."""
    with eval_mode(model):
        outs = [model(x, return_features=True) for x in _batches(model, images, batch_size)]
    return torch.cat([o[0].float() for o in outs]), torch.cat([o[1].float() for o in outs])


def _features(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Penultimate features (N, D) in float64 on the CPU, model in eval mode."""
    return _outputs(model, images, batch_size)[1].double().cpu()


def _check_train(train_images: torch.Tensor, train_labels: torch.Tensor) -> None:
    if len(train_images) == 0 or len(train_images) != len(train_labels):
        raise ValueError(f"train_images, train_labels: expected equal non-zero lengths, "
                         f"got {len(train_images)} and {len(train_labels)}")


@register_score("msp")
class MSP(OODScore):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017). In [1/C, 1]."""

    def _score_outputs(self, logits, features):
        return logits.double().softmax(1).amax(1)


@register_score("energy")
class Energy(OODScore):
    """Negative free energy ``T * logsumexp(logits / T)`` (Liu et al., 2020); unbounded, in logit units."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = float(temperature)

    def _score_outputs(self, logits, features):
        return self.temperature * torch.logsumexp(logits.double() / self.temperature, 1)


@register_score("maha")
class Mahalanobis(OODScore):
    """``-min_c (f - mu_c)^T Sigma^+ (f - mu_c)`` on penultimate features f (Lee et al., 2018, without input
    preprocessing or layer ensembles): class means mu_c and one tied covariance Sigma, float64, fit in setup."""

    needs_setup = True

    def setup_features(self, features, labels):
        f, y = features.double().cpu().numpy(), labels.cpu().numpy()
        classes, idx = np.unique(y, return_inverse=True)
        self.means = np.stack([f[idx == c].mean(0) for c in range(len(classes))])  # (C, D)
        precision = EmpiricalCovariance(assume_centered=True).fit(f - self.means[idx]).precision_  # pinvh
        lam, vec = np.linalg.eigh((precision + precision.T) / 2)
        self.whiten = vec * np.sqrt(np.clip(lam, 0, None))  # (D, D): d2 = |(f - mu) W|^2
        self.fitted = True

    def _score_outputs(self, logits, features):
        f = features.double().cpu().numpy()
        d2 = cdist(f @ self.whiten, self.means @ self.whiten, "sqeuclidean")  # (B, C)
        return torch.from_numpy(-d2.min(1))


@register_score("odin")
class ODIN(OODScore):
    """ODIN (Liang et al., 2018): ``x' = x - eps * sign(-grad_x log max softmax(f(x)/T))``, score
    ``max softmax(f(x')/T)``. eps is in normalised-input units (no per-channel std division)."""

    from_outputs = False
    #: images per input-gradient pass. In eval mode each image's gradient depends on that image only, so
    #: sub-batching is exact; it bounds the activation memory kept for backward (a 1024-image CIFAR batch
    #: otherwise holds ~3 GB on CPU).
    grad_batch = 128

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014):
        super().__init__()
        self.temperature, self.epsilon = float(temperature), float(epsilon)

    def _perturb(self, model, x):
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            nll = -(model(x) / self.temperature).log_softmax(1).amax(1).sum()
            (grad,) = torch.autograd.grad(nll, x)  # leaves the parameters' .grad alone
        return x.detach() - self.epsilon * grad.sign()

    def _score_batch(self, model, x):
        if self.epsilon:
            x = torch.cat([self._perturb(model, part) for part in x.split(self.grad_batch)])
        return (model(x).double() / self.temperature).softmax(1).amax(1)


@register_score("knn")
class KNN(OODScore):
    """Deep nearest neighbours (Sun et al., 2022): ``-||z - z_(k)||`` with z the L2-normalised penultimate
    feature and z_(k) its k-th nearest normalised ID-train feature. In [-2, 0]; k is clamped to the train size."""

    needs_setup = True

    def __init__(self, k: int = 50):
        super().__init__()
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        self.k = int(k)

    def setup_features(self, features, labels):
        device = features.device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.bank = F.normalize(features.to(dtype), dim=1)  # (N, D)
        self.fitted = True

    def _score_outputs(self, logits, features):
        z = F.normalize(features.to(self.bank), dim=1)
        sim = torch.topk(z @ self.bank.T, min(self.k, len(self.bank)), dim=1).values[:, -1]  # k-th largest cos
        return -(2 - 2 * sim).clamp_min(0).sqrt()


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_ood(model: nn.Module, id_images: torch.Tensor, id_labels: torch.Tensor, ood_images: torch.Tensor,
                 train_images: torch.Tensor, train_labels: torch.Tensor,
                 scores: tuple[str, ...] = ("msp", "energy", "maha"), batch_size: int = 512) -> dict[str, float]:
    """The metrics of :func:`metric_names`: ID accuracy and, per score s, ``auroc_s``, ``aupr_in_s``,
    ``aupr_out_s``, ``fpr95_s`` (fractions in [0, 1]).

    ``id_images``/``id_labels``: ID test set; ``ood_images``: OOD test set; ``train_*``: ID training set used by
    scores that fit state (e.g. maha, knn). Scores use their default parameters.
    """
    made = [make_score(name) for name in scores]
    id_out, ood_out = _outputs(model, id_images, batch_size), _outputs(model, ood_images, batch_size)
    out = {"id_acc": float((id_out[0].argmax(1).cpu() == id_labels.cpu()).double().mean())}
    train_features = None
    for name, s in zip(scores, made):
        if s.from_outputs:  # one shared forward pass per image set
            if s.needs_setup:
                if train_features is None:
                    train_features = _outputs(model, train_images, batch_size)[1]
                s.setup_features(train_features, train_labels)
            i, o = s.score_outputs(*id_out), s.score_outputs(*ood_out)
        else:
            s.setup(model, train_images, train_labels, batch_size)
            i, o = s.score(model, id_images, batch_size), s.score(model, ood_images, batch_size)
        out.update({f"{kind}_{name}": metric(i, o) for kind, metric in DETECTION_METRICS.items()})
    return out
