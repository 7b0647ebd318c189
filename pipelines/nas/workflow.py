"""The evolving-distillation workflow of ``pipelines/dcsod.py``, durable stage by stage.

Data budgets (thesis §4.4.1): the warmup, distill and search trainings use the seeded ``search_fraction`` of
the ID training images (``TrainConfig.train_fraction``); the final retrain uses all of them (plus the ID
validation images with ``final.train_on_val``) and is scored on the test split.

Each stage's outcome is a JSON file ``stages/<name>.json`` (the evaluation records: metrics, genotype and the
path of the trained weights) written before the manifest marks the stage finished; a finished stage is
read back instead of run, an unfinished Tune stage is restored. Every random choice (population, teachers,
new Alg. 3 architectures, searcher, trainings) is seeded from ``cfg["seed"]``, so a resumed run makes the
same choices an uninterrupted one would.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.common.mlflow_runs import MLflowRecorder, RunTree, tracking_calls
from pipelines.common.rundir import RunDir, read_json, write_json
from pipelines.nas.settings import MIN_PREDICTOR_PAIRS, dataset_name, distill_args, train_config, train_config_of
from pipelines.nas.teachers import NoUsableCandidates, choose_teachers, load_bundle, usable
from pipelines.nas.tracking import metrics_of
from pipelines.nas.tune_stage import Stage, run_stage
from search_space import Genotype, SearchSpace, encode_many, make_predictor, validate
from search_space.predictor import load_predictor, split_indices
from search_space.predictor_quality import rank_correlation

#: The predictor stage's fitted model (``Predictor.save``: arrays and JSON, no pickle).
PREDICTOR_FILE = "predictor.npz"


class Workflow:
    """Runs the stages of one run directory (see ``pipelines/dcsod.py``)."""

    def __init__(self, run: RunDir, cfg: dict, tracking_uri: str, experiment: str | None = None,
                 tags: dict | None = None) -> None:
        """``experiment``: the MLflow experiment (default ``dcsod-<dataset>``); ``tags``: added to every MLflow
        run of the stages. With ``mlflow.parentRunId`` among them (an experiment command's method run), the
        stage runs nest under that run; without, the workflow's own parent run holds them (:attr:`tree`)."""
        self.run, self.cfg, self.tracking_uri = run, cfg, tracking_uri
        self.metric = cfg["metric"]
        self.dataset = dataset_name(cfg)
        self.experiment = experiment or f"dcsod-{self.dataset}"
        self.tags = dict(tags or {})
        self._tree: RunTree | None = None
        self.space = SearchSpace(**cfg["space"])
        self.width = train_config(cfg).width

    # --- settings per stage ------------------------------------------------------------------------
    def warmup_train(self) -> dict:
        return {**self.cfg["train"], "objective": self.cfg["warmup"]["objective"],
                "train_fraction": self.cfg["search_fraction"]}

    def distill_train(self) -> dict:
        d = self.cfg["distill"]
        return {**self.cfg["train"], "objective": "distill", "objective_args": distill_args(self.cfg),
                "teacher_mode": d["teacher_mode"], "train_fraction": self.cfg["search_fraction"]}

    def final_train(self, teachers) -> dict:
        """The final retrain's settings: the search stages' objective at ``final.epochs`` on all ID training
        images (and the validation images with ``final.train_on_val``), scored on the test split."""
        base = self.distill_train() if teachers is not None else self.warmup_train()
        return {**base, "epochs": self.cfg["final"]["epochs"], "eval_split": "test", "train_fraction": 1.0,
                "train_on_val": self.cfg["final"]["train_on_val"]}

    # --- MLflow: parent run > stage runs > trial runs ---------------------------------------------------
    @property
    def tree(self) -> RunTree:
        """The MLflow runs of this workflow: a parent run ``dcsod (<preset>)`` with the settings, code and package
        versions (or, nested in an experiment, the given parent run), and one nested run per stage."""
        if self._tree is None:
            recorder = MLflowRecorder(self.run.path, self.experiment, self.tracking_uri,
                                      extra_tags={"dcsod.run_dir": str(self.run.path)})
            parent = self.tags.get("mlflow.parentRunId")
            other = {k: v for k, v in self.tags.items() if k != "mlflow.parentRunId"}
            if parent:
                self._tree = RunTree.attach(recorder, parent, tags=other)
            else:
                self._tree = RunTree(recorder, f"dcsod ({self.cfg.get('preset', 'custom')})", self.cfg,
                                     tags={**other, "dcsod.pipeline": "dcsod"})
        return self._tree

    def stage_tags(self, name: str) -> dict:
        """Tags for the runs of stage ``name``: nested under the stage's run (created on first use)."""
        return {**self.tags, **RunTree.nest_under(self.tree.child(name, tags={"dcsod.stage": name}))}

    def end_stage(self, name: str, metrics: dict) -> None:
        """Log a finished stage's numbers on its run and end it."""
        run_id = self.tree.child(name)
        self.tree.log_metrics(run_id, metrics)
        self.tree.end(run_id)

    def _fail_stage(self, name: str) -> None:
        """End a stopped stage's run FAILED; a tracking store that is down too must not hide the first error."""
        try:
            self.tree.end(self.tree.child(name), "FAILED")
        except Exception:
            pass

    # --- stages ------------------------------------------------------------------------------------
    def evaluate(self, stage: Stage) -> list[dict]:
        """Run or read back one Tune stage; its records."""
        path = self.run / "stages" / f"{stage.name}.json"
        if self.run.done(stage.name):
            return read_json(path)["records"]
        try:
            records, stats = run_stage(self.run, self.cfg, stage, self.experiment, self.tracking_uri,
                                       self.stage_tags(stage.name))
        except Exception:
            self._fail_stage(stage.name)  # a rerun opens it again
            raise
        teachers = None if stage.teachers is None else stage.teachers.genotypes
        write_json(path, {"records": records, "teachers": teachers, "stats": stats})
        if stage.required and records and not any(r.get("checkpoint") for r in records):
            self._set_aside(stage.name)
            first = next((r["error"] for r in records if r.get("error")), "no error reported")
            self._fail_stage(stage.name)
            raise NoUsableCandidates(f"stage {stage.name}: every candidate failed (first error: {first}); the stage "
                                     "is not marked finished: fix the cause and rerun the same command")
        self.run.finish(stage.name, **stats)
        best = [r[self.metric] for r in usable(records, self.metric)]
        self.end_stage(stage.name, {**stats, **({f"best_{self.metric}": max(best)} if best else {})})
        return records

    def _set_aside(self, name: str) -> None:
        """Move a failed stage's Tune experiment out of the way (kept for inspection), so that a rerun starts the
        stage afresh instead of restoring trials that already failed."""
        path = self.run / "tune" / name
        if path.exists():
            path.rename(path.with_name(f"{name}.failed-{time.strftime('%Y%m%d-%H%M%S')}"))

    def teachers(self, pool: list[dict], iteration: int, name: str):
        chosen = choose_teachers(pool, self.metric, self.cfg["distill"]["top"], self.cfg["distill"]["random"],
                                 self.cfg["seed"], iteration)
        write_json(self.run / "stages" / f"teachers-{name}.json",
                   [{k: r[k] for k in ("arch_hash", "genotype", self.metric, "stage", "iteration")} for r in chosen])
        return load_bundle(chosen, self.width)

    def warmup(self) -> list[dict]:
        n = self.cfg["warmup"]["n"]
        genotypes = [g.to_json() for g in self.space.sample_many(n, seed=self.cfg["seed"])]
        return self.evaluate(Stage("warmup", "warmup", 0, self.warmup_train(), genotypes=genotypes))

    def distill(self, warmup: list[dict]):
        """Evolving distillation; returns (final iteration's records, final teachers or None).

        Alg. 2: iteration i retrains the whole pool with teachers chosen from iteration i-1; the final teachers
        are the last iteration's. Alg. 3: iteration i trains ``q`` new architectures with teachers chosen from
        the pool so far; then the pool, less its *dead* architectures (those whose latest training failed: no
        weights or a non-finite metric — diverged or crashed), is retrained in full with teachers chosen from
        that pool (``distill-final``), and the final teachers (search and final retrain) are chosen after
        that full retrain, from its records (``teachers-final.json``)."""
        d = self.cfg["distill"]
        if d["iterations"] == 0:
            return warmup, None
        train = self.distill_train()
        if d["algorithm"] == "alg2":
            records, bundle = warmup, None
            genotypes = [r["genotype"] for r in warmup]
            for i in range(1, d["iterations"] + 1):
                bundle = self.teachers(records, i, f"distill-{i}")
                records = self.evaluate(Stage(f"distill-{i}", "distill", i, train, genotypes=genotypes,
                                              teachers=bundle))
            return records, bundle
        pool = list(warmup)  # alg3: q new architectures per iteration, all retrained with the final teachers
        seen = {r["arch_hash"] for r in pool}
        for i in range(1, d["iterations"] + 1):
            bundle = self.teachers(pool, i, f"distill-{i}")
            rng = np.random.default_rng([self.cfg["seed"], i])
            new = []
            while len(new) < d["q"]:
                g = self.space.sample(rng)
                if g.arch_hash not in seen:
                    seen.add(g.arch_hash)
                    new.append(g.to_json())
            pool += self.evaluate(Stage(f"distill-{i}", "distill", i, train, genotypes=new, teachers=bundle))
        final = d["iterations"] + 1
        bundle = self.teachers(pool, final, "distill-final")
        alive = usable(pool, self.metric)  # dead architectures are not retrained
        genotypes = list(dict.fromkeys(r["genotype"] for r in alive))
        records = self.evaluate(Stage("distill-final", "distill", final, train, genotypes=genotypes, teachers=bundle))
        return records, self.teachers(records, final + 1, "final")

    def pairs(self, records: list[dict]) -> tuple[list[Genotype], np.ndarray]:
        ok = usable(records, self.metric)
        return [Genotype.from_json(r["genotype"]) for r in ok], np.array([r[self.metric] for r in ok], dtype=float)

    def predictor(self, final_records: list[dict]) -> dict:
        """Validate the predictor on the final iteration's pairs (85/15) and fit one on all of them."""
        out = self.run / "predictor"
        genotypes, y = self.pairs(final_records)
        p = self.cfg["predictor"]
        X = encode_many(genotypes)
        if self.run.done("predictor"):
            if not (out / PREDICTOR_FILE).exists():  # a run directory from before predictor.npz: its
                # predictor.pkl is never unpickled (it could run code); the same seeded fit is made again
                make_predictor(p["name"], **p["args"]).fit(X, y, seed=self.cfg["seed"]).save(out / PREDICTOR_FILE)
            return read_json(out / "metrics.json")
        if len(y) < MIN_PREDICTOR_PAIRS:
            raise NoUsableCandidates(f"predictor: only {len(y)} architectures of the last distillation finished "
                                     f"with a finite {self.metric}; it needs {MIN_PREDICTOR_PAIRS} (see the FAILED "
                                     "runs in MLflow)")
        fitted, metrics = validate(p["name"], X, y, seed=self.cfg["seed"], **p["args"])
        full = make_predictor(p["name"], **p["args"])
        full.fit(X, y, seed=self.cfg["seed"])
        _, val = split_indices(len(y), seed=self.cfg["seed"])  # the held-out part validate() scored
        validation = [{"arch_hash": genotypes[i].arch_hash, "measured": float(y[i]),
                       "predicted": float(fitted.predict(X[i:i + 1])[0])} for i in val]
        interval = rank_correlation([v["predicted"] for v in validation], [v["measured"] for v in validation],
                                    seed=self.cfg["seed"])
        bounds = {k: interval[k] if np.isfinite(interval[k]) else None  # None: too few pairs for an interval
                  for k in ("tau_low", "tau_high", "rho_low", "rho_high")}
        metrics = {**metrics, **bounds,
                   "predictor": p["name"], "metric": self.metric, "validation": validation}
        out.mkdir(parents=True, exist_ok=True)
        full.save(out / PREDICTOR_FILE)
        write_json(out / "metrics.json", metrics)
        run_id = self.tree.child("predictor", tags={"dcsod.stage": "predictor"})
        with tracking_calls(self.tracking_uri):
            self.tree.recorder.client.log_artifact(run_id, str(out / "metrics.json"), "predictor")
        self.end_stage("predictor", {k: v for k, v in metrics.items() if k != "validation"})
        self.run.finish("predictor", kendall_tau=metrics["kendall_tau"], pearson_rho=metrics["pearson_rho"])
        return metrics

    def search(self, final_records: list[dict], teachers) -> list[dict]:
        s = self.cfg["search"]
        if s["trials"] == 0:
            return []
        train = self.distill_train() if teachers is not None else self.warmup_train()
        epochs = train_config_of(train).epochs
        scheduler, budget = None, {}
        if s["early_stop"] == "asha":  # stopped trainings are kept apart by the searcher: never learnt from
            from ray.tune.schedulers import ASHAScheduler

            train = {**train, "eval_every": 1}
            scheduler = ASHAScheduler(time_attr="epoch", metric=self.metric, mode="max", max_t=epochs,
                                      grace_period=s["grace_epochs"], reduction_factor=s["reduction_factor"])
            budget = {"full_budget": epochs, "budget_attr": "epoch"}
        return self.evaluate(Stage("search", "search", 0, train, searcher=self.searcher(final_records, **budget),
                                   num_samples=s["trials"], teachers=teachers, scheduler=scheduler))

    def searcher(self, final_records: list[dict], **budget):
        """The search stage's Ray Tune searcher: ``search.searcher`` built from
        :data:`search_space.searchers.SEARCHERS` (``budget``: ``full_budget``/``budget_attr`` under ASHA).
        ``predictor-evolution`` (DCSOD) takes the ``predictor`` and ``search`` settings and starts from the final
        distill iteration's pairs; the baselines (``random``, ``regularized-evolution``) take their defaults and
        learn from their own trials only."""
        from search_space.searchers import SEARCHERS

        s, own = self.cfg["search"], {}
        if s["searcher"] == "predictor-evolution":
            genotypes, y = self.pairs(final_records)
            own = dict(predictor=self.cfg["predictor"]["name"], predictor_args=self.cfg["predictor"]["args"],
                       min_results=s["min_results"], refit_every=s["refit_every"], population=s["population"],
                       generations=s["generations"], temperature=s["temperature"], reference=s["reference"],
                       warm_start=list(zip(genotypes, y.tolist())))
        return SEARCHERS.build(s["searcher"], metric=self.metric, mode="max", space=self.space,
                               seed=self.cfg["seed"], **budget, **own)

    def champions(self, candidates: list[dict]) -> dict[str, dict]:
        """The candidates for the final retrain, among the *usable* candidates (trained, finite metric: dead
        ones are dropped) of the final distill iteration and the search stage, each with its ``predicted``
        metric (the ``predictor`` stage's model, ``predictor/predictor.npz``, fit on the final iteration's pairs):

        - ``measured``: the highest measured metric (the search budget's validation split);
        - ``predicted``: the highest predicted metric, the predictor's optimum among the architectures that were
          searched and trained ("the optimal searched architecture");
        - ``optimum`` (only when ``final.champion`` names it): the thesis's choice, the evolutionary search's
          optimum under the final predictor (:meth:`optimum`), trained or not.

        Ties go to the smaller ``arch_hash``. Raises :class:`NoUsableCandidates` when none is usable."""
        ok = list({r["arch_hash"]: r for r in sorted(usable(candidates, self.metric),
                                                     key=lambda r: (r[self.metric], r["arch_hash"]))}.values())
        if not ok:
            raise NoUsableCandidates(f"no candidate finished with a finite {self.metric}; nothing to retrain")
        predictor = load_predictor(self.run / "predictor" / PREDICTOR_FILE)
        predicted = predictor.predict(encode_many([Genotype.from_json(r["genotype"]) for r in ok]))
        ok = [{**r, "predicted": float(p)} for r, p in zip(ok, predicted)]
        out = {"measured": min(ok, key=lambda r: (-r[self.metric], r["arch_hash"])),
               "predicted": min(ok, key=lambda r: (-r["predicted"], r["arch_hash"]))}
        if self.cfg["final"]["champion"] == "optimum":
            out["optimum"] = self.optimum(ok)
        return out

    def optimum(self, trained: list[dict]) -> dict:
        """The thesis's champion: the predictor refit on every usable pair (final iteration and search), then the
        evolutionary search of ``search`` (population, generations, temperature, reference) under it, seeded by
        ``seed``; its best architecture — a trained candidate's record, or an untrained one (``stage``
        ``optimum``, no measured metric)."""
        from search_space.evolution import evolve

        s, p = self.cfg["search"], self.cfg["predictor"]
        genotypes = [Genotype.from_json(r["genotype"]) for r in trained]
        model = make_predictor(p["name"], **p["args"])
        model.fit(encode_many(genotypes), np.array([r[self.metric] for r in trained]), seed=self.cfg["seed"])
        best_first = [g for _, g in sorted(zip([-r[self.metric] for r in trained], genotypes), key=lambda t: t[0])]
        (genotype, score), = evolve(self.space, lambda gs: model.predict(encode_many(gs)), top_k=1,
                                    init=best_first[: s["population"]], seed=self.cfg["seed"],
                                    population=s["population"], generations=s["generations"],
                                    temperature=s["temperature"], reference=s["reference"])
        known = {r["arch_hash"]: r for r in trained}
        arch_hash = genotype.arch_hash
        if arch_hash in known:
            return {**known[arch_hash], "predicted": float(score)}
        return {"arch_hash": arch_hash, "genotype": genotype.to_json(), "predicted": float(score), "stage": "optimum",
                "iteration": 0, self.metric: None}

    def final(self, candidates: list[dict], teachers) -> dict:
        """Retrain the champion (``final.champion``: the best measured or the predictor's optimum, see
        :meth:`champions`), record and register it; returns best.json's content (both candidates reported).
        A finished run returns its best.json and leaves the registry alone (a rerun never moves the alias)."""
        if self.run.done("final") and (self.run / "best.json").exists():
            return read_json(self.run / "best.json")
        from pipelines.nas.final import example_images, load_model_info, package, retrain, source_dirs
        from pipelines.nas.model_registry import log_model, register_champion, version_tags
        from pipelines.nas.thesis_settings import against_thesis
        from pipelines.nas.tracking import MLflowHistoryCallback

        rule = self.cfg["final"]["champion"]
        both = self.champions(candidates)
        champion = both[rule]
        train = self.final_train(teachers)
        start = time.perf_counter()
        metrics, state_dict = retrain(self.run, self.cfg, champion["genotype"], train, teachers)
        info = load_model_info(self.run, self.cfg)
        model = package(champion["genotype"], state_dict, info, train)
        tracker = MLflowHistoryCallback(self.run.path, self.experiment, "final", 0, self.tracking_uri,
                                        extra_tags={"dcsod.run_dir": str(self.run.path), **self.stage_tags("final")})
        result = {**metrics, "arch_hash": champion["arch_hash"], "genotype": champion["genotype"],
                  "seed": self.cfg["seed"]}

        def before_finish(rid: str) -> None:
            log_model(rid, model, example_images(info), self.tracking_uri, source_dirs())
            log_champion_cells(rid, champion["genotype"], self.tracking_uri)

        run_id = tracker.record(result, before_finish=before_finish)
        tags = version_tags(self.cfg, self.metric, metrics[self.metric],
                            {"arch_hash": champion["arch_hash"], "genotype": champion["genotype"],
                             "metric": self.metric, "lineage": str(metrics.get("lineage") or "")})
        version, promoted, promotion = register_champion(self.experiment, run_id, tags, self.tracking_uri,
                                                         self.cfg["final"]["promote"])
        self.end_stage("final", {**metrics_of(metrics), "registered_version": version})

        def measured_search(r: dict) -> dict:
            return {"stage": r["stage"], "iteration": r["iteration"], **metrics_of(r)}

        best = {
            "arch_hash": champion["arch_hash"], "genotype": Genotype.from_json(champion["genotype"]).to_dict(),
            "metric": self.metric, "champion": rule, "predicted": {self.metric: champion["predicted"]},
            "measured_search": measured_search(champion),
            "measured_test": {**metrics_of(metrics), **{k: metrics.get(k) for k in ("epochs", "params")}},
            "lineage": metrics.get("lineage") or "", "thesis": against_thesis(self.cfg),
            "candidates": {name: {"arch_hash": r["arch_hash"], "predicted": {self.metric: r["predicted"]},
                                  "measured_search": measured_search(r)} for name, r in both.items()},
            "model": {"name": self.experiment, "version": version, "alias": "champion" if promoted else None,
                      "promotion": promotion, "run_id": run_id, "uri": f"models:/{self.experiment}/{version}"},
        }
        if self.cfg["final"]["compare"]["seeds"]:
            best["compare"] = self.compare(champion, train, teachers)
        tracker.history.compact()
        write_json(self.run / "best.json", best)
        if not self.run.done("final"):
            self.run.finish("final", wall_seconds=time.perf_counter() - start, arch_hash=champion["arch_hash"],
                            version=version)
        return best

    def compare(self, champion: dict, train: dict, teachers) -> dict:
        """Retrain the champion, the median warmup architecture (the lower median by the metric) and
        ``final.compare.standard`` exactly like the final model (budget, objective, teachers, test split), once
        per ``final.compare.seeds``, as one Tune stage (``compare``, whose trials may all fail); returns
        report.md's comparison: ``{"seeds", "metric", "rows": [{"role", "arch_hash", "params", "seeds",
        "values": {metric: [per seed]}, "missing": [{"seed", "error"}]}]}`` (``seeds``/``values``: the seeds
        that trained; ``missing``: those whose training failed, with its reason)."""
        from search_space.architecture import arch_hash_of, architecture_json
        from search_space.standard_models import StandardModel

        c = self.cfg["final"]["compare"]
        warmup = sorted(usable(read_json(self.run / "stages" / "warmup.json")["records"], self.metric),
                        key=lambda r: (r[self.metric], r["arch_hash"]))
        median = warmup[(len(warmup) - 1) // 2]
        roles = {"champion": champion["genotype"], "median warmup architecture": median["genotype"]}
        if c["standard"] is not None:
            model = StandardModel.from_dict(c["standard"])
            roles[f"standard architecture {model.label}"] = model.to_json()
        genotypes = list(dict.fromkeys(architecture_json(g) for g in roles.values()))
        records = self.evaluate(Stage("compare", "compare", 0, train, genotypes=genotypes, seeds=list(c["seeds"]),
                                      teachers=teachers, required=False))
        rows = [comparison_row(role, arch_hash_of(genotype), records, c["seeds"], self.metric)
                for role, genotype in roles.items()]
        return {"seeds": list(c["seeds"]), "metric": self.metric, "rows": rows}

    def execute(self) -> dict:
        """Every stage, then report.md; the parent MLflow run ends FINISHED (FAILED, with the tag ``error``,
        when a stage stops the run; a rerun opens it again)."""
        try:
            warmup = self.warmup()
            final_records, teachers = self.distill(warmup)
            self.predictor(final_records)
            searched = self.search(final_records, teachers)
            best = self.final(final_records + searched, teachers)
            from pipelines.nas.report import write_report

            write_report(self.run, self.cfg, best)
        except Exception as err:
            if self._tree is not None:
                self._end_failed(err)
            raise
        self.finish_tree(best)
        return best

    def finish_tree(self, best: dict) -> None:
        """Tag the parent run with the champion, attach report.md and best.json, and end it."""
        if "mlflow.parentRunId" in self.tags:
            return
        client, root = self.tree.recorder.client, self.tree.root
        with tracking_calls(self.tracking_uri):
            client.set_tag(root, "dcsod.champion", best["arch_hash"])
            client.set_tag(root, "dcsod.model_uri", best["model"]["uri"])
            self.tree.log_metrics(root, {f"test_{k}": v for k, v in best["measured_test"].items()})
            for name in ("report.md", "best.json"):
                if (self.run / name).exists():
                    client.log_artifact(root, str(self.run / name))
            self.tree.end()

    def _end_failed(self, err: Exception) -> None:
        """End the open stage runs FAILED, and the parent run (if it is this workflow's) with the tag ``error``."""
        from pipelines.common.mlflow_runs import one_line

        own = "mlflow.parentRunId" not in self.tags
        try:  # the run stops anyway: a tracking store that is down too must not hide the first error
            if own:
                self.tree.recorder.client.set_tag(self.tree.root, "error", one_line(err))
            self.tree.end_open("FAILED", root=own)
        except Exception:
            pass


def comparison_row(role: str, arch_hash: str, records: list[dict], seeds: list[int], metric: str) -> dict:
    """One row of :meth:`Workflow.compare`: the architecture's trained seeds and their test ``metric`` and
    ``id_acc``, and the seeds whose training failed (``error``: the trial's reason, or "no result")."""
    mine = {r["seed"]: r for r in records if r.get("arch_hash") == arch_hash}
    trained = [s for s in seeds if mine.get(s) and usable([mine[s]], metric)]
    missing = [{"seed": s, "error": (mine.get(s) or {}).get("error") or "no result"} for s in seeds
               if s not in trained]
    return {"role": role, "arch_hash": arch_hash,
            "params": next((mine[s]["params"] for s in trained if mine[s].get("params")), None),
            "values": {k: [mine[s].get(k) for s in trained] for k in (metric, "id_acc")}, "seeds": trained,
            "missing": missing, "lineage": sorted({mine[s].get("lineage") or "" for s in trained})}


def log_champion_cells(run_id: str, genotype: str, tracking_uri: str) -> None:
    """The champion's cells next to its model (artifact ``champion_cells.png`` of MLflow run ``run_id``); a
    failure is a warning, never a failed run."""
    try:
        import tempfile

        from mlflow import MlflowClient

        from search_space.drawing import draw_genotype

        with tempfile.TemporaryDirectory() as tmp:
            path = draw_genotype(genotype, Path(tmp) / "champion_cells.png", title="champion")
            MlflowClient(tracking_uri).log_artifact(run_id, str(path))
    except Exception as err:
        import logging

        logging.getLogger(__name__).warning("champion_cells.png not logged to MLflow run %s: %s", run_id, err)
