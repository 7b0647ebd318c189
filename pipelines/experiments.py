"""The thesis's experiments as commands: ``python pipelines/experiments.py table-4.1 --preset quick``.

``table-4.1``: every method of Table 4.1 at the same budget — standard architectures (ResNet, WideResNet,
DenseNet-BC), random search, regularized evolution, DCSOD's predictor with plain cross-entropy labels, and
DCSOD — each winner retrained at the final budget once per seed, without and with auxiliary outliers;
writes ``table-4.1.md`` (MSP, Maha, OT, ID-Acc as mean ± sd, params, FLOPs, and whether DCSOD's lead is beyond
seed noise), ``table-4.1.parquet`` (every row and seed) and ``table-4.1.png``.

``table-4.2``: the predictor's Kendall τ and Pearson ρ on held-out architectures (out-of-fold) for five kinds of
labels — ID accuracy, CE-MSP, CE-OT, DCSOD-MSP, DCSOD-OT — with bootstrap intervals; ``table-4.2.md``,
``table-4.2.parquet``, ``table-4.2-predictions.parquet``, ``table-4.2.png``.

``fig-4.3`` (the noise study: seed vs architecture spread per objective and score), ``table-4.3`` (the (λ, α, β)
ablation) and ``fig-4.4`` (samples × distillation iterations at equal budget): see ``pipelines/thesis/noise_study.py``
and ``pipelines/thesis/variants.py``; ``fig-4.5`` (loss landscapes of the champion after CE and after distillation
training) and ``fig-4.6`` (the champion's cells): ``pipelines/thesis/champion_figures.py``.

Every method runs in its own run directory under ``--output`` (``methods/<name>`` or ``labels/<name>``), stage by
stage through the same Ray Tune stages and candidate trainer as ``pipelines/dcsod.py``: a rerun after a crash
or ``kill -9`` continues where it stopped and trains nothing twice. MLflow: experiment ``experiments-<dataset>``,
one parent run per command and output, a nested run per method, the trials nested under their method's run.
Bad input prints one line ``error: ...`` and exits 2 before anything is written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.common.mlflow_runs import TrackingUnavailable, check_tracking_uri, default_tracking_uri
from pipelines.common.ray_session import check_resources, is_local, quiet_libraries, start_ray
from pipelines.common.rundir import RunDir, RunDirError, stop_reason
from pipelines.common.settings import ConfigError, check
from pipelines.nas.settings import dataset_name, train_config
from pipelines.thesis.settings import load_experiment, preset_names, search_budget

COMMANDS = ("table-4.1", "table-4.2", "fig-4.3", "table-4.3", "fig-4.4", "fig-4.5", "fig-4.6")
#: Table 4.2's label kinds: name -> (labels run, stage records, metric). ``plain``: trained without outliers
#: (warmup with CE, distillation with λ = 0); ``outliers``: with them (outlier exposure, full eq. 4.11).
LABELS_4_2 = {"ID-acc": ("plain", "warmup", "id_acc"), "CE-MSP": ("plain", "warmup", "auroc_msp"),
              "CE-OT": ("outliers", "warmup", "auroc_msp"), "DCSOD-MSP": ("plain", "distill", "auroc_msp"),
              "DCSOD-OT": ("outliers", "distill", "auroc_msp")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/experiments.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--preset", default="quick", help=f"one of {', '.join(preset_names())} (default quick)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting: experiment keys (--set seeds=[0,1,2,3]) or the shared DCSOD "
                             "settings under dcsod. (--set dcsod.train.epochs=3); values are YAML")
    parser.add_argument("--output", default=None, help="directory (default runs/experiments/<command>-<preset>)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI, "
                        "else MLflow's default sqlite:///mlflow.db in the working directory)")
    parser.add_argument("--address", default=None, help="Ray address (default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-dashboard", action="store_true", help="local Ray without the dashboard")
    return parser.parse_args(argv)


def planned_trainings(command: str, exp: dict, cfg: dict) -> tuple[int, int]:
    """``(candidate trainings, final-budget retrains)`` the command will run (a re-run trains only what is
    missing). Retrains are counted once per seed and variant (without / with outliers)."""
    seeds = len(exp["seeds"])
    if command == "table-4.2":
        n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
        return 2 * search_budget({**cfg, "warmup": {**cfg["warmup"], "n": n}, "search": {"trials": 0}}), 0
    if command == "fig-4.3":
        s = exp["noise"]
        teachers = cfg["warmup"]["n"] if "distill" in s["objectives"] else 0
        return teachers + s["architectures"] * len(s["seeds"]) * len(s["objectives"]), 0
    if command == "table-4.3":
        rows = len(exp["ablation"]["rows"])
        return cfg["warmup"]["n"] + rows * (search_budget(cfg) - cfg["warmup"]["n"]), rows * seeds
    if command == "fig-4.4":
        from pipelines.thesis.variants import tradeoff_combinations

        combos = tradeoff_combinations(exp, cfg)
        warmups = sum(dict.fromkeys(n for n, _ in combos))
        return warmups + sum(n * i + cfg["search"]["trials"] for n, i in combos), len(combos) * seeds
    if command in ("fig-4.5", "fig-4.6"):
        return search_budget(cfg), 2 if command == "fig-4.5" else 0
    rows = len(exp["methods"]) + len(exp["standard"])
    return len(exp["methods"]) * search_budget(cfg), rows * seeds * 2


def estimate_line(command: str, exp: dict, cfg: dict) -> str:
    """What the command costs, in trainings and (with ``seconds_per_candidate``) GPU-hours."""
    candidates, retrains = planned_trainings(command, exp, cfg)
    line = f"{command}: {candidates} candidate trainings and {retrains} final-budget retrains"
    seconds = exp["seconds_per_candidate"]
    if seconds is None:
        return line
    ratio = cfg["final"]["epochs"] / train_config(cfg).epochs
    hours = seconds * (candidates + retrains * ratio) / 3600
    return (f"{line}: estimated {hours:,.0f} GPU-hours at {seconds:g} s per candidate (seconds_per_candidate; a "
            f"retrain costs {ratio:g}x a candidate, standard models counted as candidates)")


def prepare(args: argparse.Namespace) -> tuple[dict, dict, Path, str]:
    """Validate everything that can be checked before Ray starts; nothing is written yet."""
    exp, cfg = load_experiment(args.preset, args.sets)
    if args.command in ("table-4.2", "table-4.3"):
        check(cfg["distill"]["iterations"] >= 1, f"{args.command} needs distill.iterations >= 1 (the DCSOD labels)")
    if args.command == "table-4.2":
        n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
        check(n >= 2 * exp["table_4_2"]["folds"], f"table_4_2: n = {n} architectures are too few for "
              f"{exp['table_4_2']['folds']} folds (need n >= 2 x folds)")
    output = Path(args.output or Path("runs") / "experiments" / f"{args.command}-{args.preset}")
    tracking_uri = check_tracking_uri(args.tracking_uri or default_tracking_uri(output))
    RunDir.open(output, run_settings(args.command, exp, cfg), create=False, tracking_uri=tracking_uri)
    return exp, cfg, output, tracking_uri


def run_settings(command: str, exp: dict, cfg: dict) -> dict:
    return {"command": command, "experiment": exp, "dcsod": cfg}


class Tracking:
    """The command's MLflow parent run (the experiment's and DCSOD's settings, code and package versions) and
    its nested per-method runs, each found again on a rerun by its key (:class:`pipelines.common.mlflow_runs.RunTree`);
    a method's stages nest under its run, their trials under the stage."""

    def __init__(self, root: RunDir, command: str, exp: dict, cfg: dict, tracking_uri: str) -> None:
        from pipelines.common.mlflow_runs import MLflowRecorder, RunTree

        self.experiment = f"experiments-{dataset_name(cfg)}"
        self.recorder = MLflowRecorder(root.path, self.experiment, tracking_uri)
        self.tree = RunTree(self.recorder, f"{command} ({exp['preset']})", {"experiment": exp, "dcsod": cfg},
                            tags={"dcsod.command": command})
        self.parent = self.tree.root

    def tags_for(self, method: str) -> dict:
        """Tags nesting a method's runs under the method's run (created on first use)."""
        run_id = self.tree.child(method, tags={"dcsod.method": method})
        return {"mlflow.parentRunId": run_id, "dcsod.method": method}

    def finish(self, out: Path, files: list[str], method_metrics: dict[str, dict]) -> None:
        for method, metrics in method_metrics.items():
            run_id = self.tags_for(method)["mlflow.parentRunId"]
            self.tree.log_metrics(run_id, metrics)
            self.tree.end(run_id)
        for name in files:
            self.recorder.client.log_artifact(self.parent, str(out / name))
        self.tree.end()


def protocol_has_outliers(cfg: dict, records: list[dict]) -> bool:
    """Whether trainings with the warmup objective drew auxiliary outliers: from trained records where there
    are some, else by loading the protocol in the driver."""
    seen = [r["aux_images"] for r in records if r.get("aux_images") is not None]
    if seen:
        return any(n > 0 for n in seen)
    from trainables.image import make_protocol

    aux = make_protocol(cfg["protocol"], **cfg["protocol_options"]).aux
    return aux is not None and len(aux) > 0


def run_table_4_1(root: RunDir, exp: dict, cfg: dict, tracking: Tracking, tracking_uri: str):
    from pipelines.common.rundir import read_json
    from pipelines.thesis.methods import METHODS, ExperimentContext
    from pipelines.thesis.tables import table_4_1_frame, write_table_4_1

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    found = {}
    for name in exp["methods"]:
        method = METHODS.build(name)
        wf = method.workflow(ctx)
        found[name] = (method, wf, method.search(ctx, wf))
    searched = [r for name in exp["methods"] for path in sorted((root / "methods" / name / "stages").glob("*.json"))
                if path.name.startswith(("warmup", "distill", "search")) for r in read_json(path)["records"]]
    ctx.has_outliers = protocol_has_outliers(cfg, searched)
    if exp["standard"]:
        method = METHODS.build("standard")
        wf = method.workflow(ctx)
        found = {"standard": (method, wf, method.search(ctx, wf)), **found}
    rows, method_metrics = [], {}
    for method, wf, winners in found.values():
        for stage, records in method.retrain(ctx, wf, winners).items():
            rows += [(w, stage, r) for w in winners for r in records if r["arch_hash"] == w.arch_hash]
    frame = table_4_1_frame(rows)
    budget = search_budget(cfg)
    header = [f"# Table 4.1 — {cfg['protocol']} (preset {exp['preset']}, DCSOD settings {exp['pipeline']})", "",
              f"Ranking metric during the searches: `{cfg['metric']}` on the validation split. Budget: every search "
              f"method trained {budget} candidates (DCSOD: warmup {cfg['warmup']['n']} + distillation "
              f"{budget - cfg['warmup']['n'] - cfg['search']['trials']} + search {cfg['search']['trials']}; the "
              f"teachers' forward passes are not counted) at the same per-candidate budget; each winner and each "
              f"standard architecture was retrained for {cfg['final']['epochs']} epochs on all ID training images"
              f"{' and the ID validation images' if cfg['final']['train_on_val'] else ''} "
              f"with seeds {exp['seeds']} and scored on the test split. Every search draws its random architectures "
              f"from the same seeded stream (common random numbers: random search's first candidates, regularized "
              f"evolution's first population and both predictor methods' warmup are the same architectures), so "
              f"two rows with the same architecture found the same winner."]
    summary = write_table_4_1(root.path, frame, ctx.has_outliers, header)
    for name in found:  # per method run: every column's mean and sd (standard rows prefixed by arch_hash)
        metrics = method_metrics.setdefault(name, {})
        for _, row in summary[summary["method"] == name].iterrows():
            prefix = f"{row['arch_hash']}." if name == "standard" else ""
            for column in [c for c in summary.columns if c.endswith((" mean", " sd"))]:
                what, stat = column.rsplit(" ", 1)
                metrics[f"{prefix}{what.lower().replace('-', '_')}_{stat}"] = row[column]
    return ["table-4.1.md", "table-4.1.parquet", "table-4.1.png"], method_metrics


def run_table_4_2(root: RunDir, exp: dict, cfg: dict, tracking: Tracking, tracking_uri: str):
    import numpy as np
    import pandas as pd

    from pipelines.nas.teachers import NoUsableCandidates, usable
    from pipelines.nas.workflow import Workflow
    from pipelines.thesis.tables import write_table_4_2
    from search_space import Genotype, encode_many
    from search_space.predictor_quality import cross_validated_correlation

    n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
    base = {**cfg, "warmup": {**cfg["warmup"], "n": n}, "search": {**cfg["search"], "trials": 0}}
    variants = {"outliers": base,
                "plain": {**base, "warmup": {**base["warmup"], "objective": "ce"},
                          "distill": {**base["distill"], "lam": 0.0}}}
    stages = {}
    for name, settings in variants.items():
        wf = Workflow(RunDir.open(root / "labels" / name, settings), settings, tracking_uri,
                      experiment=tracking.experiment, tags=tracking.tags_for(f"labels-{name}"))
        warmup = wf.warmup()
        stages[(name, "warmup")] = warmup
        stages[(name, "distill")] = wf.distill(warmup)[0]
    labels = {}
    for kind, (name, stage, metric) in LABELS_4_2.items():
        labels[kind] = {r["arch_hash"]: (r["genotype"], r[metric]) for r in usable(stages[(name, stage)], metric)}
    common = sorted(set.intersection(*(set(v) for v in labels.values())))
    folds = exp["table_4_2"]["folds"]
    if len(common) < 2 * folds:
        raise NoUsableCandidates(f"table-4.2: only {len(common)} architectures have all five labels; "
                                 f"need at least {2 * folds} for {folds} folds")
    X = encode_many([Genotype.from_json(labels["ID-acc"][h][0]) for h in common])
    p = cfg["predictor"]
    rows, predictions = [], []
    for kind in LABELS_4_2:
        y = np.array([labels[kind][h][1] for h in common], dtype=float)
        q, predicted = cross_validated_correlation(p["name"], X, y, folds=folds, repeats=exp["table_4_2"]["repeats"],
                                                   n_boot=exp["bootstrap"], seed=cfg["seed"], **p["args"])
        rows.append({"label": kind, **q})
        predictions += [{"label": kind, "arch_hash": h, "measured": float(m), "predicted": float(f)}
                        for h, m, f in zip(common, y, predicted)]
    header = [f"# Table 4.2 — {cfg['protocol']} (preset {exp['preset']}, DCSOD settings {exp['pipeline']})", "",
              f"The same {len(common)} architectures, each labelled {len(LABELS_4_2)} ways: trained without "
              "auxiliary outliers (CE warmup: ID-acc, CE-MSP; distillation with λ = 0: DCSOD-MSP) and with them "
              "(outlier exposure: CE-OT; full distillation: DCSOD-OT), "
              f"{cfg['distill']['iterations']} distillation iteration(s). Predictor `{p['name']}`; every architecture "
              f"is predicted by a model fit on the other {folds - 1} of {folds} folds (the same folds for every "
              f"label), so τ and ρ are over all {len(common)} held-out predictions; repeated over "
              f"{exp['table_4_2']['repeats']} fold assignments (the mean is shown); 95% percentile intervals from "
              f"{exp['bootstrap']} bootstrap resamples pooled over the repeats. A τ whose interval spans 0 is not "
              "evidence of a ranking."]
    write_table_4_2(root.path, pd.DataFrame(rows), pd.DataFrame(predictions), header)
    metrics = {f"tau_{r['label'].lower().replace('-', '_')}": r["kendall_tau"] for r in rows}
    return ["table-4.2.md", "table-4.2.parquet", "table-4.2.png"], {"labels-outliers": metrics, "labels-plain": {}}


def runner(command: str):
    """The function that runs ``command``: ``(root, exp, cfg, tracking, tracking_uri) -> (files, method metrics)``."""
    if command == "table-4.1":
        return run_table_4_1
    if command == "table-4.2":
        return run_table_4_2
    if command == "fig-4.3":
        from pipelines.thesis.noise_study import run_fig_4_3

        return run_fig_4_3
    from pipelines.thesis import champion_figures
    from pipelines.thesis import variants as dcsod_variants

    return {"table-4.3": dcsod_variants.run_table_4_3, "fig-4.4": dcsod_variants.run_fig_4_4,
            "fig-4.5": champion_figures.run_fig_4_5, "fig-4.6": champion_figures.run_fig_4_6}[command]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        exp, cfg, output, tracking_uri = prepare(args)
    except (ConfigError, RunDirError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(estimate_line(args.command, exp, cfg), flush=True)
    quiet_libraries()
    start_ray(args.address, dashboard=not args.no_dashboard)
    try:
        need = {"CPU": cfg["resources"]["cpu"], "GPU": cfg["resources"]["gpu"]}
        check_resources({k: v for k, v in need.items() if v > 0}, local=is_local(args.address),
                        hints={"GPU": "set dcsod.resources.gpu=0 to train on CPUs", "CPU": "lower dcsod.resources.cpu"})
        root = RunDir.open(output, run_settings(args.command, exp, cfg), tracking_uri=tracking_uri)
    except (ConfigError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    tracking = Tracking(root, args.command, exp, cfg, tracking_uri)
    try:
        files, metrics = runner(args.command)(root, exp, cfg, tracking, tracking_uri)
    except Exception as err:
        reason = stop_reason(err)
        if reason is None:
            raise
        print(f"\nerror: {reason}", file=sys.stderr)  # a new line: a stage's progress bar may be mid-line
        return 1
    if not root.done(args.command):
        tracking.finish(root.path, files, metrics)
        root.finish(args.command)
    if "total_seconds" not in root.manifest:
        root.note(total_seconds=time.perf_counter() - start)
    print((root.path / files[0]).read_text(), end="")
    print(f"outputs in {root.path}; MLflow experiment {tracking.experiment} at {tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
