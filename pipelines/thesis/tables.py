"""Tables and figures of ``pipelines/experiments.py``: Table 4.1 (methods × OOD columns, mean ± sd over seeds)
and Table 4.2 (predictor τ and ρ per label kind, with bootstrap intervals), each as ``.md``, ``.parquet`` and
``.png``. AUROC and accuracy are fractions in [0, 1] in the parquet files and percentages in the Markdown.
Pure pandas/matplotlib: everything is read from the records the stages wrote.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.rundir import atomic_write, write_text
from trainables.image.lineage import Requirement

#: Table 4.1's columns: name -> (retrain stage, metric, the lineage every value must have). MSP/Maha: trained
#: without auxiliary outliers, not even through teachers; OT: trained with them (scored by MSP); ID-Acc: of the
#: training with outliers where the protocol has them. All on the test split.
COLUMNS_4_1 = {"MSP": ("retrain-plain", "auroc_msp", Requirement(outliers=False, eval="test")),
               "Maha": ("retrain-plain", "auroc_maha", Requirement(outliers=False, eval="test")),
               "OT": ("retrain-outliers", "auroc_msp", Requirement(outliers=True, eval="test")),
               "ID-Acc": ("retrain-outliers", "id_acc", Requirement(outliers=True, eval="test"))}
#: ID-Acc where the protocol has no auxiliary outliers (no OT column): of the plain training.
PLAIN_ID_ACC = ("retrain-plain", "id_acc", Requirement(outliers=False, eval="test"))
FRAME_COLUMNS = ("method", "label", "arch_hash", "genotype", "trainings", "searched", "stage", "seed", "auroc_msp",
                 "auroc_maha", "auroc_energy", "fpr95_msp", "id_acc", "params", "flops", "aux_images",
                 "train_seconds", "error", "lineage")


def _savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)


def table_4_1_frame(rows: list[tuple]) -> pd.DataFrame:
    """One row per (table row, retrain stage, seed) from ``(winner, stage name, record)`` triples."""
    out = []
    for winner, stage, record in rows:
        out.append({"method": winner.method, "label": winner.label, "arch_hash": winner.arch_hash,
                    "genotype": winner.genotype, "trainings": winner.trainings, "searched": winner.searched,
                    "stage": stage, **{c: record.get(c) for c in FRAME_COLUMNS[7:]}})
    frame = pd.DataFrame(out, columns=list(FRAME_COLUMNS))
    for c in ("searched", "auroc_msp", "auroc_maha", "auroc_energy", "fpr95_msp", "id_acc", "train_seconds"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in ("params", "flops", "aux_images", "seed", "trainings"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("Int64")
    return frame


def summarise_4_1(frame: pd.DataFrame, has_outliers: bool) -> pd.DataFrame:
    """Per table row (in order of appearance): mean, sd and n over seeds of every column, params, FLOPs. A value
    whose recorded lineage does not meet its column's requirement is a
    :class:`~trainables.image.lineage.LineageError` naming the column."""
    columns = table_4_1_columns(has_outliers)
    check_lineage_4_1(frame, columns)
    out = []
    for label, rows in frame.groupby("label", sort=False):
        first = rows.iloc[0]
        entry = {"label": label, "method": first["method"], "arch_hash": first["arch_hash"],
                 "trainings": first["trainings"], "searched": first["searched"],
                 "params": rows["params"].dropna().max(), "flops": rows["flops"].dropna().max()}
        for name, (stage, metric, _) in columns.items():
            values = rows.loc[rows["stage"] == stage, metric].dropna().to_numpy(dtype=float)
            entry[f"{name} mean"] = float(values.mean()) if len(values) else math.nan
            entry[f"{name} sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            entry[f"{name} n"] = len(values)
        out.append(entry)
    return pd.DataFrame(out)


def table_4_1_columns(has_outliers: bool) -> dict[str, tuple[str, str, Requirement]]:
    """:data:`COLUMNS_4_1` for a protocol with or without auxiliary outliers (then no OT; ID-Acc of the plain
    training)."""
    if has_outliers:
        return dict(COLUMNS_4_1)
    return {**{k: v for k, v in COLUMNS_4_1.items() if v[0] == "retrain-plain"}, "ID-Acc": PLAIN_ID_ACC}


def check_lineage_4_1(frame: pd.DataFrame, columns: dict[str, tuple[str, str, Requirement]]) -> None:
    """Every finished training that fills a column meets that column's lineage requirement."""
    for name, (stage, metric, need) in columns.items():
        for _, row in frame[(frame["stage"] == stage) & frame[metric].notna()].iterrows():
            need.check(row["lineage"] if isinstance(row["lineage"], str) else "", f"Table 4.1 column {name}",
                       f"the {row['label']} row's `{row['arch_hash']}` seed {row['seed']}")


def percent_pm(mean: float, sd: float) -> str:
    """``"91.3 ± 0.6"``: a fraction's mean ± sd in percent (``–`` when undefined; no ``± sd`` from one value)."""
    if not math.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if math.isfinite(sd) else f"{100 * mean:.1f}"


def _count(value) -> str:
    if value is None or pd.isna(value):
        return "–"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def verdict(summary: pd.DataFrame, frame: pd.DataFrame, column: str, stage: str, metric: str) -> str:
    """One sentence: does DCSOD beat the best other row on ``column``, beyond the seeds' spread? (Welch's
    t-test over the per-seed values, two-sided, 5 %; with fewer than 2 seeds per side: no test.)"""
    from scipy.stats import ttest_ind

    if "dcsod" not in set(summary["method"]) or f"{column} mean" not in summary:
        return f"No DCSOD row to compare on {column}."
    others = summary[(summary["method"] != "dcsod") & summary[f"{column} mean"].notna()]
    if others.empty:
        return f"No other row has a {column} value to compare DCSOD with."
    rival = others.loc[others[f"{column} mean"].idxmax()]
    dcsod = summary[summary["method"] == "dcsod"].iloc[0]

    def seeds(label: str) -> np.ndarray:
        return frame.loc[(frame["label"] == label) & (frame["stage"] == stage), metric].dropna().to_numpy(float)

    a, b = seeds(dcsod["label"]), seeds(rival["label"])
    diff = 100 * (dcsod[f"{column} mean"] - rival[f"{column} mean"])
    ours, theirs = (percent_pm(row[f"{column} mean"], row[f"{column} sd"]) for row in (dcsod, rival))
    head = (f"On {column}, DCSOD ({ours}) vs the best other row, {rival['label']} ({theirs}): "
            f"difference {diff:+.1f} points")
    if len(a) < 2 or len(b) < 2:
        return head + "; too few seeds for a test, so no conclusion."
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    if not math.isfinite(p) or p >= 0.05:
        return head + f", Welch t-test p = {p:.2f} over {len(a)} and {len(b)} seeds: inside seed noise, not a win."
    side = "DCSOD is better" if diff > 0 else "DCSOD is worse"
    return head + f", Welch t-test p = {p:.3f} over {len(a)} and {len(b)} seeds: {side} beyond seed noise."


def write_table_4_1(out: Path, frame: pd.DataFrame, has_outliers: bool, header: list[str]) -> pd.DataFrame:
    """``table-4.1.md``, ``table-4.1.parquet`` (``frame``: every row and seed) and ``table-4.1.png``."""
    summary = summarise_4_1(frame, has_outliers)
    columns = [c for c in COLUMNS_4_1 if f"{c} mean" in summary]
    lines = [*header, "",
             "| method | architecture | params | FLOPs | trainings | " + " | ".join(columns) + " | seeds |",
             "|---|---|---|---|---|" + "---|" * len(columns) + "---|"]
    for _, r in summary.iterrows():
        cells = [percent_pm(r[f"{c} mean"], r[f"{c} sd"]) for c in columns]
        lines.append(f"| {r['label']} | `{r['arch_hash']}` | {_count(r['params'])} | {_count(r['flops'])} | "
                     f"{int(r['trainings']) if r['trainings'] else '–'} | " + " | ".join(cells)
                     + f" | {max(int(r[f'{c} n']) for c in columns)} |")
    lines += ["", "AUROC and accuracy in %, mean ± sd over seeds (sample sd). MSP, Maha: the architecture "
              "retrained without auxiliary outliers, scored by maximum softmax probability and Mahalanobis distance; "
              + ("OT: retrained with the protocol's auxiliary outliers (outlier exposure; DCSOD: distillation with "
                 "the outlier term), scored by MSP; ID-Acc: of that training. " if has_outliers else
                 "the protocol has no auxiliary outliers, so there is no OT column; ID-Acc: of the plain training. ")
              + "FLOPs: forward, one image (a multiply-add counts 2). trainings: candidate trainings the search "
              "spent (standard architectures: none).", "", "## Reading", ""]
    for column in columns[:-1]:
        lines.append("- " + verdict(summary, frame, column, *COLUMNS_4_1[column][:2]))
    write_text(out / "table-4.1.md", "\n".join(lines) + "\n")
    atomic_write(out / "table-4.1.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    _plot_4_1(summary, columns[:-1], out / "table-4.1.png")
    return summary


def _plot_4_1(summary: pd.DataFrame, columns: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(summary)), 4))
    x = np.arange(len(summary))
    width = 0.8 / max(1, len(columns))
    for i, c in enumerate(columns):
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, 100 * summary[f"{c} mean"],
               yerr=100 * summary[f"{c} sd"].fillna(0), width=width, capsize=3, label=c)
    ax.set_xticks(x, summary["label"], rotation=30, ha="right")
    ax.set_ylabel("AUROC (%)")
    low = np.nanmin([100 * summary[f"{c} mean"].min() for c in columns])
    ax.set_ylim(max(0.0, low - 10), 100)
    ax.legend(fontsize=8)
    ax.set_title("Table 4.1: OOD AUROC per method (mean ± sd over seeds)")
    _savefig(fig, path)


def write_table_4_2(out: Path, summary: pd.DataFrame, predictions: pd.DataFrame, header: list[str]) -> None:
    """``table-4.2.md``, ``table-4.2.parquet`` (``summary``: one row per label kind), ``table-4.2-predictions
    .parquet`` (every architecture's measured label and out-of-fold prediction) and ``table-4.2.png``."""
    lines = [*header, "", "| label | n | Kendall τ [95% CI] | Pearson ρ [95% CI] |", "|---|---|---|---|"]
    def cell(value: float, low: float, high: float) -> str:
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.2f} [{low:.2f}, {high:.2f}]" if math.isfinite(low) else f"{value:.2f}"

    for _, r in summary.iterrows():
        lines.append(f"| {r['label']} | {int(r['n'])} | {cell(r['kendall_tau'], r['tau_low'], r['tau_high'])} | "
                     f"{cell(r['pearson_rho'], r['rho_low'], r['rho_high'])} |")
    write_text(out / "table-4.2.md", "\n".join(lines) + "\n")
    atomic_write(out / "table-4.2.parquet", lambda tmp: summary.to_parquet(tmp, index=False))
    atomic_write(out / "table-4.2-predictions.parquet", lambda tmp: predictions.to_parquet(tmp, index=False))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = np.arange(len(summary))
    for offset, (stat, low, high, name) in zip((-0.18, 0.18), (("kendall_tau", "tau_low", "tau_high", "Kendall τ"),
                                                                ("pearson_rho", "rho_low", "rho_high", "Pearson ρ"))):
        mid = summary[stat].to_numpy(float)
        err = np.vstack([mid - summary[low].to_numpy(float), summary[high].to_numpy(float) - mid])
        ax.bar(x + offset, np.nan_to_num(mid), width=0.36, yerr=np.nan_to_num(np.abs(err)), capsize=3, label=name)
    ax.set_xticks(x, summary["label"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("correlation (held-out, 95% CI)")
    ax.set_title(f"Table 4.2: predictor quality per label (n = {int(summary['n'].max()) if len(summary) else 0})")
    ax.legend(fontsize=8)
    _savefig(fig, out / "table-4.2.png")
