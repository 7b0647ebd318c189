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
Before running, every command prints what it will train and, where the preset gives ``seconds_per_candidate``, the
time that takes, with the figure's source (``pipelines/thesis/cost.py``); ``--plan`` prints only that and exits.
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
from pipelines.nas.settings import dataset_name
from pipelines.thesis.cost import plan_lines
from pipelines.thesis.settings import load_experiment, preset_names

COMMANDS = ("table-4.1", "table-4.2", "fig-4.3", "table-4.3", "fig-4.4", "fig-4.5", "fig-4.6")



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
    parser.add_argument("--plan", action="store_true", help="print the planned trainings and the time estimate "
                        "(seconds per candidate with its source), then exit without running anything")
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> tuple[dict, dict]:
    """The command's experiment and DCSOD settings, checked for what the command needs."""
    exp, cfg = load_experiment(args.preset, args.sets)
    if args.command in ("table-4.2", "table-4.3"):
        check(cfg["distill"]["iterations"] >= 1, f"{args.command} needs distill.iterations >= 1 (the DCSOD labels)")
    if args.command == "table-4.2":
        n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
        check(n >= 2 * exp["table_4_2"]["folds"], f"table_4_2: n = {n} architectures are too few for "
              f"{exp['table_4_2']['folds']} folds (need n >= 2 x folds)")
    return exp, cfg


def prepare(args: argparse.Namespace) -> tuple[dict, dict, Path, str]:
    """Validate everything that can be checked before Ray starts; nothing is written yet."""
    exp, cfg = load_settings(args)
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


def runner(command: str):
    """The function that runs ``command``: ``(root, exp, cfg, tracking, tracking_uri) -> (files, method metrics)``."""
    if command == "table-4.1":
        from pipelines.thesis.method_table import run_table_4_1

        return run_table_4_1
    if command == "table-4.2":
        from pipelines.thesis.label_table import run_table_4_2

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
        if args.plan:
            exp, cfg = load_settings(args)
        else:
            exp, cfg, output, tracking_uri = prepare(args)
    except (ConfigError, RunDirError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(plan_lines(args.command, exp, cfg)), flush=True)
    if args.plan:
        return 0
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
