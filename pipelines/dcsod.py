"""DCSOD main job: ``python pipelines/dcsod.py`` (a local Ray) or, on a cluster,
``ray job submit --working-dir . -- python pipelines/dcsod.py --preset cifar10-split``.

Stages (DESIGN.md, "Methods as implemented": the thesis's Alg. 2 / Alg. 3), each a Ray Tune experiment of candidate
trainings:

1. ``warmup``: N sampled architectures trained with CE + outlier exposure.
2. ``distill-<i>``: evolving distillation; teachers = top K ∪ random k of the pool; Alg. 2 retrains the whole pool
   each iteration, Alg. 3 trains q new architectures per iteration and retrains all but the dead ones at the end
   (``distill-final``), then chooses the final teachers from that retrain.
3. ``predictor``: the MLP predictor validated on the final iteration's pairs (``predictor/metrics.json``).
4. ``search``: ``PredictorEvolutionSearcher`` warm-started on those pairs proposes M architectures, each trained
   for real with the final teachers (``search.early_stop=asha``: Tune's ASHA stops the trailing ones early).
5. ``final``: the champion (``final.champion``: the best measured architecture, or the predictor's optimum)
   retrained through Ray Train at the final budget on all ID training images, evaluated on the test split,
   registered in MLflow as ``dcsod-<dataset>`` with alias ``champion``.
6. ``compare``: the champion, the median warmup architecture and a standard network (``final.compare``)
   retrained per seed at the final budget, for report.md's "Did the search help?" (a Welch test per metric).

Stages 1, 2 and 4 train on the seeded ``search_fraction`` (0.5) of the ID training images (thesis §4.4.1).

Then ``best.json``, ``report.md`` and PNG plots. MLflow: a parent run per run directory (settings, code and package
versions), a nested run per stage, a run per training under its stage. Every stage writes atomically into
``--output`` and is
recorded in ``manifest.json``; rerunning with the same ``--output`` skips finished stages and restores an
interrupted one (``Tuner.restore``), never duplicating a history row or an MLflow run.
Bad input (unknown preset or key, unreachable tracking server, a run dir holding other settings) prints one
line ``error: ...`` and exits 2 before anything is written.
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
from pipelines.common.settings import ConfigError
from pipelines.nas.settings import check_data, dataset_name, load_config, preset_names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/dcsod.py", description=__doc__.replace("``", "`"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run time: the default preset (quick, digits) took 1 min 44 s on a quiet "
                                            "2-core machine; cifar10-split about 45 min there (benchmarks/RESULTS.md).")
    parser.add_argument("--preset", default="quick", help=f"one of {', '.join(preset_names())} (default quick)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set warmup.n=20 --set train.epochs=5 (values are YAML)")
    parser.add_argument("--output", default=None, help="run directory (default runs/<preset>)")
    parser.add_argument("--resume", action="store_true", help="require an existing run in --output and continue it")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI, "
                        "else MLflow's default sqlite:///mlflow.db in the working directory)")
    parser.add_argument("--address", default=None, help="Ray address (default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-dashboard", action="store_true", help="local Ray without the dashboard")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[dict, Path, str]:
    """Validate everything that can be checked before Ray starts; nothing is written yet."""
    cfg = load_config(args.preset, args.sets)
    check_data(cfg)
    output = Path(args.output or Path("runs") / args.preset)
    tracking_uri = check_tracking_uri(args.tracking_uri or default_tracking_uri(output))
    if args.resume and not (output / "manifest.json").exists():
        raise RunDirError(f"--resume: {output} holds no run to resume")
    RunDir.open(output, cfg, create=False, tracking_uri=tracking_uri)  # same settings and store
    return cfg, output, tracking_uri


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, output, tracking_uri = prepare(args)
    except (ConfigError, RunDirError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    quiet_libraries()
    start_ray(args.address, dashboard=not args.no_dashboard)
    try:
        need = {"CPU": cfg["resources"]["cpu"], "GPU": cfg["resources"]["gpu"]}
        check_resources({k: v for k, v in need.items() if v > 0}, local=is_local(args.address),
                        hints={"GPU": "set resources.gpu=0 to train on CPUs", "CPU": "lower resources.cpu"})
        run = RunDir.open(output, cfg, tracking_uri=tracking_uri)
    except (ConfigError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.nas.report_text import incomplete_comparison_line
    from pipelines.nas.workflow import Workflow

    start = time.perf_counter()
    try:
        best = Workflow(run, cfg, tracking_uri).execute()
    except Exception as err:
        reason = stop_reason(err)
        if reason is None:
            raise
        print(f"\nerror: {reason}", file=sys.stderr)  # a new line: a stage's progress bar may be mid-line
        return 1
    if "total_seconds" not in run.manifest:
        run.note(total_seconds=time.perf_counter() - start)
    import ray

    ray.shutdown()  # Ray streams its workers' log lines to this console until then: the summary comes last
    model = best["model"]
    alias = "@champion" if model.get("alias") else f"not @champion: {model.get('promotion')}"
    print(f"champion {best['arch_hash']}: test {cfg['metric']} {best['measured_test'][cfg['metric']]:.4f} "
          f"(id_acc {best['measured_test']['id_acc']:.4f}); registered as {model['name']} "
          f"version {model['version']} ({alias})")
    print(f"outputs in {run.path}: history.parquet, predictor/metrics.json, best.json, report.md, *.png; "
          f"MLflow experiment dcsod-{dataset_name(cfg)} at {tracking_uri}")
    incomplete = incomplete_comparison_line(best.get("compare"))
    if incomplete:  # the last line: the job's other outputs exist, but "did the search help?" lacks rows
        print(incomplete)
    return 0


if __name__ == "__main__":
    sys.exit(main())
