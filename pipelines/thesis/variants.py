"""Table 4.3 (the (λ, α, β) ablation) and Figure 4.4 (samples N × iterations I at equal training budget): DCSOD
run once per variant of its settings, each in its own run directory ``<output>/methods/<variant>``.

A variant is the DCSOD method of Table 4.1 (warmup, distillation, predictor, search, champion) with some settings
changed. Its outcome: the predictor's Kendall τ and Pearson ρ on the final iteration's labels (out-of-fold,
repeated fold assignments, bootstrap interval: :func:`search_space.predictor_quality.cross_validated_correlation`,
the folds and repeats of ``table_4_2``), and the champion retrained at the final budget once per seed with the
variant's own objective (stage ``retrain``) — test AUROC and ID accuracy as mean ± sd.

Data lineage: a row with λ = 0 is DCSOD without auxiliary outliers, so its warmup trains with plain cross-entropy
(not outlier exposure) and neither its labels nor its champion's retrains see an outlier, not even through
teachers; :func:`check_row_lineage` refuses a row whose recorded lineage says otherwise.

Variants whose warmup is the same (same N and settings) share it: the first one trains it, the others read its
records (``stages/warmup.json``, marked ``shared_from`` in their manifest), so the ablation's rows differ only
where their settings do.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write, read_json, write_json, write_text
from pipelines.nas.tune_stage import Stage
from pipelines.thesis.tables import percent_pm as _pm


def deep_merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def share_warmup(source: RunDir, target: RunDir) -> None:
    """Give ``target`` the finished warmup of ``source`` (same warmup settings), unless it has its own."""
    if target.done("warmup") or not source.done("warmup"):
        return
    write_json(target / "stages" / "warmup.json", read_json(source / "stages" / "warmup.json"))
    target.finish("warmup", **{**source.info("warmup"), "shared_from": str(source.path)})


def warmup_key(cfg: dict) -> str:
    """What determines a warmup's records: everything but the distillation, predictor, search and final settings."""
    import json

    skip = {"distill", "predictor", "search", "final", "preset"}
    return json.dumps({k: v for k, v in cfg.items() if k not in skip}, sort_keys=True, default=str)


def run_variant(ctx, name: str, changes: dict, shared: dict[str, RunDir]) -> dict:
    """Run the DCSOD variant ``name`` (settings ``ctx.cfg`` with ``changes``); its predictor quality and the
    champion's per-seed test metrics."""
    from pipelines.nas.workflow import Workflow
    from pipelines.thesis.methods import DCSOD
    from search_space import encode_many
    from search_space.predictor_quality import cross_validated_correlation

    cfg = deep_merge(ctx.cfg, changes)
    run = RunDir.open(ctx.root / "methods" / name, cfg)
    key = warmup_key(cfg)
    if key in shared:
        share_warmup(shared[key], run)
    wf = Workflow(run, cfg, ctx.tracking_uri, experiment=ctx.mlflow_experiment, tags=ctx.tags_for(name))
    final_records, teachers = wf.distill(wf.warmup())
    shared.setdefault(key, run)
    genotypes, y = wf.pairs(final_records)
    labelled = {r.get("lineage") or "" for r in final_records if r.get("checkpoint")}
    cv = ctx.exp["table_4_2"]
    folds = min(cv["folds"], len(y) // 2)
    if folds >= 2:
        p = cfg["predictor"]
        q, _ = cross_validated_correlation(p["name"], encode_many(genotypes), y, folds=folds, repeats=cv["repeats"],
                                           n_boot=ctx.exp["bootstrap"], seed=cfg["seed"], **p["args"])
    else:
        q = {"n": len(y), "kendall_tau": math.nan, "tau_low": math.nan, "tau_high": math.nan,
             "pearson_rho": math.nan, "rho_low": math.nan, "rho_high": math.nan}
    winner, = DCSOD().search(ctx, wf)  # predictor stage, search, champion (read back when finished)
    train = wf.final_train(teachers)
    records = wf.evaluate(Stage("retrain", "retrain", 0, train, genotypes=[winner.genotype],
                                seeds=list(ctx.exp["seeds"]), teachers=teachers))
    metric = cfg["metric"]
    return {"variant": name, "arch_hash": winner.arch_hash, "searched": winner.searched, **q,
            "trainings": winner.trainings, "label_lineages": sorted(labelled),
            "per_seed": [{"seed": r["seed"], metric: r.get(metric), "id_acc": r.get("id_acc"),
                          "lineage": r.get("lineage") or ""} for r in records]}


def check_row_lineage(result: dict, where: str, need_outliers: bool | None) -> None:
    """The variant's predictor labels (validation split) and champion retrains (test split) meet
    ``need_outliers`` (False: no auxiliary outlier reached them; None: either); a
    :class:`~trainables.image.lineage.LineageError` naming ``where`` otherwise."""
    from trainables.image.lineage import Requirement

    for lineage in result["label_lineages"]:
        Requirement(outliers=need_outliers, eval="val").check(lineage, f"{where}, predictor τ",
                                                              "a label of its final iteration")
    for s in result["per_seed"]:
        if s.get("id_acc") is not None:  # a failed retrain fills no cell
            Requirement(outliers=need_outliers, eval="test").check(
                s["lineage"], f"{where}, champion retrain", f"`{result['arch_hash']}` seed {s['seed']}")


def summarise(results: list[dict], metric: str) -> pd.DataFrame:
    rows = []
    for r in results:
        values = {k: np.array([s[k] for s in r["per_seed"] if s.get(k) is not None], dtype=float)
                  for k in (metric, "id_acc")}
        row = {k: v for k, v in r.items() if k not in ("per_seed", "label_lineages")}
        for k, v in values.items():
            v = v[np.isfinite(v)]
            row[f"{k}_mean"] = float(v.mean()) if len(v) else math.nan
            row[f"{k}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        row["seeds"] = len(r["per_seed"])
        rows.append(row)
    return pd.DataFrame(rows)


def _tau(r) -> str:
    if not math.isfinite(r["kendall_tau"]):
        return f"n/a (n={int(r['n'])})"
    interval = f" [{r['tau_low']:.2f}, {r['tau_high']:.2f}]" if math.isfinite(r["tau_low"]) else ""
    return f"{r['kendall_tau']:.2f}{interval} (n={int(r['n'])})"


def run_variants(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str,
                 variants: list[tuple[str, dict, dict]]) -> list[dict]:
    """Run each ``(name, changes, identity)`` variant of DCSOD in order (:func:`run_variant`, sharing the warmup
    where the changes allow); each result starts with its ``identity`` columns."""
    from pipelines.thesis.methods import ExperimentContext

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    shared: dict = {}
    return [{**identity, **run_variant(ctx, name, changes, shared)} for name, changes, identity in variants]


def write_variant_outputs(root: RunDir, stem: str, lines: list[str], results: list[dict], summary: pd.DataFrame,
                          metric: str, keys: tuple[str, ...], labels: list[str], title: str) -> list[str]:
    """``<stem>.md`` (``lines``), ``<stem>.parquet`` (one row per variant and seed) and ``<stem>.png`` (bars per
    variant); their names."""
    write_text(root.path / f"{stem}.md", "\n".join(lines) + "\n")
    frame = _per_seed_frame(results, metric, keys)
    atomic_write(root.path / f"{stem}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    _plot_bars(root.path / f"{stem}.png", summary, labels, metric, title)
    return [f"{stem}.md", f"{stem}.parquet", f"{stem}.png"]


def run_table_4_3(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    variants = [(f"ablation-lam{lam}-alpha{alpha}-beta{'-' if beta is None else beta}",
                 {"distill": {"lam": lam, "alpha": alpha, **({"beta": beta} if beta is not None else {})},
                  **({"warmup": {"objective": "ce"}} if lam == 0 else {})},  # λ = 0: no outliers anywhere
                 {"lam": lam, "alpha": alpha, "beta": beta}) for lam, alpha, beta in exp["ablation"]["rows"]]
    results = run_variants(root, exp, cfg, tracking, tracking_uri, variants)
    for r in results:
        beta = "–" if r["beta"] is None else f"{r['beta']:g}"
        check_row_lineage(r, f"Table 4.3 row (λ={r['lam']:g}, α={r['alpha']:g}, β={beta})",
                          False if r["lam"] == 0 else None)
    summary = summarise(results, cfg["metric"])
    metric = cfg["metric"]
    lines = [f"# Table 4.3 — ablation of (λ, α, β), {cfg['protocol']} (preset {exp['preset']})", "",
             f"Each row is a whole DCSOD run (warmup {cfg['warmup']['n']}, shared by all rows; "
             f"{cfg['distill']['iterations']} distillation iteration(s) with the row's loss; predictor; search "
             f"{cfg['search']['trials']}), its champion retrained {cfg['final']['epochs']} epochs with the row's loss "
             f"and seeds {exp['seeds']}. τ: the predictor on the final iteration's labels, out-of-fold, "
             f"[95% interval], n architectures. {metric} and ID-Acc on the test split, %, mean ± sd over seeds. "
             "β is unused when λ = 0 (–).", "",
             f"| λ | α | β | predictor τ | {metric} | ID-Acc | champion |", "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        unused = r["beta"] is None or (isinstance(r["beta"], float) and math.isnan(r["beta"]))
        beta = "–" if unused else f"{r['beta']:g}"
        lines.append(f"| {r['lam']:g} | {r['alpha']:g} | {beta} | {_tau(r)} | "
                     f"{_pm(r[f'{metric}_mean'], r[f'{metric}_sd'])} | {_pm(r['id_acc_mean'], r['id_acc_sd'])} | "
                     f"`{r['arch_hash']}` |")
    labels = [f"λ={r['lam']} α={r['alpha']} β={r['beta']}" for _, r in summary.iterrows()]
    return write_variant_outputs(root, "table-4.3", lines, results, summary, metric, ("lam", "alpha", "beta"),
                                 labels, "Table 4.3"), {}


def tradeoff_combinations(exp: dict, cfg: dict) -> list[tuple[int, int]]:
    """Figure 4.4's (N, I): N·(1+I) ≈ the budget B (default: the pipeline's N·(1+I)) for I in ``iterations``,
    then the pipeline's N with every I; duplicates dropped, order kept."""
    t = exp["tradeoff"]
    n0, i0 = cfg["warmup"]["n"], cfg["distill"]["iterations"]
    budget = t["budget"] or n0 * (1 + i0)
    combos = [(max(2, round(budget / (1 + i))), i) for i in t["iterations"]] + [(n0, i) for i in t["iterations"]]
    return list(dict.fromkeys(combos))


def run_fig_4_4(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    variants = [(f"tradeoff-n{n}-i{i}", {"warmup": {"n": n}, "distill": {"iterations": i}}, {"n": n, "iterations": i})
                for n, i in tradeoff_combinations(exp, cfg)]
    results = run_variants(root, exp, cfg, tracking, tracking_uri, variants)
    summary = summarise(results, cfg["metric"])
    metric = cfg["metric"]
    lines = [f"# Figure 4.4 — samples N × distillation iterations I, {cfg['protocol']} (preset {exp['preset']})", "",
             f"Each row is a whole DCSOD run with N warmup architectures and I Alg.-2 iterations (N·(1+I) "
             f"candidate trainings before the search; equal-budget rows first, then N = {cfg['warmup']['n']} with "
             f"every I), its champion retrained {cfg['final']['epochs']} epochs, seeds {exp['seeds']}. τ: the "
             f"predictor on the final iteration's labels, out-of-fold [95% interval]. {metric}, ID-Acc: test, %.", "",
             f"| N | I | N·(1+I) | predictor τ | {metric} | ID-Acc |", "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['n']} | {r['iterations']} | {r['n'] * (1 + r['iterations'])} | {_tau(r)} | "
                     f"{_pm(r[f'{metric}_mean'], r[f'{metric}_sd'])} | {_pm(r['id_acc_mean'], r['id_acc_sd'])} |")
    labels = [f"N={r['n']} I={r['iterations']}" for _, r in summary.iterrows()]
    return write_variant_outputs(root, "fig-4.4", lines, results, summary, metric, ("n", "iterations"), labels,
                                 "Figure 4.4"), {}


def _per_seed_frame(results: list[dict], metric: str, keys: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for r in results:
        base = {k: r[k] for k in (*keys, "variant", "arch_hash", "searched", "n", "kendall_tau", "tau_low", "tau_high",
                                  "pearson_rho", "rho_low", "rho_high") if k in r}
        rows += [{**base, **s} for s in r["per_seed"]]
    frame = pd.DataFrame(rows)
    for c in (metric, "id_acc", "kendall_tau", "tau_low", "tau_high", "pearson_rho", "rho_low", "rho_high"):
        if c in frame:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return frame


def _plot_bars(path: Path, summary: pd.DataFrame, labels: list[str], metric: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(summary)), 3.8))
    x = np.arange(len(summary))
    tau = summary["kendall_tau"].to_numpy(float)
    err = np.vstack([tau - summary["tau_low"].to_numpy(float), summary["tau_high"].to_numpy(float) - tau])
    left.bar(x, np.nan_to_num(tau), yerr=np.nan_to_num(np.abs(err)), capsize=3)
    left.axhline(0, color="black", linewidth=0.6)
    left.set_ylabel("predictor Kendall τ (95% CI)")
    right.bar(x, 100 * summary[f"{metric}_mean"], yerr=100 * summary[f"{metric}_sd"].fillna(0), capsize=3)
    right.set_ylabel(f"champion test {metric} (%)")
    for ax in (left, right):
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
