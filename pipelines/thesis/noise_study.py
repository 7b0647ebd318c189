"""Figure 4.3, the noise study: how much of an architecture's OOD AUROC after brief training is the architecture,
and how much is the seed?

A architectures (the first A of the run's seeded stream) are trained S times each (seeds) with every training
objective of ``noise.objectives`` (CE, outlier exposure, energy bounds, outlier distillation from teachers
chosen in a warmup of the pipeline's N architectures), and scored with every score of ``noise.scores``.

Protocol (``noise.protocol``): ``finetune`` (the thesis's) trains CE and distillation at the pipeline's
per-candidate budget from a seeded random initialisation, and fine-tunes each (architecture, seed)'s CE network
with OE and with energy bounds (:data:`FINETUNED_OBJECTIVES`) for ``noise.finetune_epochs`` epochs at
``noise.finetune_lr`` (cosine to 0, same images): the CE stage runs first and its weights travel to the
fine-tunes as one :class:`trainables.image.tune_trainable.InitialWeights`. ``scratch`` trains every objective
from scratch at the per-candidate budget. Per (objective, score):

- ``sd_seed``: the seed-to-seed standard deviation, ``sqrt(mean over architectures of the variance across
  seeds)``;
- ``sd_arch``: the standard deviation across architectures of their mean over seeds;
- ``ratio`` = sd_seed / sd_arch: near or above 1, a single training's AUROC says about as much about the seed as
  about the architecture — a predictor fit on such labels learns noise;
- ``seed_tau``: the mean Kendall τ between the architectures' rankings of two seeds (over all seed pairs), with a
  bootstrap interval over architectures: how far one seed's ranking predicts another's.

Data lineage: an objective that draws no outlier batch itself (CE; distillation with λ = 0) is a row "without
outliers", so none of its trainings may have seen an outlier, not even through teachers or the weights it
started from (:func:`check_lineage`). A fine-tune inherits its initial network's lineage (an OE fine-tune of a CE
network: ``outliers=direct``).

Outputs ``fig-4.3.md``, ``fig-4.3.parquet`` (every architecture, seed, objective and score), ``fig-4.3.png``.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd

from pipelines.common.rundir import RunDir, atomic_write, write_text
from pipelines.common.settings import check, is_int
from pipelines.nas.settings import train_config
from pipelines.nas.tune_stage import Stage

#: The objectives the thesis fine-tunes from each CE network under ``noise.protocol: finetune`` (as the outlier
#: exposure and energy-bound papers do); CE and distillation (trained from scratch, like DCSOD's students) never are.
FINETUNED_OBJECTIVES = ("oe", "energy")
#: ``noise.protocol``: ``finetune`` (the thesis's) or ``scratch`` (every objective from a random initialisation).
NOISE_PROTOCOLS = ("finetune", "scratch")


def check_noise_protocol(noise: dict) -> None:
    """The ``noise`` section's protocol keys (for :func:`pipelines.thesis.settings.validate_experiment`): a known
    ``protocol``, ``finetune_epochs`` >= 1, ``finetune_lr`` > 0, and under ``finetune`` a ``ce`` objective
    whenever an objective of :data:`FINETUNED_OBJECTIVES` is listed (its weights are what they fine-tune).
    One-line ConfigError."""
    protocol, objectives = noise["protocol"], list(noise["objectives"])
    check(protocol in NOISE_PROTOCOLS, f"noise.protocol: expected one of {', '.join(NOISE_PROTOCOLS)}, "
          f"got {protocol!r}")
    check(is_int(noise["finetune_epochs"], 1), f"noise.finetune_epochs: expected an integer >= 1, "
          f"got {noise['finetune_epochs']!r}")
    lr = noise["finetune_lr"]
    check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
          f"noise.finetune_lr: expected a positive number, got {lr!r}")
    tuned = [o for o in objectives if o in FINETUNED_OBJECTIVES]
    check(protocol != "finetune" or not tuned or "ce" in objectives,
          f"noise.objectives: protocol finetune fine-tunes {', '.join(tuned)} from the CE trainings' weights, so "
          f"the list needs ce (got {objectives!r}); or set noise.protocol=scratch")


def fine_tuned(objective: str, noise: dict) -> bool:
    """Whether ``objective``'s trainings start from the CE network of the same architecture and seed."""
    return noise["protocol"] == "finetune" and objective in FINETUNED_OBJECTIVES


def stage_name(objective: str, noise: dict) -> str:
    """The Tune stage of one objective: ``noise-<objective>``, a fine-tune's naming its epochs and learning rate
    (``noise-oe-finetune-5ep-lr0.001``) so that other fine-tune settings never read back its records."""
    if not fine_tuned(objective, noise):
        return f"noise-{objective}"
    return f"noise-{objective}-finetune-{noise['finetune_epochs']}ep-lr{noise['finetune_lr']:g}"


def training_of(objective: str, noise: dict, cfg: dict) -> str:
    """How ``objective`` trains, in words for the table: ``scratch, 20 epochs`` or ``fine-tune of ce, 5 epochs``."""
    if fine_tuned(objective, noise):
        return f"fine-tune of ce, {_epochs(noise['finetune_epochs'])}"
    return f"scratch, {_epochs(train_config(cfg).epochs)}"


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
    from pipelines.nas.workflow import Workflow
    from search_space.architecture import arch_hash_of

    settings = exp["noise"]
    check_noise_protocol(settings)
    wf = Workflow(RunDir.open(root / "methods" / "noise", cfg), cfg, tracking_uri, experiment=tracking.experiment,
                  tags=tracking.tags_for("noise"))
    genotypes = [g.to_json() for g in wf.space.sample_many(settings["architectures"], seed=cfg["seed"])]
    frame = pd.DataFrame(train_objectives(wf, settings, genotypes, cfg))
    frame["auroc"] = pd.to_numeric(frame["auroc"], errors="coerce").astype("float64")
    summary = summarise(frame, [arch_hash_of(g) for g in genotypes], exp, cfg)
    write_fig_4_3(root.path, frame, summary, exp, cfg)
    metrics = {f"ratio_{r['objective']}_{r['score']}": r["ratio"] for _, r in summary.iterrows()}
    return ["fig-4.3.md", "fig-4.3.parquet", "fig-4.3.png"], {"noise": metrics}


def train_objectives(wf, settings: dict, genotypes: list[str], cfg: dict) -> list[dict]:
    """One Tune stage per objective, CE first (a fine-tune starts from its weights), distillation with teachers
    chosen from a warmup of the pipeline's N architectures; one row per (objective, score, architecture, seed)
    with ``auroc``, ``id_acc``, ``lineage`` and ``training`` (:func:`training_of`)."""
    scores, rows, teachers, ce_records = list(settings["scores"]), [], None, []
    objectives = sorted(settings["objectives"], key=lambda o: o != "ce")  # stable: CE first, the rest in order
    for index, objective in enumerate(objectives):
        train = objective_train(wf, objective, settings, scores, cfg)
        if objective == "distill" and teachers is None:
            teachers = wf.teachers(wf.warmup(), 1, "noise")
        name = stage_name(objective, settings)
        start = initial_weights(ce_records) if fine_tuned(objective, settings) and not wf.run.done(name) else None
        records = wf.evaluate(Stage(name, "noise", index, train, genotypes=genotypes, seeds=list(settings["seeds"]),
                                    teachers=teachers if objective == "distill" else None, initial=start))
        ce_records = records if objective == "ce" else ce_records
        training = training_of(objective, settings, cfg)
        for r in records:
            for score in scores:
                rows.append({"objective": objective, "score": score, "arch_hash": r["arch_hash"], "seed": r["seed"],
                             "auroc": r.get(f"auroc_{score}"), "id_acc": r.get("id_acc"),
                             "lineage": r.get("lineage") or "", "training": training})
        check_lineage(objective, train, records)
    return rows


def objective_train(wf, objective: str, settings: dict, scores: list[str], cfg: dict) -> dict:
    """The trainings' settings of one objective: the warmup's (the per-candidate budget on the search part of the
    ID images) with the objective and the study's scores; a fine-tune at ``finetune_epochs`` and
    ``finetune_lr``."""
    from pipelines.nas.settings import distill_args

    train = {**wf.warmup_train(), "objective": objective, "scores": scores,
             "objective_args": distill_args(cfg) if objective == "distill" else {}}
    if fine_tuned(objective, settings):
        train.update(epochs=settings["finetune_epochs"], lr=settings["finetune_lr"])
    return train


def initial_weights(ce_records: list[dict]):
    """The finished CE trainings' weights and lineages, keyed by architecture hash and seed, as the one
    :class:`~trainables.image.tune_trainable.InitialWeights` every fine-tune trial of a stage shares (a failed CE
    training has none: its fine-tunes are reported failed)."""
    from ray.tune import Checkpoint

    from trainables.image.tune_trainable import InitialWeights, load_weights

    done = [r for r in ce_records if r.get("checkpoint")]
    keys = [InitialWeights.key(r["arch_hash"], r["seed"]) for r in done]
    return InitialWeights({k: load_weights(Checkpoint(r["checkpoint"])) for k, r in zip(keys, done)},
                          {k: r.get("lineage") or "" for k, r in zip(keys, done)})


def summarise(frame: pd.DataFrame, order: list[str], exp: dict, cfg: dict) -> pd.DataFrame:
    """:func:`noise_statistics` per (objective, score) of AUROC, then per objective of ID accuracy (score
    ``id_acc``); architectures in ``order``, each row with its ``training``."""
    summary = []
    for (objective, score), part in frame.groupby(["objective", "score"], sort=False):
        table = part.pivot_table(index="arch_hash", columns="seed", values="auroc").reindex(order)
        summary.append({"objective": objective, "score": score, "training": part["training"].iloc[0],
                        **noise_statistics(table.to_numpy(), n_boot=exp["bootstrap"], seed=cfg["seed"])})
    for objective, part in frame.drop_duplicates(["objective", "arch_hash", "seed"]).groupby("objective", sort=False):
        table = part.pivot_table(index="arch_hash", columns="seed", values="id_acc").reindex(order)
        summary.append({"objective": objective, "score": "id_acc", "training": part["training"].iloc[0],
                        **noise_statistics(table.to_numpy(), n_boot=exp["bootstrap"], seed=cfg["seed"])})
    return pd.DataFrame(summary)


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


def protocol_text(noise: dict, cfg: dict) -> str:
    """The sentence of ``fig-4.3.md`` saying which protocol ran and how each objective trained."""
    epochs, objectives = train_config(cfg).epochs, list(noise["objectives"])
    tuned = [o for o in objectives if fine_tuned(o, noise)]
    scratch = [o for o in objectives if o not in tuned]
    text = (f"Protocol `{noise['protocol']}`: {_and(scratch)} trained {_epochs(epochs)} from a seeded random "
            "initialisation on the search half of the ID images (the pipeline's per-candidate budget)")
    if tuned:
        text += (f"; {_and(tuned)} fine-tuned the CE network of the same architecture and seed for "
                 f"{_epochs(noise['finetune_epochs'])} (SGD lr {noise['finetune_lr']:g}, cosine to 0) on the same "
                 "images, as the thesis does")
    elif noise["protocol"] == "scratch" and any(o in FINETUNED_OBJECTIVES for o in objectives):
        text += f" (the thesis instead fine-tunes {_and(list(FINETUNED_OBJECTIVES))} from the CE networks)"
    return text + "."


def _and(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def write_fig_4_3(out, frame: pd.DataFrame, summary: pd.DataFrame, exp: dict, cfg: dict) -> None:
    s = exp["noise"]
    lines = [f"# Figure 4.3 — seed noise vs architecture signal, {cfg['protocol']} (preset {exp['preset']})", "",
             f"{s['architectures']} architectures × {len(s['seeds'])} seeds {s['seeds']} per objective, scored on "
             f"the validation split. {protocol_text(s, cfg)} sd_seed: seed-to-seed sd (root mean per-architecture "
             "variance); sd_arch: sd of the architectures' means; ratio = sd_seed / sd_arch (≥ 1: one training says "
             "as much about its seed as about its architecture); seed τ: mean Kendall τ between two seeds' rankings "
             "[95% bootstrap interval over architectures]. AUROC and accuracy in %.", "",
             "| objective | score | training | sd_seed | sd_arch | ratio | seed τ [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        tau = (f"{r['seed_tau']:.2f} [{r['tau_low']:.2f}, {r['tau_high']:.2f}]" if math.isfinite(r["tau_low"])
               else (f"{r['seed_tau']:.2f}" if math.isfinite(r["seed_tau"]) else "n/a"))
        lines.append(f"| {r['objective']} | {r['score']} | {r['training']} | {100 * r['sd_seed']:.2f} | "
                     f"{100 * r['sd_arch']:.2f} | {r['ratio']:.2f} | {tau} |")
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
