"""``table.md`` of a text-VAE sweep: the thesis's Table 2.1 / 3.2 columns as mean ± sd over seeds, and the
thesis's claims read as contrasts with a seed-noise test.

The table has one row per configuration (posterior, aggressive training, schedule), the columns rec, KL, ELBO,
PPL, IW-PPL, AU and MI on the test split (nats per sentence; PPL per predicted token; AU in latent dimensions)
and, where the sweep measured them, the downstream accuracies (Yelp: the label probe of setting ``downstream``,
trained with 1 %, 10 % and 100 % of the training labels; toy: the 1-NN accuracy of z samples).

A contrast is one of the thesis's directions within otherwise equal configurations, e.g. "cyclical keeps more
KL than monotonic" for the Gaussian posterior without aggressive training: the difference of the two means over
seeds and Welch's t-test p-value (``scipy.stats.ttest_ind``, unequal variances). On Yelp the schedule claims
include the downstream label accuracies (the thesis's Fig. 2.6: cyclical codes carry more label information).
Its verdict is *thesis direction* or *opposite* when p < :data:`ALPHA`, *within seed noise* otherwise; with
fewer than two seeds on either side it is *untested*.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from scipy import stats

from pipelines.common.rundir import write_text
from pipelines.sweeps.text_vae.report import METRICS, PROBES, results_table, table_rows

#: Significance level of a contrast's verdict.
ALPHA = 0.05


#: The thesis's directions: (factor, higher level, lower level, metrics where the higher level should be larger);
#: a metric the sweep did not measure (the label accuracies outside Yelp) is skipped.
CLAIMS = (("schedule", "cyclical", "monotonic", ("kl", "mi", "acc_1pct", "acc_10pct", "acc_100pct")),
          ("schedule", "cyclical", "constant", ("kl", "mi")),
          ("posterior", "semi-implicit", "gaussian", ("au", "mi")),
          ("aggressive", True, False, ("au", "mi")))
FACTORS = ("schedule", "posterior", "aggressive")


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's two-sided p-value of ``mean(a) != mean(b)``; NaN with fewer than two values on a side or no spread."""
    if len(a) < 2 or len(b) < 2 or (min(a) == max(a) and min(b) == max(b)):
        return math.nan
    with warnings.catch_warnings():  # one side without spread (e.g. equal AU counts) makes scipy warn; p holds
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return float(p) if p is not None and math.isfinite(p) else math.nan


def verdict(diff: float, p: float, n: tuple[int, int]) -> str:
    """The contrast's word: thesis direction / opposite (p < ALPHA), within seed noise, or untested."""
    if min(n) < 2:
        return "untested (fewer than 2 seeds)"
    if math.isnan(p):
        return "no spread to test" if diff == 0 else ("thesis direction (no spread)" if diff > 0
                                                      else "opposite (no spread)")
    if p >= ALPHA:
        return "within seed noise"
    return "**thesis direction**" if diff > 0 else "**opposite**"


def contrasts(results: pd.DataFrame) -> pd.DataFrame:
    """Every :data:`CLAIMS` contrast the sweep can make, within each combination of the other two factors:
    columns ``claim``, ``within``, ``metric``, ``higher``, ``lower`` (means), ``difference``, ``p``, ``n``,
    ``verdict``. Complete rows only."""
    done = results[results["status"] == "complete"]
    out = []
    for factor, high, low, metrics in CLAIMS:
        others = [f for f in FACTORS if f != factor]
        if not {high, low} <= set(done[factor]):
            continue
        for within, group in done.groupby(others, sort=True):
            a, b = group[group[factor] == high], group[group[factor] == low]
            if not len(a) or not len(b):
                continue
            label = " / ".join(_level(f, v) for f, v in zip(others, within))
            for m in (m for m in metrics if m in group.columns):
                xa, xb = a[m].dropna().to_numpy(float), b[m].dropna().to_numpy(float)
                if not len(xa) or not len(xb):
                    continue
                diff = float(xa.mean() - xb.mean())
                p = welch(xa, xb)
                out.append({"claim": f"{_level(factor, high)} > {_level(factor, low)}", "within": label,
                            "metric": m, "higher": float(xa.mean()), "lower": float(xb.mean()),
                            "difference": diff, "p": p, "n": f"{len(xa)} + {len(xb)}",
                            "verdict": verdict(diff, p, (len(xa), len(xb)))})
    return pd.DataFrame(out, columns=["claim", "within", "metric", "higher", "lower", "difference", "p", "n",
                                      "verdict"])


def _level(factor: str, value) -> str:
    if factor == "aggressive":
        return "aggressive" if value else "plain"
    return str(value)


def contrast_table(found: pd.DataFrame) -> str:
    """The contrasts as a Markdown table."""
    head = ["thesis's claim", "within", "metric", "difference", "Welch p", "seeds", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in found.to_dict("records"):
        p = "–" if math.isnan(row["p"]) else f"{row['p']:.3f}"
        lines.append(f"| {row['claim']} | {row['within']} | {METRICS[row['metric']][0]} | "
                     f"{row['difference']:+.3f} | {p} | {row['n']} | {row['verdict']} |")
    return "\n".join(lines)


def claim_summary(found: pd.DataFrame) -> str:
    """Per claim and metric, a Markdown row: how many contrasts (each within another combination of the other
    factors, so no two share a training), in how many the difference has the thesis's sign with the one-sided
    sign-test p of that count under "no effect" (each sign a coin flip), and how many go either way beyond seed
    noise."""
    head = ["thesis's claim", "metric", "contrasts", "thesis's sign", "sign test p", "beyond noise, thesis's way",
            "beyond noise, opposite"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (claim, metric), group in found.groupby(["claim", "metric"], sort=False):
        signed = group[group["difference"] != 0]
        agree = int((signed["difference"] > 0).sum())
        p = stats.binomtest(agree, len(signed), 0.5, alternative="greater").pvalue if len(signed) else math.nan
        lines.append(f"| {claim} | {METRICS[metric][0]} | {len(group)} | {agree} of {len(signed)} | "
                     + ("–" if math.isnan(p) else f"{p:.3f}") + " | "
                     f"{int(group['verdict'].str.contains('thesis direction').sum())} | "
                     f"{int(group['verdict'].str.contains('opposite').sum())} |")
    return "\n".join(lines)


def tally(found: pd.DataFrame) -> str:
    """One sentence: how many contrasts go the thesis's way, the opposite way, or neither, and how many false
    positives chance alone would give."""
    words = found["verdict"]
    agree = int(words.str.contains("thesis direction").sum())
    against = int(words.str.contains("opposite").sum())
    tested = int((~words.str.startswith("untested")).sum())
    return (f"{agree} of {len(found)} contrasts go the thesis's way beyond seed noise, {against} the opposite way, "
            f"{tested - agree - against} are within seed noise"
            + (f", {len(found) - tested} untested" if tested < len(found) else "")
            + f". At p < {ALPHA}, chance alone would flag about {ALPHA * tested:.1f} of the {tested} tested ones.")


def write_table(path: Path, results: pd.DataFrame, search: str, dataset: str, schedules: Sequence[str] = (),
                downstream: str = "logistic") -> Path:
    """Write ``table.md`` (atomically) from ``results`` (rows of results.parquet; ``schedules``: the sweep's list,
    the order of the rows within a posterior; ``downstream``: the label probe of the accuracy columns, a key of
    ``report.PROBES``) and return its path."""
    parts = [f"# Text VAE on `{dataset}`: the thesis's Table 2.1 / 3.2 columns", "",
             "Test split; mean ± sd over the seeds that completed (no sd with one seed). rec, KL, ELBO and MI in "
             "nats per sentence, PPL and IW-PPL per predicted token, AU in latent dimensions"
             + (f"; acc p % = test accuracy of {PROBES[downstream]}, trained with p % of the training labels"
                if "acc_1pct" in results.columns and results["acc_1pct"].notna().any() else "")
             + ("; `sa` rows (SA-VAE) are measured after the SVI refinement of each test sentence's posterior"
                if "posterior" in results.columns and (results["posterior"] == "sa").any() else "") + ".", ""]
    if not len(results):
        parts += ["No training finished.", ""]
        return write_text(path, "\n".join(parts))
    parts += [results_table(table_rows(results, search, schedules)), ""]
    if search == "grid":
        found = contrasts(results)
        parts += ["## The thesis's claims, contrast by contrast", "",
                  "Each row compares two configurations that differ in one factor only; difference = mean of the "
                  "first − mean of the second; Welch's t-test over seeds.", ""]
        if len(found):
            parts += [contrast_table(found), "", tally(found), "",
                      "Per claim and metric: the sign of the difference across its contrasts (no two share a "
                      "training). With three seeds a single contrast rarely reaches p < 0.05; a sign that holds "
                      "in every contrast is evidence even where no single contrast is (the smallest sign-test p "
                      "with n contrasts is 0.5ⁿ: 0.062 for 4, 0.016 for 6).", "", claim_summary(found), ""]
        else:
            parts += ["The grid has no pair of configurations that differ in one of the claims' factors only.", ""]
    return write_text(path, "\n".join(parts))
