"""``report.md`` of a dialog sweep: what was run, tables like the thesis's Table 2.3 (per configuration mean ± sd
over seeds), a plain-words reading of every grid axis (``pipelines.sweeps.dialog.axes.AXES``: cyclical vs
monotonic, one posterior vs another, CVAE+BoW vs CVAE) with its seed noise, generated examples and the plots.

Conventions (``trainables.text.dialog_metrics``): rec and KL in nats per response on the test split, rec-PPL per
predicted token, response length in words, BLEU / distinct / act accuracy in [0, 1], BOW cosines in [−1, 1]. A
difference between two levels of an axis (e.g. cyclical vs monotonic with the posterior and the bow setting
fixed) is *beyond seed noise* when Welch's t-test over the seeds gives p < 0.05 (the repository's convention);
with fewer than two seeds on a side it is *unmeasured*.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import write_text
from pipelines.sweeps.dialog import axes
from pipelines.sweeps.outputs import mean_sd

#: The main table (Table 2.3's columns, then diversity and act accuracy): metric -> header.
METRICS = {"rec_ppl": "rec-PPL", "kl": "KL", "bleu4_p": "B4-P", "bleu4_r": "B4-R", "bleu4_f1": "B4-F1",
           "bow_avg_p": "A-BOW-P", "bow_avg_r": "A-BOW-R", "bow_extrema_p": "E-BOW-P", "bow_extrema_r": "E-BOW-R",
           "bow_greedy_p": "G-BOW-P", "bow_greedy_r": "G-BOW-R", "intra_dist1": "intra-1", "intra_dist2": "intra-2",
           "inter_dist1": "inter-1", "inter_dist2": "inter-2", "response_len": "len", "act_acc": "act acc"}
#: The second table: BLEU-1..3 precision, recall and F1.
BLEU_METRICS = {f"bleu{n}_{s}": f"B{n}-{s.upper()}" for n in (1, 2, 3) for s in ("p", "r", "f1")}
HEADERS = {**METRICS, **BLEU_METRICS}
#: Metrics of the reading, and the thesis's monotonic -> cyclical values of its CVAE rows (no bag-of-words loss) on
#: Switchboard (Table 2.3); the direction check compares them with the ``no-bow`` configurations.
READING = {"rec_ppl": (36.16, 29.77), "kl": (0.265, 4.104), "bleu4_p": (0.185, 0.234), "bleu4_r": (0.122, 0.220)}
#: Test KL below this many nats per response: z carries next to nothing (posterior collapse).
COLLAPSE_KL = 0.1
#: Mean inter-distinct-2 below this: the sampled responses repeat a few phrases (generation has not been learnt).
REPETITIVE_DISTINCT = 0.05


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (combination of the grid axes) in results order: ``configuration`` (its label),
    the axes' columns, ``seeds`` (complete rows), ``failed`` and ``<m>_mean``/``<m>_sd`` of every metric of
    :data:`HEADERS` (sample sd, NaN under two seeds)."""
    if not len(results):
        raise ValueError("aggregate: the results table is empty")
    rows = []
    for key, group in results.groupby(list(axes.COLUMNS), sort=False):
        values = dict(zip(axes.COLUMNS, key))
        done = group[group["status"] == "complete"]
        row = {"configuration": axes.label(values), **values, "seeds": len(done),
               "failed": int((group["status"] == "failed").sum())}
        for m in HEADERS:
            x = done[m].dropna() if m in done else pd.Series(dtype=float)
            row[f"{m}_mean"] = float(x.mean()) if len(x) else math.nan
            row[f"{m}_sd"] = float(x.std(ddof=1)) if len(x) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(agg: pd.DataFrame, metrics: Mapping[str, str] = METRICS) -> str:
    """Markdown: configuration, seeds, failed, then mean ± sd of every metric of ``metrics`` (metric -> header)
    some configuration has."""
    shown = [m for m in metrics if agg[f"{m}_mean"].notna().any()]
    head = ["configuration", "seeds", "failed", *[metrics[m] for m in shown]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in agg.to_dict("records"):
        cells = [row["configuration"], str(row["seeds"]), str(row["failed"]),
                 *[mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in shown]]
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


def compare(results: pd.DataFrame, column: str, base: Any, other: Any, fixed: Mapping[str, Any],
            metric: str) -> dict[str, Any] | None:
    """``other`` vs ``base`` of the axis ``column`` with the other axes at ``fixed`` (column -> value) on
    ``metric``: means, their difference, n per side and Welch's p. None when a side has no complete value."""
    done = results[results["status"] == "complete"]
    for col, value in fixed.items():
        done = done[done[col] == value]
    a = done[done[column] == base][metric].dropna().tolist()
    b = done[done[column] == other][metric].dropna().tolist()
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


def fixed_levels(settings: Mapping[str, Any], axis: axes.Axis) -> Iterator[dict[str, Any]]:
    """Every combination of the other axes' values in ``settings``, as ``{column: value}``."""
    others = [a for a in axes.AXES if a is not axis]
    for combo in itertools.product(*(settings[a.setting] for a in others)):
        yield dict(zip((a.column for a in others), combo))


def where(fixed: Mapping[str, Any]) -> str:
    """The other axes' values in words, e.g. ``with `gaussian` / `no-bow` ``."""
    return "with " + " / ".join(f"`{axes.axis(col).word(v)}`" for col, v in fixed.items())


def factor_reading(results: pd.DataFrame, settings: Mapping[str, Any], axis: axes.Axis) -> list[str]:
    """One bullet per (later level of ``axis`` vs its first) × combination of the other axes: each of
    :data:`READING`'s metrics as ``base mean → other mean`` with its seed-noise verdict."""
    lines = []
    levels = list(settings[axis.setting])
    base = levels[0]
    for other in levels[1:]:
        for fixed in fixed_levels(settings, axis):
            parts = []
            for m in READING:
                c = compare(results, axis.column, base, other, fixed, m)
                if c is None:
                    continue
                note = noise_words(c)
                parts.append(f"{HEADERS[m]} {c['base']:.3f} → {c['other']:.3f}" + (f" ({note})" if note else ""))
            if parts:
                lines.append(f"**`{axis.word(other)}` vs `{axis.word(base)}`** ({where(fixed)}): "
                             + "; ".join(parts) + ".")
    return lines


def thesis_direction(results: pd.DataFrame, fixed: Mapping[str, Any]) -> str | None:
    """Whether monotonic → cyclical with the other axes at ``fixed`` moves each :data:`READING` metric the way the
    thesis's Table 2.3 (CVAE rows) does; None when a side has no complete value."""
    agree = []
    for m, (mono, cyc) in READING.items():
        c = compare(results, "schedule", "monotonic", "cyclical", fixed, m)
        if c is None:
            return None
        same = (c["diff"] > 0) == (cyc > mono)
        agree.append(f"{HEADERS[m]} {'same direction' if same else 'opposite direction'} "
                     f"(thesis {mono} → {cyc}; here {c['base']:.3f} → {c['other']:.3f})")
    return (f"**Against the thesis (Table 2.3, CVAE, monotonic → cyclical, {where(fixed)})**: " + "; ".join(agree)
            + ". Directions only (the verdicts above say which differences exceed seed noise); absolute values are "
            "not comparable: this run's data, model size and budget are smaller, and BLEU is smoothed differently "
            "(trainables/text/dialog_metrics.py).")


def thesis_readings(results: pd.DataFrame, settings: Mapping[str, Any]) -> list[str]:
    """:func:`thesis_direction` for every ``no-bow`` combination of the other axes (the thesis's numbers here are
    its CVAE rows), or why there is none."""
    if not {"monotonic", "cyclical"} <= set(settings["schedules"]):
        return []
    if False not in settings["bow"]:
        return ["**Against the thesis**: the Table 2.3 values kept here are its CVAE rows (no bag-of-words loss); "
                "this grid has no `no-bow` configuration to compare (--set 'bow=[false, true]')."]
    plain_cvae = [fixed for fixed in fixed_levels(settings, axes.axis("schedule")) if not fixed["bow"]]
    return [t for fixed in plain_cvae if (t := thesis_direction(results, fixed))]


def reading(results: pd.DataFrame, agg: pd.DataFrame, settings: Mapping[str, Any]) -> list[str]:
    """The plain-words reading, one Markdown bullet per finding."""
    lines = []
    if int(agg["seeds"].max()) <= 1:
        lines.append("**One seed per configuration**: no difference below can be told from seed noise.")
    lines.append("KL is the information z keeps about the response given the context (higher: more in z); "
                 "rec-PPL is how well the decoder reconstructs the response from z (lower is better); BLEU precision "
                 "rewards every sampled response for resembling the reference, recall rewards the best of them, so "
                 "recall rising more than precision means more diverse samples. `bow` trains with kgCVAE's "
                 "bag-of-words loss (CVAE+BoW), `no-bow` without (the plain CVAE).")
    for axis in axes.varied(settings):
        lines += factor_reading(results, settings, axis)
    lines += thesis_readings(results, settings)
    lines.append(collapse_reading(results))
    repetitive = agg[agg["inter_dist2_mean"] < REPETITIVE_DISTINCT]
    if len(repetitive):
        lines.append(f"**Repetitive responses**: inter-distinct-2 below {REPETITIVE_DISTINCT} in {len(repetitive)} "
                     f"of {len(agg)} configurations (max {agg['inter_dist2_mean'].max():.4f}): the samples repeat a "
                     "few generic phrases, so BLEU, BOW and act accuracy here compare generic responses; train longer "
                     "(epochs) or at the `swda` preset's scale for responses worth comparing.")
    failed = results[results["status"] == "failed"]
    if len(failed):
        lines.append(f"**Failed**: {len(failed)} of {len(results)} trainings (reasons in results.parquet's `error`).")
    return [f"- {line}" for line in lines]


def collapse_reading(results: pd.DataFrame) -> str:
    """Which configurations collapsed (test KL < :data:`COLLAPSE_KL`) in every seed, and which in some seeds only."""
    done = results[(results["status"] == "complete") & results["kl"].notna()]
    every, some = [], []
    for key, group in done.groupby(list(axes.COLUMNS), sort=False):
        low = group[group["kl"] < COLLAPSE_KL]["seed"].tolist()
        label = axes.label(dict(zip(axes.COLUMNS, key)))
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
        f"- **Grid**: {axes.describe(s)} × seeds {facts['seeds']} = {axes.configurations(s) * len(facts['seeds'])} "
        f"trainings; dialog-act knowledge {'on' if s['act_knowledge'] else 'off'}, aggressive training "
        f"{'on' if s['aggressive'] else 'off'}.",
        *([f"- **SA-VAE** (posterior `sa`): {s['sa_steps']} SVI steps of size {s['sa_lr']} refine each response's "
           "recognition posterior, in training (backpropagated through) and before the test metrics."]
          if "sa" in s["posteriors"] else []),
        f"- **Budget per training**: {s['epochs']} epochs × {facts['batches_per_epoch']} updates (batch "
        f"{s['batch_size']}, lr {s['lr']}), latent {s['latent_dim']} dims, J = {s['j_samples']} z-samples per "
        f"response" + (f", semi-implicit K_max = {s['k_max']} mixing draws and {s['si_noise_dim']} noise dims"
                       if "semi-implicit" in s["posteriors"] else "")
        + f"; {s['samples']} sampled responses per test context; {s['concurrency']} trainings at once, "
        f"{s['cpus_per_trial']} CPU / {s['gpus_per_trial']} GPU each.",
        f"- **Wall time**: {facts['seconds']:.0f} s for {facts['rows']} trainings ({facts['failed']} failed). Every "
        "setting is in manifest.json and in the MLflow parent run's params.", "",
        "## Results (test split)", "",
        "Mean ± sd over the seeds that completed. rec-PPL per predicted token, KL in nats per response; for "
        f"{s['samples']} sampled responses per context, precision (P: mean over the samples) and recall (R: best "
        "sample) of BLEU-n and of the BOW embedding average (A), extrema (E) and greedy (G) cosine similarities (word "
        "vectors from the training utterances), BLEU F1 = 2PR/(P + R); intra-distinct-n within each response, "
        "inter-distinct-n over all of them; mean response length in words; dialog-act accuracy of the act predicted "
        "from [c, z].", "", results_table(agg), "", "BLEU-1…3:", "", results_table(agg, BLEU_METRICS), "",
        "## Reading", "", *reading(results, agg, s), "", *examples_section(examples), "## Plots", ""]
    for plot in plots:
        parts += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    parts += ["## Tracking", "", f"MLflow: {facts['mlflow']}.", ""]
    return write_text(path, "\n".join(parts))
