"""Figure 4.3, the noise study: how much of an architecture's OOD AUROC after brief training is the architecture,
and how much is the seed?

A architectures (the first A of the run's seeded stream) are trained S times each (seeds) with every training
objective of ``noise.objectives`` (CE, outlier exposure, energy bounds, outlier distillation from teachers
chosen in a warmup of the pipeline's N architectures) at the pipeline's per-candidate budget, and scored with
every score of ``noise.scores``. Per (objective, score):

- ``sd_seed``: the seed-to-seed standard deviation, ``sqrt(mean over architectures of the variance across
  seeds)``;
- ``sd_arch``: the standard deviation across architectures of their mean over seeds;
- ``ratio`` = sd_seed / sd_arch: near or above 1, a single training's AUROC says about as much about the seed as
  about the architecture — a predictor fit on such labels learns noise;
- ``seed_tau``: the mean Kendall τ between the architectures' rankings of two seeds (over all seed pairs), with a
  bootstrap interval over architectures: how far one seed's ranking predicts another's.

Data lineage: an objective that draws no outlier batch itself (CE; distillation with λ = 0) is a row "without
outliers", so none of its trainings may have seen an outlier, not even through teachers (:func:`check_lineage`).

Outputs ``fig-4.3.md``, ``fig-4.3.parquet`` (every architecture, seed, objective and score), ``fig-4.3.png``.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write, write_text
from pipelines.nas.settings import train_config
from pipelines.nas.tune_stage import Stage


def noise_statistics(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """``values`` (A architectures, S seeds) of one metric -> ``sd_seed``, ``sd_arch``, ``ratio``, ``seed_tau``
    (mean over seed pairs), ``tau_low``/``tau_high`` (95 % percentile bootstrap over architectures), ``n_arch``,
    ``n_seed``. Architectures with a missing seed are dropped."""
    from scipy.stats import kendalltau

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v).all(axis=1)]
    a, s = v.shape if v.ndim == 2 else (0, 0)
    out = {"n_arch": a, "n_seed": s, "sd_seed": math.nan, "sd_arch": math.nan, "ratio": math.nan,
           "seed_tau": math.nan, "tau_low": math.nan, "tau_high": math.nan}
    if a < 2 or s < 2:
        return out
    out["sd_seed"] = float(np.sqrt(v.var(axis=1, ddof=1).mean()))
    out["sd_arch"] = float(v.mean(axis=1).std(ddof=1))
    out["ratio"] = out["sd_seed"] / out["sd_arch"] if out["sd_arch"] > 0 else math.inf

    def mean_tau(rows: np.ndarray) -> float:
        taus = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, j in itertools.combinations(range(s), 2):
                t = kendalltau(rows[:, i], rows[:, j]).statistic
                if math.isfinite(t):
                    taus.append(t)
        return float(np.mean(taus)) if taus else math.nan

    out["seed_tau"] = mean_tau(v)
    rng = np.random.default_rng(seed)
    boot = np.array([mean_tau(v[rng.integers(0, a, size=a)]) for _ in range(n_boot)])
    boot = boot[np.isfinite(boot)]
    if len(boot):
        out["tau_low"], out["tau_high"] = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    return out


def run_fig_4_3(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    from pipelines.nas.settings import distill_args
    from pipelines.nas.workflow import Workflow
    from search_space.architecture import arch_hash_of

    settings = exp["noise"]
    scores = list(settings["scores"])
    wf = Workflow(RunDir.open(root / "methods" / "noise", cfg), cfg, tracking_uri, experiment=tracking.experiment,
                  tags=tracking.tags_for("noise"))
    genotypes = [g.to_json() for g in wf.space.sample_many(settings["architectures"], seed=cfg["seed"])]
    teachers = None
    rows = []
    for index, objective in enumerate(settings["objectives"]):
        train = {**wf.warmup_train(), "objective": objective, "scores": scores,
                 "objective_args": distill_args(cfg) if objective == "distill" else {}}
        if objective == "distill" and teachers is None:
            teachers = wf.teachers(wf.warmup(), 1, "noise")
        records = wf.evaluate(Stage(f"noise-{objective}", "noise", index, train, genotypes=genotypes,
                                    seeds=list(settings["seeds"]),
                                    teachers=teachers if objective == "distill" else None))
        for r in records:
            for score in scores:
                rows.append({"objective": objective, "score": score, "arch_hash": r["arch_hash"], "seed": r["seed"],
                             "auroc": r.get(f"auroc_{score}"), "id_acc": r.get("id_acc"),
                             "lineage": r.get("lineage") or ""})
        check_lineage(objective, train, records)
    frame = pd.DataFrame(rows)
    frame["auroc"] = pd.to_numeric(frame["auroc"], errors="coerce").astype("float64")
    order = [arch_hash_of(g) for g in genotypes]
    summary = []
    for (objective, score), part in frame.groupby(["objective", "score"], sort=False):
        table = part.pivot_table(index="arch_hash", columns="seed", values="auroc").reindex(order)
        summary.append({"objective": objective, "score": score,
                        **noise_statistics(table.to_numpy(), n_boot=exp["bootstrap"], seed=cfg["seed"])})
    for objective, part in frame.drop_duplicates(["objective", "arch_hash", "seed"]).groupby("objective", sort=False):
        table = part.pivot_table(index="arch_hash", columns="seed", values="id_acc").reindex(order)
        summary.append({"objective": objective, "score": "id_acc",
                        **noise_statistics(table.to_numpy(), n_boot=exp["bootstrap"], seed=cfg["seed"])})
    summary = pd.DataFrame(summary)
    write_fig_4_3(root.path, frame, summary, exp, cfg)
    metrics = {f"ratio_{r['objective']}_{r['score']}": r["ratio"] for _, r in summary.iterrows()}
    return ["fig-4.3.md", "fig-4.3.parquet", "fig-4.3.png"], {"noise": metrics}


def check_lineage(objective: str, train: dict, records: list[dict]) -> None:
    """An objective that draws no auxiliary outliers itself makes a row without outliers: every finished
    training of it must have no outlier in its lineage (teachers included); LineageError naming the row."""
    from trainables.image.lineage import Requirement
    from trainables.image.losses import make_objective

    if make_objective(objective, **train.get("objective_args", {})).needs_outliers:
        return
    need = Requirement(outliers=False, eval="val")
    for r in records:
        if r.get("id_acc") is not None:
            need.check(r.get("lineage") or "", f"Figure 4.3 row {objective}", f"`{r['arch_hash']}` seed {r['seed']}")


def write_fig_4_3(out, frame: pd.DataFrame, summary: pd.DataFrame, exp: dict, cfg: dict) -> None:
    s = exp["noise"]
    epochs = train_config(cfg).epochs
    lines = [f"# Figure 4.3 — seed noise vs architecture signal, {cfg['protocol']} (preset {exp['preset']})", "",
             f"{s['architectures']} architectures × {len(s['seeds'])} seeds {s['seeds']}, each trained {epochs} epochs "
             f"on the search half of the ID images (the pipeline's per-candidate budget) with each objective, scored "
             "on the validation split. sd_seed: seed-to-seed sd (root mean per-architecture variance); sd_arch: sd of "
             "the architectures' means; ratio = sd_seed / sd_arch (≥ 1: one training says as much about its seed as "
             "about its architecture); seed τ: mean Kendall τ between two seeds' rankings [95% bootstrap interval "
             "over architectures]. AUROC and accuracy in %.", "",
             "| objective | score | sd_seed | sd_arch | ratio | seed τ [95% CI] |", "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        tau = (f"{r['seed_tau']:.2f} [{r['tau_low']:.2f}, {r['tau_high']:.2f}]" if math.isfinite(r["tau_low"])
               else (f"{r['seed_tau']:.2f}" if math.isfinite(r["seed_tau"]) else "n/a"))
        lines.append(f"| {r['objective']} | {r['score']} | {100 * r['sd_seed']:.2f} | {100 * r['sd_arch']:.2f} | "
                     f"{r['ratio']:.2f} | {tau} |")
    auroc = summary[summary["score"] != "id_acc"]
    if len(auroc):
        best = auroc.loc[auroc["ratio"].idxmin()]
        worst = auroc.loc[auroc["ratio"].idxmax()]
        lines += ["", f"Lowest noise ratio: {best['objective']} / {best['score']} ({best['ratio']:.2f}); highest: "
                  f"{worst['objective']} / {worst['score']} ({worst['ratio']:.2f}). With {s['architectures']} "
                  f"architectures and {len(s['seeds'])} seeds, read the seed-τ intervals before ranking objectives."]
    write_text(out / "fig-4.3.md", "\n".join(lines) + "\n")
    atomic_write(out / "fig-4.3.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    _plot(out / "fig-4.3.png", frame)


def _plot(path, frame: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives, scores = list(dict.fromkeys(frame["objective"])), list(dict.fromkeys(frame["score"]))
    fig, axes = plt.subplots(len(objectives), len(scores), figsize=(3.2 * len(scores), 2.4 * len(objectives)),
                             squeeze=False, sharey="row")
    for i, objective in enumerate(objectives):
        for j, score in enumerate(scores):
            part = frame[(frame["objective"] == objective) & (frame["score"] == score)]
            stats = part.groupby("arch_hash")["auroc"].agg(["mean", "std"]).sort_values("mean")
            ax = axes[i][j]
            ax.errorbar(range(len(stats)), 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), fmt="o",
                        capsize=2, markersize=3)
            ax.set_title(f"{objective} / {score}", fontsize=9)
            ax.set_xticks([])
            if j == 0:
                ax.set_ylabel("AUROC (%)")
    fig.suptitle("Figure 4.3: per architecture (sorted), mean ± sd of AUROC over seeds", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
