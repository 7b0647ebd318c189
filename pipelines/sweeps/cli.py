"""Command-line scaffolding shared by the sweep pipelines on Ray Tune (``text_vae.py``, ``dialog.py``).

:func:`sweep_parser` builds a sweep's argument parser from its options (the shared ones' keywords in
:data:`OPTIONS`), :func:`help_text` turns a module docstring into ``--help`` text, :class:`Prepared` is what a
sweep checked before Ray starts (:func:`check_output`, :func:`load_corpus`), :func:`parent_run_or_exit` and
:func:`fit_or_exit` open the MLflow parent run and run the Tune experiment with one-line stops, and
:func:`finish_sweep` ends a sweep: MLflow, the manifest and the lines naming every output.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.common.mlflow_runs import MLflowRecorder, RunTree, TrackingUnavailable, one_line
from pipelines.common.ray_session import error_line
from pipelines.common.rundir import RunDir, RunDirError, RunStopped, stop_reason
from pipelines.common.settings import ConfigError

SWEEP_STAGE = "sweep"
_TRACKING = "MLflow tracking URI (default MLFLOW_TRACKING_URI, else "
#: Keywords of the options every sweep has (a sweep adds or overrides keywords, e.g. a help text).
OPTIONS: dict[str, dict[str, Any]] = {
    "--set": {"dest": "sets", "action": "append", "default": [], "metavar": "KEY=VALUE"},
    "--resume": {"action": "store_true", "help": "require an existing run in --output and continue it"},
    "--tracking-uri": {"default": None,
                       "help": _TRACKING + "MLflow's default sqlite:///mlflow.db in the working directory)"},
    "--address": {"default": None, "help": "Ray address (default RAY_ADDRESS, else a local Ray)"},
    "--no-dashboard": {"action": "store_true", "help": "local Ray without the dashboard"},
}


def help_text(doc: str) -> str:
    """A module docstring as ``--help`` prints it: without reST markup (double backticks, bold, roles)."""
    text = doc.replace("``", "").replace("**", "")
    for role in (":func:", ":class:", ":meth:"):
        text = text.replace(role, "")
    return text.replace("`", "")


def sweep_parser(prog: str, doc: str, options: Mapping[str, Mapping[str, Any]]) -> argparse.ArgumentParser:
    """The parser of a sweep: ``options`` (flag -> keywords, in ``--help`` order) over :data:`OPTIONS`."""
    parser = argparse.ArgumentParser(prog=prog, description=help_text(doc),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, keywords in options.items():
        parser.add_argument(flag, **{**OPTIONS.get(flag, {}), **keywords})
    return parser


@dataclass
class Prepared:
    """Everything checked before Ray starts."""

    cfg: dict
    settings: dict  # cfg + data directory (+ search): what the manifest records
    output: Path
    tracking_uri: str
    data_dir: Path | None
    train_size: int
    data_description: str  # the corpus in words (vocabulary, split sizes)


def check_output(args: argparse.Namespace, output: Path, settings: dict, tracking_uri: str) -> None:
    """``--resume`` needs a run in ``output``; an existing run there must hold the same settings and store."""
    if args.resume and not (output / "manifest.json").exists():
        raise RunDirError(f"--resume: {output} holds no run to resume")
    RunDir.open(output, settings, create=False, tracking_uri=tracking_uri)


def load_corpus(load: Callable[[], Any]):
    """``load()``'s corpus, described on stdout; a bad file is a one-line :class:`ConfigError`."""
    try:
        data = load()
    except (OSError, ValueError) as err:
        raise ConfigError(one_line(err)) from None
    print(data.describe())
    return data


def parent_run_or_exit(run: RunDir, p: Prepared, experiment: str, tags: dict[str, str],
                       name: str) -> RunTree | int:
    """The run directory's MLflow parent run (created once, found again on a rerun): every setting as a param,
    the code and package versions; exit status 1 with one ``error:`` line if the store fails."""
    from mlflow.exceptions import MlflowException

    try:
        return RunTree(MLflowRecorder(run.path, experiment, p.tracking_uri, extra_tags=tags), name, p.settings)
    except (MlflowException, RunStopped, ValueError, OSError) as err:  # the store went away, or a deleted experiment
        print(f"error: MLflow {p.tracking_uri}: {one_line(err)}; rerun the same command once that is fixed",
              file=sys.stderr)
        return 1


def fit_or_exit(fit: Callable[[], Any], tree: RunTree, kept: str):
    """``fit()``'s ResultGrid; exit status 1 with one ``error:`` line if Tune itself stopped (disk full, lost
    node: the finished ``kept`` are kept, and the parent run is KILLED, not FAILED, so a rerun continues it)."""
    try:
        return fit()
    except Exception as err:
        reason = stop_reason(err) or (f"Ray Tune stopped: {error_line(err)}; finished {kept} are kept, "
                                      "rerun the same command to resume")
        print(f"\nerror: {reason}", file=sys.stderr)  # a new line: the progress bar may be mid-line
        tree.end(status="KILLED")
        return 1


def prepare_and_run(args: argparse.Namespace, prepare: Callable[[argparse.Namespace], Prepared],
                    stored: Callable[[RunDir, Prepared], Any], train: Callable[[Prepared, float], Any]):
    """``(prepared, finished, start)`` of a sweep: ``prepare(args)``, then the finished sweep read back by
    ``stored(run, prepared)`` or trained (or resumed) by ``train(prepared, start)``; or the exit status (2 with
    one ``error:`` line for bad input, ``train``'s when it stopped)."""
    try:
        p = prepare(args)
    except (ConfigError, RunDirError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run = RunDir.open(p.output, p.settings, create=False, tracking_uri=p.tracking_uri)
    if run is not None and run.done(SWEEP_STAGE):
        return p, stored(run, p), start
    done = train(p, start)
    return done if isinstance(done, int) else (p, done, start)


def mlflow_line(experiment: str, tracking_uri: str, parent_id: str | None) -> str:
    """``experiment E (parent run R) at URI``."""
    parent = f" (parent run {parent_id})" if parent_id else ""
    return f"experiment {experiment}{parent} at {tracking_uri}"


def finish_sweep(done, p: Prepared, written: list[Path], summary: str, experiment: str, start: float,
                 **manifest: Any) -> int:
    """End a sweep whose outputs are ``written``: the parent run's metrics (FINISHED even if every training
    failed: the trial runs say why), the manifest (``manifest``: its extra counts), the summary and the outputs;
    the exit status (1 when every training failed)."""
    run, results = done.run, done.results
    failed = int((results["status"] == "failed").sum())
    if done.tree is not None:
        done.tree.log_metrics(done.tree.root, {"trainings": len(results), "failed": failed, "seconds": done.seconds})
        done.tree.end()
    if not run.done(SWEEP_STAGE):
        run.finish(SWEEP_STAGE, seconds=round(done.seconds, 1), rows=len(results), failed=failed, **manifest,
                   mlflow_parent_run=done.parent_id)
    print(summary)
    print(f"{len(results)} trainings ({failed} failed) in {time.perf_counter() - start:.0f} s; outputs:")
    for path in (run / "results.parquet", *written, run / "manifest.json"):
        print(f"  {path}")
    print(f"  {run / 'tune' / SWEEP_STAGE} (Tune's experiment; TensorBoard reads it)")
    print(f"  MLflow {mlflow_line(experiment, p.tracking_uri, done.parent_id)}")
    return 1 if failed == len(results) else 0
