"""The plain-words parts of a DCSOD run's ``report.md``: the task, what the numbers mean, whether the search beat
what came before it, and warnings about noise. Pure functions of plain inputs (no run directory, no I/O), so
each sentence is tested on constructed inputs.

Conventions: metrics are fractions in [0, 1] named as in :func:`trainables.image.ood.metric_names` (``auroc_msp``,
``fpr95_energy``, ``id_acc``, ...); every OOD score is "higher = more in-distribution"; AUROC and FPR95 take ID
as the positive class (``fpr95``: the fraction of OOD images accepted at the threshold that keeps 95 % of ID
images; ``openood_fpr95``: OpenOOD's OOD-positive variant). ``summary`` is
:meth:`trainables.image.data.Protocol.summary`
(image counts per part, and ``id_classes`` / ``aux_classes`` / ``ood_classes`` where the protocol names them).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from search_space.predictor_quality import correlation_text
from trainables.image.ood import parse_metric

#: A rank correlation on fewer architectures than this is "not a result" in report.md.
MIN_RESULT_POINTS = 5
#: Validation splits (ID + OOD images) smaller than this get a warning: below it an AUROC of 0.8 measured on
#: half ID, half OOD images has a Hanley–McNeil standard error above 0.02.
SMALL_SPLIT = 500
#: The AUROC at which :func:`validation_size_warning` states why :data:`SMALL_SPLIT` is small.
REFERENCE_AUROC = 0.8


def _finite(values: Sequence) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _count(n: int, noun: str) -> str:
    """``_count(1, "training")`` -> ``"1 training"``; ``_count(3, "training")`` -> ``"3 trainings"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def class_text(names: Sequence[str], limit: int = 10) -> str:
    """``["0", "1", "2"]`` -> ``"0, 1, 2"``; more than ``limit`` names: the first ``limit``, then ``", … (N
    classes)"``."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names)} classes)"


# --- the task -----------------------------------------------------------------------------------------------

def _role_line(label: str, names: Sequence[str] | None, fallback: str, role: str, images: str = "") -> str:
    """``- **label**: names (k classes[, images]). role``, or ``fallback`` in place of the names."""
    count = f"{len(names)} {'class' if len(names) == 1 else 'classes'}" if names else ""
    what = f"{class_text(names)} ({', '.join(x for x in (count, images) if x)})" if names else fallback
    return f"- **{label}**: {what}. {role}".rstrip()


def task_section(protocol: str, summary: dict | None, description: str = "", error: str | None = None) -> list[str]:
    """report.md's "The task": which classes are ID, auxiliary outliers and OOD, and how many images each split
    holds. ``summary``: :meth:`Protocol.summary` of the run's protocol, or None when it could not be built
    (``error`` then says why); ``description``: the protocol's registry docstring, quoted when the protocol does
    not name its classes."""
    lines = ["## The task", ""]
    if summary is None:
        return [*lines, f"Protocol `{protocol}`: {description or 'no description'}", "",
                f"Its classes and image counts could not be read: {error}.", ""]
    ids, aux, ood = (summary.get(k) for k in ("id_classes", "aux_classes", "ood_classes"))
    if not (ids and ood) and description:
        lines += [f"Protocol `{protocol}`, as its registry entry describes it: {description}", ""]
    n_aux = summary.get("aux", 0)
    aux_fallback = (f"{n_aux:,} images" + (f" from `{summary['aux_path']}`" if summary.get("aux_path") else "")
                    if n_aux else "none: training sees ID images only")
    lines += [
        _role_line("In-distribution (ID)", ids, f"{summary['num_classes']} classes (not named by the protocol)",
                   "The network learns to classify these; their images should get a high in-distribution score."),
        _role_line("Auxiliary outliers", aux if n_aux else None, aux_fallback,
                   "Shown during training as examples of what is not ID (outlier exposure, distillation); never "
                   "used to score a candidate." if n_aux else "", images=f"{n_aux:,} images"),
        _role_line("OOD test classes", ood, "the protocol's OOD data (classes not named by the protocol)",
                   "Never trained on; the detector should give their images a low in-distribution score."),
        f"- **Images**: candidates are ranked on the validation split ({summary['id_val']:,} ID, "
        f"{summary['ood_val']:,} OOD); the final model is scored on the test split ({summary['id_test']:,} ID, "
        f"{summary['ood_test']:,} OOD); {summary['id_train']:,} ID training images.",
        "",
    ]
    return lines


# --- standard errors ----------------------------------------------------------------------------------------

def auroc_standard_error(auroc: float, n_id: int, n_ood: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUROC measured on ``n_id`` positive (ID) and ``n_ood``
    negative (OOD) images: ``sqrt((A(1−A) + (n_id−1)(Q1−A²) + (n_ood−1)(Q2−A²)) / (n_id·n_ood))`` with
    ``Q1 = A/(2−A)``, ``Q2 = 2A²/(1+A)`` (exponential score distributions; a rough guide for others)."""
    if n_id < 1 or n_ood < 1:
        raise ValueError(f"n_id, n_ood: expected at least one image each, got {n_id}, {n_ood}")
    a = float(auroc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt((a * (1 - a) + (n_id - 1) * (q1 - a * a) + (n_ood - 1) * (q2 - a * a)) / (n_id * n_ood))


#: Metric kind -> the images whose count its binomial standard error divides by.
_BINOMIAL_OVER = {"id_acc": "ID", "fpr95": "OOD", "openood_fpr95": "ID"}


def metric_standard_error(metric: str, value: float, n_id: int, n_ood: int) -> float | None:
    """A rough standard error of ``metric`` = ``value`` measured on ``n_id`` ID and ``n_ood`` OOD images:
    Hanley–McNeil for ``auroc_*``, binomial ``sqrt(p(1−p)/n)`` for ``id_acc`` (n = ID images), ``fpr95_*`` (OOD
    images) and ``openood_fpr95_*`` (ID images); None for the AUPR kinds (no simple formula)."""
    kind, _ = parse_metric(metric)
    if kind == "auroc":
        return auroc_standard_error(value, n_id, n_ood)
    group = _BINOMIAL_OVER.get(kind)
    return None if group is None else math.sqrt(value * (1 - value) / (n_ood if group == "OOD" else n_id))


# --- what the numbers mean ----------------------------------------------------------------------------------

def _image_of(group: str, classes: Sequence[str] | None, split: str) -> str:
    return f"{split} image of an {group} class ({class_text(classes)})" if classes else f"{group} {split} image"


def _images_of(group: str, classes: Sequence[str] | None, split: str) -> str:
    return f"the {group} {split} images ({class_text(classes)})" if classes else f"the {group} {split} images"


def metric_meaning(metric: str, value: float, id_classes: Sequence[str] | None = None,
                   ood_classes: Sequence[str] | None = None, counts: tuple[int, int] | None = None,
                   split: str = "test") -> str:
    """One sentence saying what ``metric`` = ``value`` means in this run's terms (its classes, its score).
    ``counts``: (ID, OOD) images of ``split``, for the chance level of the AUPRs and a standard error."""
    kind, score = parse_metric(metric)
    pct, by = _percent(value), f"the `{score}` score" if score else ""
    head = f"`{metric}` = {value:.3f}"
    if kind == "id_acc":
        k = len(id_classes) if id_classes else None
        text = f"{head}: {pct} of {_images_of('ID', id_classes, split)} get their correct class"
        text += f"; chance is 1/{k} = {1 / k:.2f}" if k else ""
    elif kind == "auroc":
        text = (f"{head} (AUROC of {by}): a randomly chosen {_image_of('ID', id_classes, split)} gets a higher "
                f"in-distribution score than a randomly chosen {_image_of('OOD', ood_classes, split)} {pct} of the "
                "time; 0.5 is chance, 1 a perfect separation")
    elif kind == "fpr95":
        text = (f"{head} (FPR95 of {by}): with the threshold set so that 95 % of "
                f"{_images_of('ID', id_classes, split)} are accepted as in-distribution, {pct} of "
                f"{_images_of('OOD', ood_classes, split)} are accepted too; lower is better, 0 is perfect and a "
                "score no better than chance gives 0.95")
    elif kind == "openood_fpr95":
        text = (f"{head} (OpenOOD's FPR@95 of {by}, OOD positive): with the threshold set so that 95 % of "
                f"{_images_of('OOD', ood_classes, split)} are flagged as OOD, {pct} of "
                f"{_images_of('ID', id_classes, split)} are flagged too; lower is better, 0.95 is chance")
    else:  # aupr_in, aupr_out and their OpenOOD (trapezoidal) variants
        positive, other = ("ID", "OOD") if kind.endswith("_in") else ("OOD", "ID")
        area = "OpenOOD's trapezoidal AUPR" if kind.startswith("openood") else "average precision"
        classes = id_classes if positive == "ID" else ood_classes
        text = (f"{head} ({area} of {by}): how well ranking the pooled ID and OOD {split} images by "
                f"{by} puts {_images_of(positive, classes, split)} before the {other} ones; 1 is perfect")
        if counts:
            share = counts[0 if positive == "ID" else 1] / sum(counts)
            text += f", a random ranking gives their share of the pool, {share:.2f}"
    se = metric_standard_error(metric, value, *counts) if counts else None
    if se is not None:
        group = _BINOMIAL_OVER.get(kind)
        basis = (f"{counts[0]:,} ID and {counts[1]:,} OOD images" if group is None else
                 f"{counts[group == 'OOD']:,} {group} images")
        text += f" (standard error about {se:.3f} on {basis})"
    return text + "."


# --- the search against what came before it -----------------------------------------------------------------

def search_verdict(metric: str, before: Sequence[float], search: Sequence[float], noise: float | None = None) -> str:
    """Whether the search's best measured ``metric`` (validation split, higher = better) beat the best warmup or
    distillation training before it, with both numbers. ``noise``: a difference below it (e.g. 2 standard errors
    of one validation measurement) is called possibly luck of the split."""
    before, search = _finite(before), _finite(search)
    if not before:
        best = f" ({max(search):.4f})" if search else ""
        return (f"No warmup or distillation training finished with a finite {metric}, so there is nothing to "
                f"compare the search's best{best} with.")
    b = max(before)
    prior = f"the best of the {_count(len(before), 'warmup or distillation training')} before it, {b:.4f}"
    if not search:
        return (f"No: the search measured no architecture with a finite {metric} (search.trials = 0, or every "
                f"proposal failed), so it did not beat {prior}.")
    s = max(search)
    relation = "above" if s > b else "equal to" if s == b else "below"
    text = (f"{'Yes' if s > b else 'No'}: the best of the search's {_count(len(search), 'trained proposal')} measured "
            f"{metric} {s:.4f} (validation split), {relation} {prior} ({s - b:+.4f})")
    if noise is not None and 0 < abs(s - b) < noise:
        text += (f"; a difference smaller than {noise:.4f} (twice the standard error of one validation "
                 "measurement), so it may be luck of the split")
    return text + "."


# --- noise --------------------------------------------------------------------------------------------------

def validation_size_warning(metric: str, value: float, n_id: int, n_ood: int,
                            threshold: int = SMALL_SPLIT) -> str | None:
    """A warning when the validation split that ranks candidates holds fewer than ``threshold`` images (ID + OOD),
    with the standard error of ``metric`` at the champion's validation ``value`` (:func:`metric_standard_error`);
    None for a large enough split."""
    if n_id + n_ood >= threshold:
        return None
    se = metric_standard_error(metric, value, n_id, n_ood)
    if se is None:
        ref = auroc_standard_error(REFERENCE_AUROC, n_id, n_ood)
        error = (f"{metric} has no simple standard error, but an AUROC of {REFERENCE_AUROC} on that many images "
                 f"has one of about {ref:.3f}")
    else:
        error = (f"at the champion's validation {metric} of {value:.3f} the standard error of one measurement on "
                 f"that many images is about {se:.3f}, so candidates closer than about {2 * se:.3f} (2 SE) may be "
                 "ranked by luck of the split")
    why = auroc_standard_error(REFERENCE_AUROC, threshold // 2, threshold - threshold // 2)
    return (f"Small validation split: candidates are ranked on {n_id:,} ID and {n_ood:,} OOD images "
            f"({n_id + n_ood:,} < {threshold:,}); {error}. (Below {threshold:,} images, half ID and half OOD, an "
            f"AUROC of {REFERENCE_AUROC} has a Hanley–McNeil standard error above {why:.3f}.)")


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """``(mean(a) − mean(b), two-sided Welch p)`` over the finite values, or None with fewer than 2 in either.
    p is NaN when both samples are constant."""
    from scipy.stats import ttest_ind

    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    return float(np.mean(a) - np.mean(b)), float(ttest_ind(a, b, equal_var=False).pvalue)


def _sd(values: Sequence[float]) -> float:
    return float(np.std(_finite(values), ddof=1))


def missing_comparison_rows(compare: dict | None) -> tuple[int, list[str]]:
    """``(planned trainings, one phrase per failed one)`` of best.json's ``compare``, e.g. ``"the standard
    architecture resnet-8 (`resnet-depth8`), seed 1: <reason>"``; no phrases when every training finished (or
    the run's best.json predates the ``missing`` field)."""
    if not compare:
        return 0, []
    planned = len(compare["seeds"]) * len(compare["rows"])
    return planned, [f"the {row['role']} (`{row['arch_hash']}`), seed {m['seed']}: {m['error']}"
                     for row in compare["rows"] for m in row.get("missing", [])]


def incomplete_comparison_line(compare: dict | None) -> str | None:
    """The console's last line when comparison trainings failed (None when the comparison is complete)."""
    planned, missing = missing_comparison_rows(compare)
    if not missing:
        return None
    return (f"warning: the comparison is incomplete: {len(missing)} of {planned} trainings failed "
            f"({'; '.join(missing)}); report.md names the missing rows")


def seed_noise_warnings(compare: dict) -> list[str]:
    """Warnings for each architecture of best.json's ``compare`` (rows[0] is the champion) that the champion
    leads on mean test ``compare["metric"]`` but not beyond seed noise (Welch p ≥ 0.05, or a single seed), with
    both rows' seed-to-seed sd."""
    metric = compare["metric"]
    champion = compare["rows"][0]["values"][metric]
    out = []
    for row in compare["rows"][1:]:
        other = row["values"][metric]
        test = welch(champion, other)
        if test is None:
            a, b = _finite(champion), _finite(other)
            if a and b and np.mean(a) > np.mean(b):
                out.append(f"The champion's lead over the {row['role']} ({np.mean(a) - np.mean(b):+.4f} test "
                           f"{metric}) rests on a single seed: seed noise is unknown.")
            continue
        diff, p = test
        if diff > 0 and not p < 0.05:
            out.append(f"The champion's lead over the {row['role']} ({diff:+.4f} mean test {metric} over seeds "
                       f"{compare['seeds']}) is within seed noise: the seed-to-seed sd is {_sd(champion):.4f} for the "
                       f"champion and {_sd(other):.4f} for the {row['role']} (Welch p = {p:.2f}).")
    return out


def runner_up_warning(metric: str, champion: float, runner_up: tuple[str, float], seed_sd: float | None = None,
                      se: float | None = None) -> str | None:
    """A warning when the champion's validation ``metric`` leads the best other candidate, ``runner_up`` =
    ``(arch_hash, value)``, by less than the seed-to-seed sd of the champion's retrains (``seed_sd``) or the
    standard error of one validation measurement (``se``); None otherwise (also when the champion is behind)."""
    name, value = runner_up
    gap = champion - value
    noises = [(label, n) for label, n in (("the seed-to-seed sd of the champion's retrains at the final budget",
                                           seed_sd), ("the standard error of one validation measurement", se))
              if n is not None and math.isfinite(n) and gap < n]
    if gap < 0 or not noises:
        return None
    less = " and ".join(f"{label} ({n:.4f})" for label, n in noises)
    return (f"The champion's validation {metric} ({champion:.4f}) leads the runner-up `{name}` ({value:.4f}) by "
            f"only {gap:.4f}, less than {less}: which of the two is better is not settled by this run.")


# --- rank correlations --------------------------------------------------------------------------------------

def correlation_phrase(q: dict, statistic: str = "kendall_tau") -> str:
    """:func:`search_space.predictor_quality.correlation_text` (value, 95 % interval, n), marked "not a result"
    when n < :data:`MIN_RESULT_POINTS`."""
    text = correlation_text(q, statistic)
    if q.get("n", 0) < MIN_RESULT_POINTS:
        text += f" — not a result: fewer than {MIN_RESULT_POINTS} architectures"
    return text


def correlation_warning(what: str, q: dict) -> str | None:
    """A warning that a Kendall τ (``what``: whose, e.g. "The predictor's τ on its held-out architectures") rests
    on fewer than :data:`MIN_RESULT_POINTS` architectures; None otherwise."""
    n = q.get("n", 0)
    if n >= MIN_RESULT_POINTS:
        return None
    return (f"{what} rests on n={n}: not a result (fewer than {MIN_RESULT_POINTS} architectures; with so few points "
            "a rank correlation takes a few coarse values and even ±1 arises by chance).")
