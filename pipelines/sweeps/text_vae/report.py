"""``report.md`` of a text-VAE sweep: what was run, the results per configuration as mean ± sd over the training
seeds, a plain-words reading (which schedule kept the most information in z, posterior collapse, the best ELBO
and perplexity, each with an honest word on seed noise) and the plots.

Conventions: ``rec``, ``kl``, ``elbo`` and ``mi`` are nats per sentence on the test split, ``ppl`` is per predicted
token, ``au`` counts latent dimensions (``trainables.text.vae_metrics``). A lead of one configuration over another is
*within seed noise* when Welch's t-test over their seeds (from the means, sds and seed counts) gives p ≥ 0.05,
the project's convention; with one seed per configuration nothing can be said about seed noise, and the report
says so instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import write_text
from pipelines.sweeps.outputs import mean_sd

#: Metrics of the results table (the thesis's Table 2.1 / 3.2 columns, then the label accuracies), in order:
#: metric -> (heading, unit); shown as mean ± sd over seeds where present.
METRICS = {"rec": ("rec", "nats"), "kl": ("KL", "nats"), "elbo": ("ELBO", "nats"), "ppl": ("PPL", "per token"),
           "iw_ppl": ("IW-PPL", "per token"), "au": ("AU", "dims"), "mi": ("MI", "nats"),
           "acc_1pct": ("acc 1 %", "fraction"), "acc_10pct": ("acc 10 %", "fraction"),
           "acc_100pct": ("acc 100 %", "fraction"), "knn_acc": ("1-NN acc", "fraction")}
#: The label probes (setting ``downstream``; ``trainables.text.vae_metrics``) in words, for the accuracy columns.
PROBES = {"logistic": "a logistic regression on the frozen posterior means",
          "finetune": "a linear layer on the posterior mean fine-tuned together with the encoder (eq. 2.19)"}
#: A configuration whose mean test KL lies below this many nats per sentence has collapsed: z carries next to
#: nothing about the sentence (the decoder ignores it).
COLLAPSE_KL = 0.1
#: Row columns that identify a configuration of the grid (its seeds are averaged over).
GRID_KEY = ("schedule", "posterior", "aggressive")


def configuration_label(row: Mapping[str, Any], search: str) -> str:
    """``schedule / posterior[ / aggressive]`` (Optuna: with the trial id, each proposal being its own
    configuration)."""
    label = f"{row['schedule']} / {row['posterior']}" + (" / aggressive" if row["aggressive"] else "")
    return label + (f" ({row['trial_id']})" if search == "optuna" else "")


def present_metrics(results: pd.DataFrame) -> list[str]:
    """The :data:`METRICS` that some complete row of ``results`` has."""
    return [m for m in METRICS if m in results.columns and results[m].notna().any()]


def aggregate(results: pd.DataFrame, search: str) -> pd.DataFrame:
    """One row per configuration (grid: :data:`GRID_KEY`; Optuna: per trial) with ``configuration`` (label),
    ``schedule``, ``posterior``, ``aggressive``, ``seeds`` (complete rows), ``failed`` (failed rows) and
    ``<m>_mean``, ``<m>_sd`` (sample sd, NaN with fewer than two seeds) for every metric of
    :func:`present_metrics`; complete rows only in the statistics. Sorted as the results are."""
    if not len(results):
        raise ValueError("aggregate: the results table is empty")
    metrics = present_metrics(results)
    keys = list(GRID_KEY) if search == "grid" else [*GRID_KEY, "trial_id"]
    rows = []
    for _, group in results.groupby(keys, sort=False):
        first = group.iloc[0]
        done = group[group["status"] == "complete"]
        row = {"configuration": configuration_label(first, search), "schedule": first["schedule"],
               "posterior": first["posterior"], "aggressive": bool(first["aggressive"]), "seeds": len(done),
               "failed": int((group["status"] == "failed").sum())}
        for m in metrics:
            values = done[m].dropna()
            row[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def table_rows(results: pd.DataFrame, search: str, schedules: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`pipelines.sweeps.text_vae.report.aggregate` ordered as the thesis's tables: by posterior, then
    aggressive training (off first), then the schedules in the order of ``schedules`` (the sweep's list; schedules
    not in it follow in the order of the rows)."""
    agg = aggregate(results, search)
    order = {name: i for i, name in enumerate(dict.fromkeys([*schedules, *results["schedule"]]))}
    return agg.sort_values(["posterior", "aggressive", "schedule"],
                           key=lambda col: col.map(order) if col.name == "schedule" else col,
                           kind="stable").reset_index(drop=True)


def results_table(agg: pd.DataFrame) -> str:
    """The aggregate as a Markdown table: configuration, seeds, failed, then mean ± sd per metric."""
    metrics = [m for m in METRICS if f"{m}_mean" in agg.columns]
    head = ["configuration", "seeds", "failed", *[f"{METRICS[m][0]} ({METRICS[m][1]})" for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in agg.to_dict("records"):
        cells = [row["configuration"], str(row["seeds"]), str(row["failed"]),
                 *[mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in metrics]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Ranking:
    """The best configuration by one metric and its runner-up (None when there is only one)."""

    metric: str
    best: Mapping[str, Any]
    runner_up: Mapping[str, Any] | None

    def noise_note(self, single_seed: bool) -> str:
        """Whether the lead over the runner-up is beyond seed noise (Welch's t-test over seeds, p < 0.05)."""
        if self.runner_up is None:
            return "no other configuration to compare with."
        if single_seed:
            return ("one seed per configuration: seed noise is unmeasured, so this ranking may not hold for another "
                    "seed (add seeds, e.g. --set 'seeds=[0, 1, 2]').")
        m = self.metric
        diff = abs(self.best[f"{m}_mean"] - self.runner_up[f"{m}_mean"])
        p = welch_from_stats(self.best, self.runner_up, m)
        if math.isnan(p):
            return "too few complete seeds to measure seed noise."
        lead = f"the lead over {self.runner_up['configuration']} ({diff:.3f}, Welch p = {p:.3f} over seeds)"
        if p >= 0.05:
            return f"{lead} is within seed noise, not a real difference."
        return f"{lead} is beyond seed noise."


def welch_from_stats(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> float:
    """Welch's two-sided p-value for two aggregate rows' ``<metric>_mean``, ``<metric>_sd`` and ``seeds``; NaN
    with fewer than two seeds on a side or no spread on either."""
    from scipy import stats

    sds = (a[f"{metric}_sd"], b[f"{metric}_sd"])
    if min(a["seeds"], b["seeds"]) < 2 or any(math.isnan(x) for x in sds) or max(sds) == 0:
        return math.nan
    return float(stats.ttest_ind_from_stats(a[f"{metric}_mean"], sds[0], a["seeds"], b[f"{metric}_mean"], sds[1],
                                            b["seeds"], equal_var=False).pvalue)


def rank(agg: pd.DataFrame, metric: str, higher: bool) -> Ranking | None:
    """The best and second-best configurations by the mean of ``metric`` (None when no configuration has it)."""
    column = f"{metric}_mean"
    if column not in agg.columns:
        return None
    scored = agg[agg[column].notna()].sort_values(column, ascending=not higher, kind="stable")
    if not len(scored):
        return None
    records = scored.to_dict("records")
    return Ranking(metric, records[0], records[1] if len(records) > 1 else None)


def schedule_means(agg: pd.DataFrame, metric: str) -> pd.Series:
    """Per schedule entry, the mean over its configurations of the configurations' mean ``metric``."""
    return agg.groupby("schedule", sort=False)[f"{metric}_mean"].mean().dropna().sort_values(ascending=False)


def information_reading(agg: pd.DataFrame, single_seed: bool) -> list[str]:
    """Which schedule kept the most KL and MI in z, and the configuration that kept the most."""
    lines = []
    for metric, what in (("kl", "KL(q(z|x) ‖ p(z))"), ("mi", "mutual information I(x, z)")):
        if f"{metric}_mean" not in agg.columns:
            continue
        per_schedule = schedule_means(agg, metric)
        if not len(per_schedule):
            continue
        spread = ", ".join(f"`{s}` {v:.3f}" for s, v in per_schedule.items())
        lines.append(f"**Most {what} in z, by schedule**: `{per_schedule.index[0]}` (mean over its configurations, "
                     f"nats per sentence: {spread}).")
        ranking = rank(agg, metric, higher=True)
        best = ranking.best
        lines.append(f"Most {metric.upper()} of one configuration: {best['configuration']} "
                     f"({mean_sd(best[f'{metric}_mean'], best[f'{metric}_sd'])}); {ranking.noise_note(single_seed)}")
    return lines


def collapse_reading(agg: pd.DataFrame) -> str:
    """Which configurations collapsed (mean test KL below :data:`COLLAPSE_KL`), in one sentence."""
    if "kl_mean" not in agg.columns or not agg["kl_mean"].notna().any():
        return "**Posterior collapse**: no configuration completed, so collapse cannot be judged."
    collapsed = agg[agg["kl_mean"] < COLLAPSE_KL]
    if not len(collapsed):
        return (f"**Posterior collapse**: none — every configuration's mean test KL is at least {COLLAPSE_KL} nats "
                "per sentence.")
    names = "; ".join(f"{r['configuration']} (KL {r['kl_mean']:.3f})" for r in collapsed.to_dict("records"))
    return (f"**Posterior collapse** (mean test KL < {COLLAPSE_KL} nats per sentence: the decoder ignores z) in "
            f"{len(collapsed)} of {len(agg)} configurations: {names}.")


def fit_reading(agg: pd.DataFrame, single_seed: bool) -> list[str]:
    """The best test ELBO and the lowest perplexity, each with its noise note."""
    lines = []
    for metric, higher, what in (("elbo", True, "Best test ELBO"), ("ppl", False, "Lowest perplexity")):
        ranking = rank(agg, metric, higher)
        if ranking is not None:
            best = ranking.best
            lines.append(f"**{what}**: {best['configuration']} ({mean_sd(best[f'{metric}_mean'], best[f'{metric}_sd'])}"
                         f"); {ranking.noise_note(single_seed)}")
    return lines


def reading(results: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    """The plain-words reading of the sweep, one Markdown bullet per finding."""
    single_seed = int(agg["seeds"].max()) <= 1
    lines = []
    if single_seed:
        lines.append("**One seed per configuration**: every difference below may be seed noise; nothing here "
                     "measures it.")
    lines += information_reading(agg, single_seed)
    lines.append(collapse_reading(agg))
    lines += fit_reading(agg, single_seed)
    failed = results[results["status"] == "failed"]
    if len(failed):
        lines.append(f"**Failed**: {len(failed)} of {len(results)} trainings (reasons in results.parquet's `error` "
                     "column and the MLflow runs' `error` tag).")
    return [f"- {line}" for line in lines]


def run_section(settings: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    """"What was run": preset, data, grid (or search), seeds, budget, wall time."""
    s = settings
    if s["search"] == "grid":
        grid = (f"grid of schedules {s['schedules']} × posteriors {s['posteriors']} × aggressive {s['aggressive']} "
                f"= {len(s['schedules']) * len(s['posteriors']) * len(s['aggressive'])} configurations")
    else:
        grid = (f"Optuna TPE over cycles, ratio, k_max and lr of a cyclical semi-implicit VAE, {s['optuna_trials']} "
                f"trials, ASHA on the validation ELBO (grace {s['asha_grace']} epochs)")
    return [
        f"- **Preset** `{s['preset']}`, search `{s['search']}`.",
        f"- **Data**: {facts['data']}" + (f" (from {s['data_dir']})" if s.get("data_dir") else "") + ".",
        f"- **Grid**: {grid}.",
        f"- **Seeds**: {facts['seeds']} (each configuration trained once per seed; the data split uses seed "
        f"{s['seed']}).",
        f"- **Budget per training**: {s['epochs']} epochs × {facts['batches_per_epoch']} updates (batch "
        f"{s['batch_size']}, lr {s['lr']}), latent {s['latent_dim']} dims, LSTM {s['hidden_dim']} units; "
        f"{s['concurrency']} trained at once, {s['cpus_per_trial']} CPU / {s['gpus_per_trial']} GPU each, "
        f"{s['workers']} worker(s).",
        *([f"- **SA-VAE** (posterior `sa`): {s['sa_steps']} SVI steps of size {s['sa_lr']} refine each sentence's "
           "q(z|x) in training (backpropagated through) and before every evaluation."]
          if "sa" in s.get("posteriors", ()) else []),
        *([f"- **Label probe** (`downstream: {s['downstream']}`): acc p % is the test accuracy of "
           f"{PROBES[s['downstream']]}, trained with p % of the training labels."]
          if s.get("dataset") == "yelp" and "downstream" in s else []),
        f"- **Wall time**: {facts['seconds']:.0f} s for {facts['rows']} trainings ({facts['failed']} failed). "
        "Every setting is in manifest.json and in the MLflow parent run's params.",
    ]


def write_report(path: Path, settings: Mapping[str, Any], results: pd.DataFrame, facts: Mapping[str, Any],
                 plots: Sequence[Path]) -> Path:
    """Write ``report.md`` (atomically) and return its path.

    ``settings``: the run's settings (preset keys plus ``search`` and ``data_dir``); ``results``: results.parquet;
    ``facts``: ``data`` (the corpus in words), ``seeds`` (list), ``batches_per_epoch``, ``seconds``, ``rows``,
    ``failed``, ``mlflow`` (experiment, tracking URI, parent run id, in words); ``plots``: the PNGs, embedded by
    file name (they lie next to the report)."""
    agg = table_rows(results, settings["search"], settings.get("schedules", ()))
    captions = {"beta_schedules.png": "β per training iteration for each schedule entry.",
                "learning_curves.png": "Validation ELBO, reconstruction and KL per epoch (y clipped to the bulk of "
                                       "the values; the panel title counts points outside).",
                "latent_toy.png": "z ~ q(z|x) of the toy test sentences, coloured by sequence.",
                "kl_mi_per_iteration.png": "Validation KL and I(x, z) against iteration, one line per schedule "
                                           "(mean over seeds, band ±1 sd), one column per posterior.",
                "active_units.png": "Active units per posterior and schedule (bars: mean over seeds; dots: seeds)."}
    parts = [f"# Text-VAE sweep `{settings['preset']}`", "", "## What was run", "", *run_section(settings, facts),
             "", "## Results", "",
             "Test split; mean ± sd over the seeds that completed (no sd with one seed). rec, KL, ELBO and MI in nats "
             "per sentence, PPL and IW-PPL per predicted token, AU in latent dimensions. table.md has the same table "
             "with the thesis's claims tested contrast by contrast.", "", results_table(agg), "",
             "## Reading", "", *reading(results, agg), "", "## Plots", ""]
    for plot in plots:
        parts += [f"![{Path(plot).stem}]({Path(plot).name})", "", captions.get(Path(plot).name, ""), ""]
    parts += ["## Tracking", "", f"MLflow: {facts['mlflow']}.", ""]
    return write_text(path, "\n".join(parts))
