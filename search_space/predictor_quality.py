"""How well a predictor ranks architectures: Kendall τ and Pearson ρ with bootstrap intervals, and
out-of-fold predictions so that every architecture is scored by a predictor that never saw it.

>>> import numpy as np
>>> q = rank_correlation(np.arange(20.0), np.arange(20.0) + np.random.default_rng(0).normal(0, 3, 20))
>>> q["n"], q["kendall_tau"] > 0.5, q["tau_low"] <= q["kendall_tau"] <= q["tau_high"]
(20, True, True)

A τ on a handful of points is not a result: every number here comes with ``n`` and a percentile bootstrap
interval (resampling the (predicted, measured) pairs with replacement), and with fewer than
:data:`MIN_PAIRS` pairs the statistics are NaN rather than a misleading ±1.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .predictor import make_predictor

#: Fewer pairs than this: τ and ρ are reported as NaN (a rank correlation of 2 points is always ±1).
MIN_PAIRS = 4


def _tau_rho(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    import scipy.stats

    if np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = float(scipy.stats.kendalltau(pred, truth).statistic)
        rho = float(scipy.stats.pearsonr(pred, truth).statistic)
    return tau, rho


def rank_correlation(predicted, measured, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Kendall τ and Pearson ρ of ``predicted`` against ``measured`` (1-D, same length) with percentile
    bootstrap intervals: ``{"n", "kendall_tau", "tau_low", "tau_high", "pearson_rho", "rho_low", "rho_high"}``
    (Python floats; NaN when n < :data:`MIN_PAIRS` or either side is constant). Resamples whose statistic is
    undefined (constant) are left out of the interval."""
    pred, truth = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"predicted, measured: expected two 1-D arrays of one length, got {pred.shape}, {truth.shape}")
    n = len(pred)
    out = {"n": n, "kendall_tau": math.nan, "tau_low": math.nan, "tau_high": math.nan,
           "pearson_rho": math.nan, "rho_low": math.nan, "rho_high": math.nan}
    if n < MIN_PAIRS:
        return out
    out["kendall_tau"], out["pearson_rho"] = _tau_rho(pred, truth)
    rng = np.random.default_rng(seed)
    samples = [_tau_rho(pred[i], truth[i]) for i in rng.integers(0, n, size=(n_boot, n))]
    tail = 100 * (1 - confidence) / 2
    for column, (low, high) in ((0, ("tau_low", "tau_high")), (1, ("rho_low", "rho_high"))):
        values = np.array([s[column] for s in samples])
        values = values[np.isfinite(values)]
        if len(values):
            out[low], out[high] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return out


def fold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` disjoint index arrays covering ``range(n)`` (a seeded permutation cut into near-equal parts)."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds: expected an integer in [2, {n}] for {n} architectures, got {folds}")
    return [np.sort(part) for part in np.array_split(np.random.default_rng(seed).permutation(n), folds)]


def out_of_fold(predictor: str, X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0,
                **predictor_args) -> np.ndarray:
    """Predictions for every row of ``X``, each from the registered ``predictor`` fit on the other folds of
    :func:`fold_indices` (same folds for every label vector given the same ``n``, ``folds`` and ``seed``)."""
    X, y = np.asarray(X), np.asarray(y, dtype=float)
    if y.shape != (len(X),):
        raise ValueError(f"y: expected shape ({len(X)},) to match X, got {y.shape}")
    predictions = np.empty(len(y))
    for part in fold_indices(len(y), folds, seed):
        rest = np.setdiff1d(np.arange(len(y)), part)
        model = make_predictor(predictor, **predictor_args).fit(X[rest], y[rest], seed=seed)
        predictions[part] = model.predict(X[part])
    return predictions


def correlation_text(q: dict, statistic: str = "kendall_tau") -> str:
    """One phrase for reports: ``τ 0.41 (95% CI 0.12 to 0.66, n=30)``, or ``τ n/a (n=2, too few pairs)``."""
    symbol, low, high = {"kendall_tau": ("τ", "tau_low", "tau_high"),
                         "pearson_rho": ("ρ", "rho_low", "rho_high")}[statistic]
    value = q.get(statistic)
    if value is None or not math.isfinite(value):
        why = "too few pairs" if q.get("n", 0) < MIN_PAIRS else "constant values"
        return f"{symbol} n/a (n={q.get('n', 0)}, {why})"
    if q.get(low) is None or not math.isfinite(q[low]):
        return f"{symbol} {value:.2f} (n={q['n']})"
    return f"{symbol} {value:.2f} (95% CI {q[low]:.2f} to {q[high]:.2f}, n={q['n']})"


def cross_validated_correlation(predictor: str, X: np.ndarray, y: np.ndarray, folds: int = 5, repeats: int = 5,
                                n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                                **predictor_args) -> tuple[dict, np.ndarray]:
    """Kendall τ and Pearson ρ of :func:`out_of_fold` predictions against ``y``, over ``repeats`` fold
    assignments (fold and predictor seeds ``seed + r``). Returns ``(q, predictions)``: ``q`` has the keys of
    :func:`rank_correlation` (point values: the mean over repeats) plus ``repeats``; ``predictions`` (N,) are
    the mean out-of-fold predictions. The interval pools ``n_boot / repeats`` bootstrap resamples of every
    repeat, so it covers both the sampling of architectures and the arbitrary fold assignment (out-of-fold
    predictions of one fold share a model, so a bootstrap of a single assignment would be too narrow)."""
    runs = [out_of_fold(predictor, X, y, folds=folds, seed=seed + r, **predictor_args) for r in range(repeats)]
    per_repeat = [rank_correlation(p, y, n_boot=max(1, n_boot // repeats), confidence=confidence, seed=seed + r)
                  for r, p in enumerate(runs)]
    q = {"n": len(y), "repeats": repeats}
    for stat in ("kendall_tau", "pearson_rho"):
        values = [v[stat] for v in per_repeat if math.isfinite(v[stat])]
        q[stat] = float(np.mean(values)) if values else math.nan
    tail = 100 * (1 - confidence) / 2
    pred_runs = [np.asarray(p, dtype=float) for p in runs]
    rng = np.random.default_rng(seed)
    q.update(tau_low=math.nan, tau_high=math.nan, rho_low=math.nan, rho_high=math.nan)
    if len(y) >= MIN_PAIRS:
        samples = []
        for p in pred_runs:
            for idx in rng.integers(0, len(y), size=(max(1, n_boot // repeats), len(y))):
                samples.append(_tau_rho(p[idx], np.asarray(y, dtype=float)[idx]))
        samples = np.array(samples)
        for column, (low, high) in ((0, ("tau_low", "tau_high")), (1, ("rho_low", "rho_high"))):
            values = samples[:, column][np.isfinite(samples[:, column])]
            if len(values):
                q[low], q[high] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return q, np.mean(pred_runs, axis=0)
