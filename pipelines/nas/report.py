"""``report.md`` and PNG plots of a finished DCSOD run, read from the run directory; the protocol is built once
more in the driver (:func:`protocol_summary`) for its class names and image counts. The plain-words sentences
(the task, what the numbers mean, the search's verdict, warnings) are :mod:`pipelines.nas.report_text`'s.

Plots: ``predicted_vs_measured.png`` (predictor on its held-out 15 % and on the search proposals, with Kendall
τ), ``metric_by_stage.png`` (the ranking metric per stage and iteration), ``search_trajectory.png`` (each
search trial's measured metric and the running best, against the best warmup or distill value before it),
``champion_cells.png`` (the champion's three cells as DAGs, :func:`search_space.drawing.draw_genotype`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write, read_json, write_text
from pipelines.nas.report_text import (
    correlation_phrase,
    correlation_warning,
    metric_meaning,
    metric_standard_error,
    missing_comparison_rows,
    runner_up_warning,
    search_verdict,
    seed_noise_warnings,
    task_section,
    validation_size_warning,
    welch,
)
from pipelines.nas.thesis_settings import thesis_lines
from search_space.predictor_quality import correlation_text, rank_correlation
from trainables.image.ood import parse_metric


def _savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)


def _stage_label(stage: str, iteration: int) -> str:
    return stage if stage in ("warmup", "search", "final") else f"{stage}-{iteration}"


def _stage_records(run: RunDir, name: str) -> list[dict]:
    path = run / "stages" / f"{name}.json"
    return read_json(path)["records"] if path.exists() else []


def plot_predicted_vs_measured(run: RunDir, metric: str) -> dict:
    """Scatter of predicted vs measured ``metric``; returns the τ values shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from search_space import Genotype, encode_many

    pred = read_json(run / "predictor" / "metrics.json")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    val = pred.get("validation", [])
    taus = {"validation": rank_correlation([v["predicted"] for v in val], [v["measured"] for v in val])}
    ax.scatter([v["measured"] for v in val], [v["predicted"] for v in val], s=18,
               label=f"held-out 15%: {correlation_text(taus['validation'])}")
    search = [r for r in _stage_records(run, "search") if r.get(metric) is not None and math.isfinite(r[metric])]
    if search:
        from search_space.predictor import load_predictor

        predictor = load_predictor(run / "predictor" / "predictor.npz")
        predicted = predictor.predict(encode_many([Genotype.from_json(r["genotype"]) for r in search]))
        measured = [r[metric] for r in search]
        taus["search"] = rank_correlation(predicted, measured)
        ax.scatter(measured, predicted, s=18, marker="^", label=f"search proposals: {correlation_text(taus['search'])}")
    points = [v for c in ax.collections for v in c.get_offsets().ravel().tolist()]
    if points:  # the line a perfect predictor's points would lie on
        low, high = min(points), max(points)
        ax.plot([low, high], [low, high], "k--", lw=0.8, label="y = x")
    ax.set_xlabel(f"measured {metric}")
    ax.set_ylabel(f"predicted {metric}")
    ax.legend(fontsize=8)
    ax.set_title("predictor: predicted vs measured")
    _savefig(fig, run / "predicted_vs_measured.png")
    return taus


def plot_metric_by_stage(history: pd.DataFrame, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(label, g[metric].dropna().to_numpy()) for (label, _), g in
              history.assign(label=[_stage_label(s, i) for s, i in zip(history.stage, history.iteration)])
              .groupby(["label", "iteration"], sort=False)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, (_, values) in enumerate(groups):
        if len(values) > 1:
            ax.boxplot(values, positions=[x], widths=0.5, showfliers=False)
        jitter = np.random.default_rng(x).uniform(-0.15, 0.15, len(values))
        ax.scatter(x + jitter, values, s=10, alpha=0.7)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups])
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per stage (final = test split, others = validation split)")
    _savefig(fig, path)


def plot_search_trajectory(run: RunDir, metric: str, warm_best: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [r.get(metric) for r in _stage_records(run, "search")]
    values = [v if v is not None and math.isfinite(v) else np.nan for v in values]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if values:
        ax.plot(range(1, len(values) + 1), values, "o", label="proposal (measured)")
        ax.plot(range(1, len(values) + 1), np.fmax.accumulate(np.nan_to_num(values, nan=-np.inf)), "-",
                label="running best")
    ax.axhline(warm_best, color="grey", ls="--", label="best before the search")
    ax.set_xlabel("search trial")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    _savefig(fig, run / "search_trajectory.png")


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


#: ``final.champion`` -> how report.md names the rule.
CHAMPION_RULES = {"measured": "best measured architecture (final.champion: measured)",
                  "predicted": "predictor's optimum among the trained candidates (final.champion: predicted)",
                  "optimum": "evolutionary search's optimum under the final predictor, trained or not (final.champion: "
                             "optimum, the thesis's rule)"}


def _candidate_lines(best: dict, metric: str) -> list[str]:
    """The table of both champion candidates (best measured, predictor's optimum) of best.json."""
    candidates = best.get("candidates")
    if not candidates:
        return []
    lines = ["## Champion candidates", "",
             "Among the trained architectures of the final distill iteration and the search (dead ones dropped); "
             "predicted by the predictor stage's model, measured at the search budget (validation split).", "",
             f"| candidate | architecture | predicted {metric} | measured {metric} | stage | retrained |",
             "|---|---|---|---|---|---|"]
    for name, label in (("measured", "best measured"), ("predicted", "predictor's optimum")):
        c = candidates[name]
        ms = c["measured_search"]
        stage = _stage_label(ms["stage"], ms["iteration"])
        lines.append(f"| {label} | `{c['arch_hash']}` | {_fmt(c['predicted'][metric])} | {_fmt(ms.get(metric))} | "
                     f"{stage} | {'yes' if name == best.get('champion', 'measured') else 'no'} |")
    return [*lines, ""]


def _mean_sd(values: list) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return "–"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def lineage_phrase(lineage: str) -> str:
    """A :class:`~trainables.image.lineage.Lineage` string in words (report.md)."""
    from trainables.image.lineage import Lineage

    try:
        parsed = Lineage.parse(lineage)
    except ValueError:
        return "not recorded (a run from before lineage was recorded)"
    routes = {"direct": "in its own objective", "teachers": "through its teachers",
              "initial": "through the weights it was fine-tuned from"}
    if parsed.outliers == "none":
        outliers = "no auxiliary outliers, not even through teachers"
    elif parsed.outliers == "unknown":
        outliers = "teachers or initial weights whose lineage was not recorded"
    else:
        outliers = "auxiliary outliers " + " and ".join(routes[r] for r in parsed.outliers.split("+"))
    return f"ID images `{parsed.id}`, {outliers}; measured on the {parsed.eval} split (`{lineage}`)"


def check_comparison_lineage(best: dict) -> None:
    """"Did the search help?" compares like with like: every comparison training must have the final retrain's
    outlier lineage, measured on the test split (:class:`~trainables.image.lineage.LineageError` otherwise).
    A best.json from before lineage was recorded is not checked."""
    from trainables.image.lineage import Lineage, Requirement

    if not best.get("lineage"):
        return
    need = Requirement(outliers=Lineage.parse(best["lineage"]).saw_outliers, eval="test")
    for row in best["compare"]["rows"]:
        for lineage in row.get("lineage", []):
            need.check(lineage, "report.md's comparison", f"the {row['role']} `{row['arch_hash']}`")


def _compare_lines(best: dict) -> list[str]:
    """"Did the search help?": best.json's ``compare`` retrains as a table and one sentence (Welch's t-test of
    the champion against each other row over the seeds, two-sided, 5 %)."""
    compare = best.get("compare")
    if not compare:
        return []
    check_comparison_lineage(best)
    metric = compare["metric"]
    lines = ["## Did the search help?", "",
             f"Retrained exactly like the champion ({best['measured_test'].get('epochs')} epochs, same objective and "
             f"teachers, test split), once per seed {compare['seeds']}:", "",
             f"| architecture | role | params | {metric} per seed | {metric} mean ± sd | id_acc mean ± sd |",
             "|---|---|---|---|---|---|"]
    for row in compare["rows"]:
        by_seed = dict(zip(row.get("seeds", compare["seeds"]), row["values"][metric]))
        per_seed = ", ".join(_fmt(by_seed[s]) if s in by_seed else "failed" for s in compare["seeds"])
        lines.append(f"| `{row['arch_hash']}` | {row['role']} | {row['params'] or '–'} | {per_seed} | "
                     f"{_mean_sd(row['values'][metric])} | {_mean_sd(row['values']['id_acc'])} |")
    champion = compare["rows"][0]["values"][metric]
    verdicts = []
    for row in compare["rows"][1:]:
        test = welch(champion, row["values"][metric])
        if test is None:
            verdicts.append(f"vs the {row['role']}: too few seeds to tell")
            continue
        diff, p = test
        outcome = ("better beyond seed noise" if diff > 0 else "worse beyond seed noise") if p < 0.05 else \
            "inside seed noise"
        verdicts.append(f"vs the {row['role']}: {diff:+.3f} (Welch p = {p:.2f}, {outcome})")
    helped = all("better beyond" in v for v in verdicts) and verdicts
    lines += ["", f"The champion's test {metric} " + "; ".join(verdicts) + ". "
              + ("At this budget the search found a better detector than both." if helped else
                 "At this budget that is no evidence that the search beat them; more seeds or a larger budget "
                 "would be needed to tell."), ""]
    planned, missing = missing_comparison_rows(compare)
    if missing:
        lines += [f"**The comparison is incomplete:** {len(missing)} of {planned} trainings failed; the table lacks "
                  "them (each is a FAILED MLflow run of stage `compare` with its reason):", "",
                  *(f"- {m}" for m in missing), ""]
    return lines


# --- the plain-words sections (wording in report_text.py) ---------------------------------------------------

def protocol_summary(cfg: dict, run: RunDir | None = None) -> tuple[dict | None, str | None]:
    """``(Protocol.summary(), None)`` of the run's protocol (classes per role, images per part): the one the final
    retrain's worker stored with the model (``final/model_info.pt``) where there is one, else built in the driver
    from ``cfg["protocol"]`` and ``cfg["protocol_options"]`` (this loads the data set once); ``(None, reason)``
    when the data can no longer be read."""
    from trainables.image import make_protocol

    stored = None if run is None else run.path / "final" / "model_info.pt"
    if stored is not None and stored.exists():
        import torch

        info = torch.load(stored, map_location="cpu", weights_only=True)
        if isinstance(info.get("summary"), dict):
            return info["summary"], None
    try:
        return make_protocol(cfg["protocol"], **cfg["protocol_options"]).summary(), None
    except (ValueError, OSError) as err:
        return None, " ".join(str(err).split())


def protocol_description(name: str) -> str:
    """The first paragraph of the registered protocol's docstring, on one line ("" if it has none)."""
    import inspect

    from trainables.image import PROTOCOLS

    doc = inspect.getdoc(PROTOCOLS.lookup(name)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _meaning_lines(metric: str, measured_test: dict, summary: dict | None) -> list[str]:
    """"What the numbers mean": the ranking metric, the AUROC and FPR95 of its score and id_acc of the champion's
    test retrain, each as :func:`metric_meaning`."""
    _, score = parse_metric(metric)
    names = dict.fromkeys([metric, *((f"auroc_{score}", f"fpr95_{score}") if score else ()), "id_acc"])
    values = {k: measured_test.get(k) for k in names}
    values = {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not values:
        return []
    s = summary or {}
    counts = (s["id_test"], s["ood_test"]) if summary else None
    return ["## What the numbers mean", "",
            "The champion's final retrain, scored on the test split (every score: higher = more in-distribution):",
            "", *(f"- {metric_meaning(k, v, s.get('id_classes'), s.get('ood_classes'), counts)}"
                  for k, v in values.items()), ""]


def _validation_error(metric: str, value, summary: dict | None) -> float | None:
    """:func:`metric_standard_error` of one validation measurement of ``metric`` at ``value``, or None."""
    if summary is None or value is None or not math.isfinite(value):
        return None
    return metric_standard_error(metric, value, summary["id_val"], summary["ood_val"])


def _before_search(history: pd.DataFrame, metric: str) -> list[float]:
    """The finite validation ``metric`` values of the warmup and distill rows: what the search has to beat."""
    values = history[history.stage.isin(["warmup", "distill"])][metric].astype(float)
    return values[np.isfinite(values)].tolist()


def _search_lines(history: pd.DataFrame, metric: str, se: float | None) -> list[str]:
    """"The search against the architectures before it": :func:`search_verdict` on the history's validation
    measurements (warmup and distill rows vs search rows)."""
    search = history[history.stage == "search"][metric].tolist()
    return ["## The search against the architectures before it", "",
            search_verdict(metric, _before_search(history, metric), search, noise=None if se is None else 2 * se),
            ""]


def runner_up(history: pd.DataFrame, metric: str, champion_hash: str) -> tuple[str, float] | None:
    """``(arch_hash, validation metric)`` of the best candidate other than the champion, among the candidates
    the final stage chose from (the last distill iteration, or the warmup without distillation, and the search);
    ties to the smaller hash; None when there is none."""
    distill = history[history.stage == "distill"]
    last = distill[distill.iteration == distill.iteration.max()] if len(distill) else history[history.stage == "warmup"]
    pool = pd.concat([last, history[history.stage == "search"]])
    pool = pool[np.isfinite(pool[metric].astype(float)) & (pool.arch_hash != champion_hash)]
    if not len(pool):
        return None
    best = pool.sort_values([metric, "arch_hash"], ascending=[False, True]).iloc[0]
    return str(best.arch_hash), float(best[metric])


def _seed_sd(compare: dict | None) -> float | None:
    """The sample sd of the champion's test metric over the compare seeds (rows[0]), or None with < 2 seeds."""
    if not compare:
        return None
    values = [v for v in compare["rows"][0]["values"][compare["metric"]] if v is not None and math.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _warning_lines(metric: str, best: dict, history: pd.DataFrame, summary: dict | None, taus: dict) -> list[str]:
    """"Warnings": a small validation split, leads within seed noise (standard models, runner-up) and rank
    correlations on too few architectures; "None." when nothing applies."""
    value = best["measured_search"].get(metric)
    warnings = []
    if summary is not None and value is not None and math.isfinite(value):
        warnings.append(validation_size_warning(metric, value, summary["id_val"], summary["ood_val"]))
    if best.get("compare"):
        warnings += seed_noise_warnings(best["compare"])
    other = runner_up(history, metric, best["arch_hash"])
    if other is not None and value is not None and math.isfinite(value):
        warnings.append(runner_up_warning(metric, value, other, _seed_sd(best.get("compare")),
                                          _validation_error(metric, value, summary)))
    warnings.append(correlation_warning("The predictor's Kendall τ on its held-out architectures",
                                        taus["validation"]))
    if "search" in taus:
        warnings.append(correlation_warning("The predictor's Kendall τ on the search proposals", taus["search"]))
    warnings = [w for w in warnings if w]
    return ["## Warnings", "", *(f"- {w}" for w in warnings or ["None."]), ""]


def write_report(run: RunDir, cfg: dict, best: dict) -> None:
    """Write the PNGs and ``report.md`` of a finished run."""
    from pipelines.nas.tracking import HistoryStore
    from search_space.drawing import draw_genotype

    metric = cfg["metric"]
    history = HistoryStore(run / "history.parquet").read()
    history = history[history.stage != "compare"]  # test-split retrains: report.md's comparison table only
    searched = history[history.stage != "final"]
    taus = plot_predicted_vs_measured(run, metric)
    plot_metric_by_stage(history, metric, run / "metric_by_stage.png")
    plot_search_trajectory(run, metric, max(_before_search(searched, metric), default=math.nan))
    draw_genotype(best["genotype"], run / "champion_cells.png", title="champion")

    summary, unread = protocol_summary(cfg, run)
    se = _validation_error(metric, best["measured_search"].get(metric), summary)
    model = best["model"]
    alias = "alias @champion" if model.get("alias") else f"not @champion: {model.get('promotion')}"
    lines = [
        f"# DCSOD run: preset `{cfg['preset']}`, protocol `{cfg['protocol']}`", "",
        f"Run directory `{run.path}`; MLflow experiment `dcsod-{best['model']['name'].removeprefix('dcsod-')}`, "
        f"registered model `{best['model']['uri']}` (version {best['model']['version']}; {alias}).", "",
        *task_section(cfg["protocol"], summary, protocol_description(cfg["protocol"]), unread),
        *_champion_lines(best, metric, history[history.stage == "warmup"][metric].dropna()),
        *(thesis_lines(best["thesis"]) if "thesis" in best else []),
        *_meaning_lines(metric, best["measured_test"], summary),
        *_search_lines(searched, metric, se),
        *_warning_lines(metric, best, searched, summary, taus),
        *_compare_lines(best),
        *_candidate_lines(best, metric),
        *_predictor_lines(read_json(run / "predictor" / "metrics.json"), taus),
        *_stage_lines(run.manifest["stages"]),
        "## Plots", "", "![predicted vs measured](predicted_vs_measured.png)", "",
        "![metric by stage](metric_by_stage.png)", "", "![search trajectory](search_trajectory.png)", "",
    ]
    write_text(run / "report.md", "\n".join(lines))


def _champion_lines(best: dict, metric: str, warmup) -> list[str]:
    """The champion: why it was chosen, its predicted and measured numbers against the warmup's, its cells."""
    return [
        "## Champion", "",
        f"- architecture `{best['arch_hash']}` (genotype in `best.json`), chosen as the "
        f"{CHAMPION_RULES[best.get('champion', 'measured')]}",
        f"- predicted {metric} {_fmt(best['predicted'][metric])}; measured at the search budget "
        f"{_fmt(best['measured_search'][metric])} (validation split, stage {best['measured_search']['stage']})",
        f"- final retrain ({best['measured_test'].get('epochs')} epochs), test split: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in best["measured_test"].items() if k not in ("epochs", "params")),
        f"- data lineage of the final retrain: {lineage_phrase(best.get('lineage') or '')}",
        f"- warmup architectures (validation split): median {metric} "
        f"{_fmt(float(warmup.median()) if len(warmup) else None)}, "
        f"best {_fmt(float(warmup.max()) if len(warmup) else None)} (n={len(warmup)})",
        "",
        "### The champion's cells", "",
        "![champion cells](champion_cells.png)", "",
        "One panel per stage (the stage repeats its cell three times): data flows left to right from "
        "`input` (the previous cell's output); each box applies its operator to the concatenation of the arrows "
        "entering it, every box without an outgoing arrow feeds `output` (concatenated, projected by a 1x1 "
        "convolution, plus the input with the residual wiring), and vertices unreachable from the input are "
        "pruned and not drawn.", "",
    ]


def _predictor_lines(pred: dict, taus: dict) -> list[str]:
    """The predictor's rank correlations (``pred``: ``predictor/metrics.json``)."""
    return [
        "## Predictor", "",
        f"`{pred['predictor']}` fit on {pred['n_train']} of the final iteration's pairs, scored on the held-out "
        f"rest: Kendall {correlation_phrase(taus['validation'])}; Pearson "
        f"{correlation_phrase(taus['validation'], 'pearson_rho')}"
        + (f"; on the search proposals, Kendall {correlation_phrase(taus['search'])}" if "search" in taus else "")
        + ". A rank correlation on a handful of architectures says little: read the interval, not the point.", "",
    ]


def _stage_lines(stages: dict) -> list[str]:
    """The manifest's timings per stage and what they mean."""
    lines = ["## Stages", "",
             "| stage | trials | failed | wall s | mean train s | mean trial s | overhead s/trial | gap s/trial |",
             "|---|---|---|---|---|---|---|---|"]
    for name, info in stages.items():
        if "trials" in info:
            lines.append(f"| {name} | {info['trials']} | {info['failed']} | {_fmt(info['wall_seconds'], 1)} | "
                         f"{_fmt(info['mean_train_seconds'], 2)} | {_fmt(info['mean_trainable_seconds'], 2)} | "
                         f"{_fmt(info['overhead_seconds_per_trial'], 2)} | "
                         f"{_fmt(info.get('gap_seconds_per_trial'), 2)} |")
        elif "wall_seconds" in info:
            lines.append(f"| {name} | 1 | 0 | {_fmt(info['wall_seconds'], 1)} | – | – | – | – |")
    return lines + ["", "Overhead per trial = stage wall time × concurrent slots / trials − mean time inside the "
                    "trainable (includes each stage's start: worker processes, imports, data loading). Gap per "
                    "trial = mean time a reused worker waits between the end of one trial and the start of its next "
                    "(scheduling, result reporting, checkpoint, MLflow; the steady-state cost per candidate). A "
                    "stage resumed after a crash reports only its resumed part.", ""]
