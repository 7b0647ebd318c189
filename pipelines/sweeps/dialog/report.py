"""``report.md`` of a dialog sweep: what was run, a table like the thesis's Table 2.3 (per configuration mean ± sd
over seeds), a plain-words reading of cyclical vs monotonic and Gaussian vs semi-implicit with its seed noise,
generated examples and the plot.

Conventions (``trainables.text.dialog_metrics``): rec and KL in nats per response on the test split, rec-PPL per
predicted token, BLEU / BOW / distinct / act accuracy in [0, 1]. A difference between two levels of a factor
(e.g. cyclical vs monotonic with the posterior fixed) is *beyond seed noise* when Welch's t-test over the seeds
gives p < 0.05 (the repository's convention); with fewer than two seeds on a side it is *unmeasured*.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import write_text
from pipelines.sweeps.outputs import mean_sd

#: Table columns: metric -> (header, higher is better).
METRICS = {"rec_ppl": ("rec-PPL", False), "kl": ("KL", True), "bleu1_p": ("B1-P", True), "bleu1_r": ("B1-R", True),
           "bleu2_p": ("B2-P", True), "bleu2_r": ("B2-R", True), "bleu3_p": ("B3-P", True), "bleu3_r": ("B3-R", True),
           "bleu4_p": ("B4-P", True), "bleu4_r": ("B4-R", True), "bow_avg": ("BOW-A", True),
           "bow_extrema": ("BOW-E", True), "bow_greedy": ("BOW-G", True), "distinct_1": ("dist-1", True),
           "distinct_2": ("dist-2", True), "act_acc": ("act acc", True)}
#: Metrics of the reading, and the thesis's monotonic -> cyclical values on Switchboard (Table 2.3).
READING = {"rec_ppl": (36.16, 29.77), "kl": (0.265, 4.104), "bleu4_p": (0.185, 0.234), "bleu4_r": (0.122, 0.220)}
#: Test KL below this many nats per response: z carries next to nothing (posterior collapse).
COLLAPSE_KL = 0.1
#: Mean distinct-2 below this: the sampled responses repeat a few phrases (generation has not been learnt).
REPETITIVE_DISTINCT = 0.05


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (schedule, posterior) in results order: ``configuration``, ``schedule``, ``posterior``,
    ``seeds`` (complete rows), ``failed`` and ``<m>_mean``/``<m>_sd`` (sample sd, NaN under two seeds)."""
    if not len(results):
        raise ValueError("aggregate: the results table is empty")
    rows = []
    for (schedule, posterior), group in results.groupby(["schedule", "posterior"], sort=False):
        done = group[group["status"] == "complete"]
        row = {"configuration": f"{schedule} / {posterior}", "schedule": schedule, "posterior": posterior,
               "seeds": len(done), "failed": int((group["status"] == "failed").sum())}
        for m in METRICS:
            values = done[m].dropna() if m in done else pd.Series(dtype=float)
            row[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(agg: pd.DataFrame) -> str:
    """Markdown: configuration, seeds, failed, then mean ± sd of every metric some configuration has."""
    metrics = [m for m in METRICS if agg[f"{m}_mean"].notna().any()]
    head = ["configuration", "seeds", "failed", *[METRICS[m][0] for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in agg.to_dict("records"):
        cells = [row["configuration"], str(row["seeds"]), str(row["failed"]),
                 *[mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in metrics]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of two samples; NaN with fewer than two values on a side, 1 when both are
    constant and equal, 0 when both are constant and differ."""
    from scipy.stats import ttest_ind

    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def compare(results: pd.DataFrame, factor: str, base: str, other: str, fixed: str, level: str,
            metric: str) -> dict[str, Any] | None:
    """``other`` vs ``base`` of ``factor`` (``schedule`` or ``posterior``) at ``fixed`` = ``level`` on ``metric``:
    means, their difference, n per side and Welch's p. None when a side has no complete value."""
    done = results[(results["status"] == "complete") & (results[fixed] == level)]
    a = done[done[factor] == base][metric].dropna().tolist()
    b = done[done[factor] == other][metric].dropna().tolist()
    if not a or not b:
        return None
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    return {"base": mean_a, "other": mean_b, "diff": mean_b - mean_a, "n": (len(a), len(b)), "p": welch_p(a, b)}


def noise_words(c: Mapping[str, Any]) -> str:
    """``beyond/within seed noise (Welch p = …, n = …)``; ``""`` when unmeasured (under two seeds a side)."""
    if math.isnan(c["p"]):
        return ""
    verdict = "beyond seed noise" if c["p"] < 0.05 else "within seed noise"
    return f"{verdict}, Welch p = {c['p']:.3f} over {c['n'][0]} and {c['n'][1]} seeds"


def factor_reading(results: pd.DataFrame, factor: str, levels: Sequence[str], fixed: str,
                   fixed_levels: Sequence[str]) -> list[str]:
    """One bullet per (later level vs the first) × level of the other factor: each of :data:`READING`'s metrics
    as ``base mean → other mean`` with its seed-noise verdict."""
    lines = []
    base = levels[0]
    for other in levels[1:]:
        for level in fixed_levels:
            parts = []
            for m in READING:
                c = compare(results, factor, base, other, fixed, level, m)
                if c is None:
                    continue
                note = noise_words(c)
                parts.append(f"{METRICS[m][0]} {c['base']:.3f} → {c['other']:.3f}" + (f" ({note})" if note else ""))
            if parts:
                lines.append(f"**`{other}` vs `{base}`** ({fixed} `{level}`): " + "; ".join(parts) + ".")
    return lines


def thesis_direction(results: pd.DataFrame, posterior: str) -> str | None:
    """Whether monotonic → cyclical moves each :data:`READING` metric the way the thesis's Table 2.3 does."""
    agree = []
    for m, (mono, cyc) in READING.items():
        c = compare(results, "schedule", "monotonic", "cyclical", "posterior", posterior, m)
        if c is None:
            return None
        same = (c["diff"] > 0) == (cyc > mono)
        agree.append(f"{METRICS[m][0]} {'same direction' if same else 'opposite direction'} "
                     f"(thesis {mono} → {cyc}; here {c['base']:.3f} → {c['other']:.3f})")
    return (f"**Against the thesis (Table 2.3, monotonic → cyclical, `{posterior}`)**: " + "; ".join(agree) + ". "
            "Directions only (the verdicts above say which differences exceed seed noise); absolute values are not "
            "comparable: this run's data, model size and budget are smaller, and BLEU is "
            "smoothed differently (trainables/text/dialog_metrics.py).")


def reading(results: pd.DataFrame, agg: pd.DataFrame, settings: Mapping[str, Any]) -> list[str]:
    """The plain-words reading, one Markdown bullet per finding."""
    schedules, posteriors = list(settings["schedules"]), list(settings["posteriors"])
    lines = []
    if int(agg["seeds"].max()) <= 1:
        lines.append("**One seed per configuration**: no difference below can be told from seed noise.")
    lines.append("KL is the information z keeps about the response given the context (higher: more in z); "
                 "rec-PPL is how well the decoder reconstructs the response from z (lower is better); BLEU precision "
                 "rewards every sampled response for resembling the reference, recall rewards the best of them, so "
                 "recall rising more than precision means more diverse samples.")
    lines += factor_reading(results, "schedule", schedules, "posterior", posteriors)
    lines += factor_reading(results, "posterior", posteriors, "schedule", schedules)
    if {"monotonic", "cyclical"} <= set(schedules):
        lines += [t for p in posteriors if (t := thesis_direction(results, p))]
    lines.append(collapse_reading(results))
    repetitive = agg[agg["distinct_2_mean"] < REPETITIVE_DISTINCT]
    if len(repetitive):
        lines.append(f"**Repetitive responses**: distinct-2 below {REPETITIVE_DISTINCT} in {len(repetitive)} of "
                     f"{len(agg)} configurations (max {agg['distinct_2_mean'].max():.4f}): the samples repeat a few "
                     "generic phrases, so BLEU, BOW and act accuracy here compare generic responses; train longer "
                     "(epochs) or at the `swda` preset's scale for responses worth comparing.")
    failed = results[results["status"] == "failed"]
    if len(failed):
        lines.append(f"**Failed**: {len(failed)} of {len(results)} trainings (reasons in results.parquet's `error`).")
    return [f"- {line}" for line in lines]


def collapse_reading(results: pd.DataFrame) -> str:
    """Which configurations collapsed (test KL < :data:`COLLAPSE_KL`) in every seed, and which in some seeds only."""
    done = results[(results["status"] == "complete") & results["kl"].notna()]
    every, some = [], []
    for (schedule, posterior), group in done.groupby(["schedule", "posterior"], sort=False):
        low = group[group["kl"] < COLLAPSE_KL]["seed"].tolist()
        label = f"{schedule} / {posterior}"
        if len(low) == len(group):
            every.append(label)
        elif low:
            some.append(f"{label} ({len(low)} of {len(group)} seeds: {', '.join(map(str, low))})")
    if not every and not some:
        return f"**Posterior collapse**: none (every test KL ≥ {COLLAPSE_KL} nats per response)."
    parts = ([f"in every seed: {'; '.join(every)}"] if every else []) + (
        [f"in some seeds only: {'; '.join(some)} — such a configuration's mean ± sd mixes two regimes"] if some else [])
    return (f"**Posterior collapse** (test KL < {COLLAPSE_KL} nats per response: the decoder ignores z) "
            + "; ".join(parts) + ".")


def examples_section(examples: Mapping[str, Sequence[Mapping[str, Any]]], limit: int = 1) -> list[str]:
    """The first ``limit`` test contexts with the reference and each configuration's samples (its first seed)."""
    if not examples:
        return []
    names = sorted(examples)
    lines = ["## Examples", "", "Greedy responses decoded from z ~ p(z|c), first seed of each configuration.", ""]
    for i in range(min(limit, min(len(examples[n]) for n in names))):
        first = examples[names[0]][i]
        lines += ["**Context** (oldest first):", "", *[f"> {u}  " for u in first["context"]], "",
                  f"**Reference**: {first['reference']}", ""]
        for name in names:
            lines.append(f"- `{name}`: " + " | ".join(s or "(empty)" for s in examples[name][i]["samples"]))
        lines.append("")
    return lines


def write_report(path: Path, settings: Mapping[str, Any], results: pd.DataFrame, facts: Mapping[str, Any],
                 plots: Sequence[Path], examples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write ``report.md`` atomically. ``facts``: ``data`` (the corpus in words), ``seeds``, ``seconds``, ``rows``,
    ``failed``, ``batches_per_epoch``, ``mlflow`` (in words); ``examples``: configuration -> its examples."""
    s = settings
    agg = aggregate(results)
    parts = [
        f"# Dialog CVAE sweep `{s['preset']}`", "", "## What was run", "",
        f"- **Data**: {facts['data']}.",
        f"- **Grid**: schedules {s['schedules']} × posteriors {s['posteriors']} × seeds {facts['seeds']} "
        f"= {len(s['schedules']) * len(s['posteriors']) * len(facts['seeds'])} trainings; dialog-act knowledge "
        f"{'on' if s['act_knowledge'] else 'off'}, aggressive training {'on' if s['aggressive'] else 'off'}.",
        f"- **Budget per training**: {s['epochs']} epochs × {facts['batches_per_epoch']} updates (batch "
        f"{s['batch_size']}, lr {s['lr']}), latent {s['latent_dim']} dims; {s['samples']} sampled responses per test "
        f"context; {s['concurrency']} trainings at once, {s['cpus_per_trial']} CPU / {s['gpus_per_trial']} GPU each.",
        f"- **Wall time**: {facts['seconds']:.0f} s for {facts['rows']} trainings ({facts['failed']} failed). Every "
        "setting is in manifest.json and in the MLflow parent run's params.", "",
        "## Results (test split)", "",
        "Mean ± sd over the seeds that completed. rec-PPL per predicted token, KL in nats per response; BLEU-n "
        "precision (P: mean over the samples) and recall (R: best sample), BOW embedding average / extrema / greedy "
        "(word vectors from the training utterances), distinct-1/2 over all samples, dialog-act accuracy of the act "
        "predicted from [c, z].", "", results_table(agg), "",
        "## Reading", "", *reading(results, agg, s), "", *examples_section(examples), "## Plots", ""]
    for plot in plots:
        parts += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    parts += ["## Tracking", "", f"MLflow: {facts['mlflow']}.", ""]
    return write_text(path, "\n".join(parts))
