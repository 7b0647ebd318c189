"""Performance predictors of predictor-based NAS: genotype encoding -> scalar metric.

Conventions: ``X`` is ``encode_many(genotypes)``, shape ``(N, D)`` (D = 120 for k = 6); ``y`` has shape
``(N,)`` and higher is better (e.g. OOD AUROC). Predictors standardise ``y`` internally and predict on
its original scale, as float64 of shape ``(M,)``. Fitting is deterministic given ``seed`` (on CPU) and
touches no global random state. A fitted predictor is saved as data, never as a pickle:
:meth:`Predictor.save` writes an ``.npz`` (its arrays plus its name, hyperparameters and target scaling as JSON)
and :func:`load_predictor` reads it with ``allow_pickle=False``, so a crafted file in a run directory cannot run
code when a rerun reads it back. :meth:`Predictor.to_state` gives the same content as JSON-able data (the arrays as
flat lists of numbers; :func:`predictor_from_state` reads it back), which the searcher's JSON state embeds.

>>> p = make_predictor("mlp", epochs=50)                         # doctest: +SKIP
>>> p, metrics = validate(p, X, y)  # 85/15 split -> kendall_tau, pearson_rho, n_train, n_val
>>> p.predict(encode_many(candidates))                           # (M,) float64
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import math
import os
import tempfile
import warnings
import zipfile

import numpy as np
import torch

from .registry import Registry

#: name -> :class:`Predictor` subclass.
PREDICTORS: Registry = Registry("predictor")
register_predictor = PREDICTORS.register


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread, then restore. Predictor matrices are tiny: extra threads only add
    synchronisation, and on a busy machine (Ray workers on every core) spinning OpenMP threads made a
    20-point fit take 15 s instead of 0.3 s (2-core development machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_predictor(name: str, **kwargs) -> Predictor:
    """Instantiate the registered predictor ``name`` (any error: a one-line ``RegistryError``)."""
    return PREDICTORS.build(name, **kwargs)


def _as_X(X, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-d array (N, D), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X: expected {n_features} features (as fitted), got {X.shape[1]}")
    if not np.isfinite(X).all():
        raise ValueError("X: contains NaN or inf")
    return X


class Predictor:
    """Base class: subclasses implement ``_fit(X, z, seed)`` on standardised targets ``z`` and
    ``_predict(X) -> (M,)`` on that standardised scale; :meth:`fit`/:meth:`predict` validate and rescale."""

    name = "base"
    stochastic = True  # whether different seeds may give different fits

    @classmethod
    def valid_kwargs(cls) -> list[str]:
        """The constructor's keyword arguments (its hyperparameters, each stored as an attribute)."""
        return list(inspect.signature(cls).parameters)

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Predictor:
        """Fit on ``X`` (N, D) and ``y`` (N,); N >= 2, all finite. Returns ``self``."""
        X = _as_X(X)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-d array (N,), got shape {y.shape}")
        if len(y) != len(X):
            raise ValueError(f"y: expected {len(X)} targets to match X, got {len(y)}")
        if len(y) < 2:
            raise ValueError(f"X, y: expected at least 2 samples, got {len(y)}")
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        self.y_mean_, std = float(y.mean()), float(y.std())
        self.y_scale_ = std if std > 0 else 1.0
        with one_thread():
            self._fit(X, ((y - self.y_mean_) / self.y_scale_).astype(np.float32), int(seed))
        self.n_features_ = X.shape[1]
        return self

    def _check_predict(self, X) -> np.ndarray:
        if getattr(self, "n_features_", None) is None:
            raise RuntimeError(f"predictor {self.name!r}: call fit() before predict()")
        return _as_X(X, self.n_features_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets for ``X`` (M, D): shape (M,), float64, on the scale of the fitted ``y``."""
        with one_thread():
            z = np.asarray(self._predict(self._check_predict(X)), dtype=np.float64)
        return z * self.y_scale_ + self.y_mean_

    def _fit(self, X: np.ndarray, z: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named numpy arrays (what :meth:`save` stores besides the hyperparameters)."""
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _meta(self, action: str) -> dict:
        """Name, hyperparameters and target scaling as JSON-able values (shared by :meth:`save` and
        :meth:`to_state`)."""
        if getattr(self, "n_features_", None) is None:
            raise RuntimeError(f"predictor {self.name!r}: call fit() before {action}()")
        return {"name": self.name, "kwargs": {k: getattr(self, k) for k in self.valid_kwargs()},
                "y_mean_": float(self.y_mean_), "y_scale_": float(self.y_scale_), "n_features_": int(self.n_features_)}

    def to_state(self) -> dict:
        """The fitted predictor as JSON-able data: :meth:`save`'s metadata (``name``, ``kwargs``, ``y_mean_``,
        ``y_scale_``, ``n_features_``) plus ``arrays``: each array of the fitted state as ``{"dtype", "shape",
        "data"}`` with ``data`` the flat list of its values (Python floats hold float32 and float64 exactly, and
        JSON writes them back exactly). :func:`predictor_from_state` reads it."""
        state = self._meta("to_state")
        arrays = {k: np.asarray(v) for k, v in self._arrays().items()}
        state["arrays"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
                           for k, v in arrays.items()}
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted predictor to ``path`` (``.npz``, atomically: temporary file, fsync, rename)."""
        meta = self._meta("save")
        arrays = {f"array_{k}": v for k, v in self._arrays().items()}
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.valid_kwargs())
        return f"{type(self).__name__}({args})"


def pairwise_hinge(pred: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Margin ranking loss over all pairs of the last axis (shape (..., B) -> (...)): the mean over pairs
    with ``target_i > target_j`` of ``max(0, margin - (pred_i - pred_j))``; ties are skipped, and a batch
    with no untied pair costs 0."""
    mask = (target[..., :, None] > target[..., None, :]).to(pred.dtype)
    hinge = torch.relu(margin - (pred[..., :, None] - pred[..., None, :]))
    return (hinge * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1.0)


def _forward(weights, x: torch.Tensor) -> torch.Tensor:
    """Stacked MLPs: weights ``[W (S, out, in), b (S, 1, out), ...]``, x (S, B, in) -> (S, B)."""
    for i in range(0, len(weights), 2):
        x = torch.baddbmm(weights[i + 1], x, weights[i].transpose(1, 2))
        if i + 2 < len(weights):
            x = torch.relu(x)
    return x.squeeze(-1)


@register_predictor("mlp")
class MLP(Predictor):
    """ReLU MLP trained with Adam on ``MSE + rank_weight · pairwise_hinge(margin)`` of standardised targets (the
    thesis's "MSE + ranking loss"; ``rank_weight = 0`` is plain MSE; the DCSOD pipeline sets it through
    ``predictor.args``, e.g. ``--set predictor.args.rank_weight=1.0``).

    The ranking term is a hinge (margin ranking loss) over all pairs in each mini-batch: for a pair whose
    true values satisfy ``y_i > y_j`` it costs ``max(0, margin - (ŷ_i - ŷ_j))`` (``margin`` in standard
    deviations of ``y``). Init (He-uniform hidden layers, zero biases) and shuffling use local
    ``torch.Generator`` s; the fitted weights are numpy arrays in ``weights_``, stacked over members.
    """

    name = "mlp"

    def __init__(self, hidden=(128, 128), epochs: int = 100, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 128, rank_weight: float = 0.1, margin: float = 0.1):
        self.hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive layer widths, got {hidden!r}")
        if epochs < 1 or batch_size < 2:
            raise ValueError(f"epochs, batch_size: expected >= 1 and >= 2, got {epochs}, {batch_size}")
        if lr <= 0 or weight_decay < 0 or rank_weight < 0 or margin < 0:
            raise ValueError("lr: expected > 0; weight_decay, rank_weight, margin: expected >= 0")
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.rank_weight, self.margin = int(batch_size), float(rank_weight), float(margin)

    def _member_seeds(self, seed: int) -> list[int]:
        return [seed]

    def _fit(self, X, z, seed):
        # All members train at once as one stacked network; Adam is elementwise, so this is exactly
        # independent training of each member (own init, own shuffles), at about the cost of one.
        gens = [torch.Generator().manual_seed(int(s)) for s in self._member_seeds(seed)]
        sizes = (X.shape[1], *self.hidden, 1)
        weights = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            bound = (6.0 / a) ** 0.5 if i < len(sizes) - 2 else a ** -0.5
            weights += [torch.stack([torch.empty(b, a).uniform_(-bound, bound, generator=g) for g in gens]),
                        torch.zeros(len(gens), 1, b)]
        for w in weights:
            w.requires_grad_()
        opt = torch.optim.Adam(weights, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        Xt, zt = torch.from_numpy(X), torch.from_numpy(z)
        n, bs = len(X), min(self.batch_size, len(X))
        for _ in range(self.epochs):
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
            for start in range(0, n, bs):
                idx = perms[:, start:start + bs]
                pred, target = _forward(weights, Xt[idx]), zt[idx]
                loss = (pred - target).square().mean(1)
                if self.rank_weight:
                    loss = loss + self.rank_weight * pairwise_hinge(pred, target, self.margin)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        self.weights_ = [w.detach().numpy().copy() for w in weights]

    def _arrays(self):
        return {f"w{i}": w for i, w in enumerate(self.weights_)}

    def _set_arrays(self, arrays):
        self.weights_ = [np.asarray(arrays[f"w{i}"], dtype=np.float32) for i in range(len(arrays))]

    def _members(self, X: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """Standardised predictions of each member, shape (S, M)."""
        weights = [torch.from_numpy(w) for w in self.weights_]
        n_members = len(weights[0])
        with torch.no_grad():
            out = [_forward(weights, torch.from_numpy(X[s:s + chunk]).expand(n_members, -1, -1)).numpy()
                   for s in range(0, max(len(X), 1), chunk)]
        return np.concatenate(out, axis=1).astype(np.float64)

    def _predict(self, X):
        return self._members(X).mean(0)


@register_predictor("mlp-ensemble")
class MLPEnsemble(MLP):
    """``n_members`` :class:`MLP` s (same keyword arguments) whose seeds derive from ``seed``;
    :meth:`predict` is the member mean and :meth:`predict_std` the member standard deviation."""

    name = "mlp-ensemble"
    # What inspect.signature (hence the registry's argument check and repr) reports instead of **mlp_kwargs.
    __signature__ = inspect.Signature([
        inspect.Parameter("n_members", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=5),
        *(p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(MLP).parameters.values()),
    ])

    def __init__(self, n_members: int = 5, **mlp_kwargs):
        if n_members < 1:
            raise ValueError(f"n_members: expected >= 1, got {n_members}")
        super().__init__(**mlp_kwargs)
        self.n_members = int(n_members)

    def _member_seeds(self, seed: int) -> list[int]:
        return [int(s) for s in np.random.SeedSequence(seed).generate_state(self.n_members)]

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        """Std (ddof=0) of the members' predictions for ``X`` (M, D): shape (M,), float64, scale of ``y``."""
        return self._members(self._check_predict(X)).std(0) * self.y_scale_


@register_predictor("ridge")
class RidgePredictor(Predictor):
    """Linear baseline: scikit-learn ``Ridge(alpha)`` on the raw encoding (deterministic; ignores seed)."""

    name = "ridge"
    stochastic = False

    def __init__(self, alpha: float = 1.0):
        if alpha < 0:
            raise ValueError(f"alpha: expected >= 0, got {alpha}")
        self.alpha = float(alpha)

    def _fit(self, X, z, seed):
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=self.alpha).fit(X, z)
        self.coef_, self.intercept_ = np.asarray(model.coef_, dtype=np.float64), float(model.intercept_)

    def _predict(self, X):
        return X.astype(np.float64) @ self.coef_ + self.intercept_

    def _arrays(self):
        return {"coef": self.coef_, "intercept": np.array(self.intercept_)}

    def _set_arrays(self, arrays):
        self.coef_, self.intercept_ = np.asarray(arrays["coef"], dtype=np.float64), float(arrays["intercept"])


#: Array dtypes a saved predictor may hold (never ``object``: only numbers are data).
_ARRAY_KINDS = "fiub"


def _build(meta, arrays: dict[str, np.ndarray]) -> Predictor:
    """A fitted predictor from :meth:`Predictor._meta`'s dict and its named arrays, checked by predicting one
    all-zero row (arrays that do not fit ``n_features_`` fail here, not at the first real prediction)."""
    if not isinstance(meta, dict) or not isinstance(meta["kwargs"], dict):
        raise ValueError("expected a dict with 'name', 'kwargs' (a dict), 'y_mean_', 'y_scale_', 'n_features_'")
    for k, v in arrays.items():
        if v.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"array {k!r}: dtype {v.dtype} is not numeric")
    predictor = make_predictor(meta["name"], **meta["kwargs"])
    predictor._set_arrays(arrays)
    predictor.y_mean_, predictor.y_scale_ = float(meta["y_mean_"]), float(meta["y_scale_"])
    n_features = meta["n_features_"]
    if isinstance(n_features, bool) or int(n_features) != n_features or n_features < 1:
        raise ValueError(f"n_features_: expected a positive integer, got {n_features!r}")
    predictor.n_features_ = int(n_features)
    if not (math.isfinite(predictor.y_mean_) and math.isfinite(predictor.y_scale_) and predictor.y_scale_ > 0):
        raise ValueError("y_mean_, y_scale_: expected finite numbers, y_scale_ > 0")
    try:
        predictor.predict(np.zeros((1, predictor.n_features_), dtype=np.float32))
    except (RuntimeError, IndexError, ValueError, TypeError) as err:
        raise ValueError(f"arrays do not make a {predictor.name!r} predictor of {predictor.n_features_} features "
                         f"({type(err).__name__})") from None
    return predictor


def _one_line(err: BaseException) -> str:
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_predictor(path: str | os.PathLike) -> Predictor:
    """A predictor written by :meth:`Predictor.save` (read with ``allow_pickle=False``); a one-line
    ``ValueError`` for anything else (a pickle, another format, a truncated file, an unknown predictor)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k.removeprefix("array_"): data[k] for k in data.files if k.startswith("array_")}
        return _build(meta, arrays)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:  # JSON errors too
        raise ValueError(f"{os.fspath(path)}: not a saved predictor ({_one_line(err)})") from None


def _array_from_state(name: str, entry) -> np.ndarray:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data"}:
        raise ValueError(f"array {name!r}: expected a dict with 'dtype', 'shape' and 'data'")
    dtype = np.dtype(entry["dtype"])
    shape, data = entry["shape"], entry["data"]
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"array {name!r}: dtype {dtype} is not numeric")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise ValueError(f"array {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise ValueError(f"array {name!r}: expected a list of {math.prod(shape)} values for shape {shape}")
    raw = np.asarray(data) if data else np.empty(0)
    if raw.ndim != 1 or raw.dtype.kind not in _ARRAY_KINDS:  # strings, None, nested lists: not numbers
        raise ValueError(f"array {name!r}: data must be a flat list of numbers")
    return raw.astype(dtype).reshape(shape)


def predictor_from_state(state) -> Predictor:
    """The fitted predictor :meth:`Predictor.to_state` describes; a one-line ``ValueError`` for anything
    malformed (a missing field, an unknown predictor or argument, arrays that are not numbers or do not fit)."""
    try:
        if not isinstance(state, dict) or not isinstance(state["arrays"], dict):
            raise ValueError("expected a dict with 'arrays' (a dict)")
        arrays = {str(k): _array_from_state(k, v) for k, v in state["arrays"].items()}
        return _build({k: v for k, v in state.items() if k != "arrays"}, arrays)
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        raise ValueError(f"predictor state: {_one_line(err)}") from None


def _nan_safe(value) -> float:
    value = float(value)
    return 0.0 if np.isnan(value) else value


def split_indices(n: int, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` index arrays of :func:`validate`'s seeded split of ``n`` samples (at least 2 in each)."""
    n_val = max(2, round(val_fraction * n))
    if n - n_val < 2:
        raise ValueError(f"X: {n} samples are too few for a train/validation split")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val:], perm[:n_val]


def validate(predictor, X: np.ndarray, y: np.ndarray, val_fraction: float = 0.15, seed: int = 0, **kwargs):
    """Fit on a seeded random ``1 - val_fraction`` of (X, y) and score the held-out rest.

    ``predictor`` is a registered name (built with ``**kwargs``) or an unfitted :class:`Predictor`
    instance (then no kwargs). ``seed`` drives both the split and the fit. Returns
    ``(fitted_predictor, {"kendall_tau", "pearson_rho", "n_train", "n_val"})`` with Python floats/ints;
    the predictor is fitted on the training part only. If the validation targets or predictions are
    constant, the correlations are undefined and reported as 0.0.
    """
    import scipy.stats

    if isinstance(predictor, str):
        predictor = make_predictor(predictor, **kwargs)
    elif kwargs:
        raise ValueError(f"kwargs: only allowed with a predictor name, got {sorted(kwargs)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction}")
    X, y = np.asarray(X), np.asarray(y)
    n = len(X)
    if y.shape != (n,):
        raise ValueError(f"y: expected shape ({n},) to match X, got {y.shape}")
    train, val = split_indices(n, val_fraction, seed)
    n_val = len(val)
    predictor.fit(X[train], y[train], seed=seed)
    pred, truth = predictor.predict(X[val]), y[val].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        constant = np.ptp(pred) == 0 or np.ptp(truth) == 0
        tau = 0.0 if constant else _nan_safe(scipy.stats.kendalltau(pred, truth).statistic)
        rho = 0.0 if constant else _nan_safe(scipy.stats.pearsonr(pred, truth).statistic)
    return predictor, {"kendall_tau": tau, "pearson_rho": rho, "n_train": len(train), "n_val": n_val}
