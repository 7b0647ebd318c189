"""The rows of Table 4.1: how each method finds its architecture, and how every row is retrained.

One class per method (Optuna-sampler style), registered in :data:`METHODS` under the names of
``experiment_settings.METHOD_NAMES``; the standard architectures are one more :class:`StandardArchitectures`
entry whose rows come from the preset. Each method runs in its own run directory ``<output>/methods/<name>``
(a :class:`~pipelines.nas.workflow.Workflow`: every stage resumable, nothing trained twice) and returns its
:class:`Winner`\\ s; :meth:`Method.retrain` then trains each winner at the final budget once per seed, without
auxiliary outliers (stage ``retrain-plain``: the MSP and Mahalanobis columns) and, where the protocol has them,
with them (``retrain-outliers``: the OT column).

Data lineage (:mod:`trainables.image.lineage`): the ``retrain-plain`` trainings see no auxiliary outlier, not even
through teachers — DCSOD's distils from the teachers of a second warmup and distillation run without outliers
(``<output>/methods/dcsod-no-outliers``: CE warmup, λ = 0), and the predictor with CE labels learns from a CE
warmup. :mod:`pipelines.thesis.tables` refuses a value whose recorded lineage does not fit its column.

Budget (:func:`pipelines.thesis.settings.search_budget`): random search, regularized evolution and the
predictor with CE labels train exactly as many candidates as DCSOD, each at the same per-candidate budget.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.common.rundir import RunDir
from pipelines.nas.teachers import NoUsableCandidates, usable
from pipelines.nas.tune_stage import Stage
from pipelines.nas.workflow import Workflow
from pipelines.thesis.settings import search_budget
from search_space.registry import Registry

METHODS = Registry("experiment method")


@dataclass
class Winner:
    """One row of Table 4.1: ``label`` (the row's name), the architecture (``genotype``: its JSON, a genotype
    or a standard model; ``arch_hash``), ``searched`` (its metric on the validation split when the search
    found it; NaN for a standard architecture) and ``trainings`` (candidate trainings the search spent)."""

    method: str
    label: str
    genotype: str
    arch_hash: str
    searched: float
    trainings: int


@dataclass
class ExperimentContext:
    """What every method shares: the experiment's directory, settings (``exp``: the experiment's, ``cfg``: the
    DCSOD pipeline's), MLflow store and experiment name, and ``tags_for(method)`` (MLflow tags nesting the
    method's runs under its parent run)."""

    root: RunDir
    exp: dict
    cfg: dict
    tracking_uri: str
    mlflow_experiment: str
    tags_for: Callable[[str], dict]
    has_outliers: bool = True  # the protocol has auxiliary outliers (else no retrain-outliers stage, no OT column)


def without_outliers(cfg: dict) -> dict:
    """DCSOD settings ``cfg`` with no auxiliary outlier data anywhere: warmup with plain cross-entropy,
    distillation with λ = 0 (so its teachers, and whatever learns from them, never see an outlier)."""
    return {**cfg, "warmup": {**cfg["warmup"], "objective": "ce"}, "distill": {**cfg["distill"], "lam": 0.0}}


def best_measured(records: list[dict], metric: str) -> dict:
    """The usable record with the highest ``metric`` (ties: smaller arch_hash)."""
    ok = usable(records, metric)
    if not ok:
        raise NoUsableCandidates(f"no candidate finished with a finite {metric}")
    return min(ok, key=lambda r: (-r[metric], r["arch_hash"]))


class Method:
    """A row-producing method: :meth:`settings` (its DCSOD settings), :meth:`search` (its winners) and the
    training settings of its retrains (:meth:`retrain_train`; teachers from :meth:`retrain_teachers`)."""

    name = "method"
    label = "method"

    def settings(self, ctx: ExperimentContext) -> dict:
        return ctx.cfg

    def workflow(self, ctx: ExperimentContext) -> Workflow:
        cfg = self.settings(ctx)
        run = RunDir.open(ctx.root / "methods" / self.name, cfg)
        return Workflow(run, cfg, ctx.tracking_uri, experiment=ctx.mlflow_experiment, tags=ctx.tags_for(self.name))

    def search(self, ctx: ExperimentContext, wf: Workflow) -> list[Winner]:
        raise NotImplementedError

    def retrain_teachers(self, ctx: ExperimentContext, wf: Workflow, outliers: bool):
        """The teachers of the retrain with (``outliers``) or without auxiliary outliers; None: no teachers."""
        return None

    def retrain_train(self, ctx: ExperimentContext, wf: Workflow, outliers: bool, teachers) -> dict:
        """Final budget, all ID training images, test split: plain cross-entropy, or the experiment's warmup
        objective (outlier exposure) with the protocol's auxiliary outliers — the experiment's, not the method's
        (the CE-labels method warms up with CE but is retrained with outliers like every other row)."""
        return {**wf.final_train(None), "objective": ctx.cfg["warmup"]["objective"] if outliers else "ce"}

    def retrain(self, ctx: ExperimentContext, wf: Workflow, winners: list[Winner]) -> dict[str, list[dict]]:
        """Each winner once per seed: ``{"retrain-plain": records, "retrain-outliers": records}`` (the second
        only where the protocol has auxiliary outliers)."""
        genotypes = list(dict.fromkeys(w.genotype for w in winners))
        out = {}
        for name, outliers in (("retrain-plain", False), ("retrain-outliers", True)):
            if outliers and not ctx.has_outliers:
                continue
            teachers = self.retrain_teachers(ctx, wf, outliers)
            train = self.retrain_train(ctx, wf, outliers, teachers)
            out[name] = wf.evaluate(Stage(name, name, 0, train, genotypes=genotypes, seeds=list(ctx.exp["seeds"]),
                                          teachers=teachers if train["objective"] == "distill" else None))
        return out


@METHODS.register("standard")
class StandardArchitectures(Method):
    """The preset's ``standard`` list (ResNet, WideResNet, DenseNet-BC, ...): no search, retrained only."""

    name = "standard"
    label = "standard architectures"

    def search(self, ctx, wf):
        from search_space.standard_models import StandardModel

        models = [StandardModel.from_dict(spec) for spec in ctx.exp["standard"]]
        return [Winner(self.name, m.label, m.to_json(), m.arch_hash, math.nan, 0) for m in models]


class SearcherMethod(Method):
    """A Ray Tune searcher proposes :func:`search_budget` candidates, trained like DCSOD's warmup (the warmup
    objective on ``search_fraction`` of the ID images); the winner is the best measured."""

    def make_searcher(self, ctx: ExperimentContext, wf: Workflow):
        raise NotImplementedError

    def search(self, ctx, wf):
        budget = search_budget(ctx.cfg)
        records = wf.evaluate(Stage("search", "search", 0, wf.warmup_train(), searcher=self.make_searcher(ctx, wf),
                                    num_samples=budget))
        best = best_measured(records, wf.metric)
        return [Winner(self.name, self.label, best["genotype"], best["arch_hash"], best[wf.metric], budget)]


@METHODS.register("random")
class RandomSearch(SearcherMethod):
    name, label = "random", "random search"

    def make_searcher(self, ctx, wf):
        from search_space.searchers import SEARCHERS

        return SEARCHERS.build("random", metric=wf.metric, mode="max", space=wf.space, seed=wf.cfg["seed"])


@METHODS.register("regularized-evolution")
class RegularizedEvolution(SearcherMethod):
    name, label = "regularized-evolution", "regularized evolution"

    def make_searcher(self, ctx, wf):
        from search_space.searchers import SEARCHERS

        return SEARCHERS.build("regularized-evolution", metric=wf.metric, mode="max", space=wf.space,
                               seed=wf.cfg["seed"], **ctx.exp["regularized_evolution"])


@METHODS.register("ce-predictor")
class CrossEntropyPredictor(Method):
    """The thesis's "Cross Entropy" row: DCSOD's predictor and search with labels from plain cross-entropy warmup
    training (no outliers, no distillation). For the same budget its warmup trains ``search_budget -
    search.trials`` architectures."""

    name, label = "ce-predictor", "predictor, CE labels"

    def settings(self, ctx):
        cfg = {**ctx.cfg, "warmup": {**ctx.cfg["warmup"], "objective": "ce"}, "distill": dict(ctx.cfg["distill"])}
        cfg["warmup"]["n"] = search_budget(ctx.cfg) - ctx.cfg["search"]["trials"]
        cfg["distill"]["iterations"] = 0
        return cfg

    def search(self, ctx, wf):
        final_records, teachers = wf.distill(wf.warmup())
        wf.predictor(final_records)
        searched = wf.search(final_records, teachers)
        chosen = wf.champions(final_records + searched)[wf.cfg["final"]["champion"]]
        return [Winner(self.name, self.label, chosen["genotype"], chosen["arch_hash"], chosen[wf.metric],
                       search_budget(wf.cfg))]


@METHODS.register("dcsod")
class DCSOD(CrossEntropyPredictor):
    """The full pipeline: evolving distillation, predictor, search; retrained with the final teachers, and
    without outliers (distillation on ID images only, λ = 0) with the final teachers of the same warmup and
    distillation run without outliers (:meth:`plain_workflow`)."""

    name, label = "dcsod", "DCSOD"

    def settings(self, ctx):
        return ctx.cfg

    def retrain_teachers(self, ctx, wf, outliers):
        chain = wf if outliers or not ctx.has_outliers else self.plain_workflow(ctx)
        return chain.distill(chain.warmup())[1]

    def plain_workflow(self, ctx: ExperimentContext) -> Workflow:
        """DCSOD's warmup and distillation without auxiliary outliers (:func:`without_outliers`), in its own run
        directory ``methods/dcsod-no-outliers``: the teachers of the retrain without outliers."""
        cfg = without_outliers(self.settings(ctx))
        name = f"{self.name}-no-outliers"
        return Workflow(RunDir.open(ctx.root / "methods" / name, cfg), cfg, ctx.tracking_uri,
                        experiment=ctx.mlflow_experiment, tags=ctx.tags_for(name))

    def retrain_train(self, ctx, wf, outliers, teachers):
        if teachers is None:  # distill.iterations = 0: no teachers, retrained like the other searched rows
            return super().retrain_train(ctx, wf, outliers, teachers)
        train = wf.final_train(teachers)
        return train if outliers else {**train, "objective_args": {**train["objective_args"], "lam": 0.0}}
