"""The driver every sweep on Ray Tune shares (text VAE, dialog CVAE): :class:`SweepDriver`, whose
:meth:`SweepDriver.run` is the whole command, and :class:`SweepExit`, how any step stops it.

``run(argv)``: parse the command line; :meth:`SweepDriver.prepare` everything that can be checked before Ray starts
(a :class:`Prepared`); then either read back a finished sweep (:meth:`SweepDriver.stored`: nothing trains, MLflow
is not touched) or :meth:`SweepDriver.train` it (Ray, the run directory, the MLflow parent run, the Tune experiment
with one progress bar, every trial recorded once); :meth:`SweepDriver.write_outputs`; and :meth:`SweepDriver.finish`
(the parent run's metrics, the manifest, the summary and the lines naming every output). A subclass says what is
particular to its sweep through the hooks listed in the class docstring.

Exit status: 0; 2 with one ``error:`` line on stderr for bad input (nothing written); 1 with one ``error:`` line
when the MLflow store or Tune stopped the sweep (a rerun of the same command continues it), or with no error line
when every training failed (the trial runs and ``results.parquet`` say why).
"""
from __future__ import annotations

import argparse
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.mlflow_runs import (
    MLflowRecorder,
    RunTree,
    TrackingUnavailable,
    check_tracking_uri,
    default_tracking_uri,
    one_line,
)
from pipelines.common.ray_session import check_resources, error_line, is_local, quiet_libraries, start_ray
from pipelines.common.rundir import RunDir, RunDirError, RunStopped, stop_reason
from pipelines.common.settings import ConfigError
from pipelines.sweeps.command_line import sweep_parser

SWEEP_STAGE = "sweep"


class SweepExit(Exception):
    """Stop the sweep with exit status ``status`` (2: bad input, nothing written; 1: stopped, a rerun continues);
    the message, if any, is the one line :meth:`SweepDriver.run` prints on stderr (it starts ``error:``)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Prepared:
    """Everything checked before Ray starts."""

    cfg: dict
    settings: dict  # cfg + data directory (+ search): what the manifest records and the run directory fingerprints
    output: Path
    tracking_uri: str
    data_dir: Path | None
    train_size: int  # training examples (sentences, or dialog pairs)
    data_description: str  # the corpus in words (vocabulary, split sizes)


@dataclass
class Finished:
    """What a completed sweep left: its rows, the sweep's own tables of Tune's results (``tables``: what
    :meth:`SweepDriver.tune_tables` / :meth:`SweepDriver.stored_tables` return), its wall time in seconds and
    its MLflow parent run."""

    run: RunDir
    results: pd.DataFrame
    tables: Any
    seconds: float
    parent_id: str | None
    tree: RunTree | None = None  # set when this invocation ran (or resumed) the sweep: ended after the outputs


def mlflow_line(experiment: str, tracking_uri: str, parent_id: str | None) -> str:
    """``experiment E (parent run R) at URI``."""
    parent = f" (parent run {parent_id})" if parent_id else ""
    return f"experiment {experiment}{parent} at {tracking_uri}"


def load_corpus(load: Callable[[], Any]):
    """``load()``'s corpus, described on stdout; a bad file is a one-line :class:`ConfigError`."""
    try:
        data = load()
    except (OSError, ValueError) as err:
        raise ConfigError(one_line(err)) from None
    print(data.describe())
    return data


class SweepDriver(ABC):
    """One sweep command (module docstring). A subclass sets :attr:`PROG`, :attr:`DOC` and :attr:`KEPT`, and
    defines :meth:`flags`, :meth:`prepare`, :meth:`experiment`, :meth:`parent_name`, :meth:`run_tags`,
    :meth:`resources`, :meth:`sweep_size`, :meth:`recorder`, :meth:`fit`, :meth:`read_results`,
    :meth:`tune_tables`, :meth:`stored_tables`, :meth:`write_outputs` and :meth:`summary` (optionally
    :meth:`manifest_counts`). ``self.args`` is the parsed command line once :meth:`run` has parsed it."""

    PROG = ""  # the command, for --help: "python pipelines/<sweep>.py"
    DOC = ""  # the --help text, as a reST docstring (help_text strips the markup)
    KEPT = "trainings"  # what a stopped Tune experiment keeps, in words ("finished trainings are kept")

    def __init__(self) -> None:
        self.args = argparse.Namespace()

    # --- the command -------------------------------------------------------------------------------------
    def run(self, argv: list[str] | None = None) -> int:
        """The whole command (module docstring); its exit status."""
        self.args = sweep_parser(self.PROG, self.DOC, self.flags()).parse_args(argv)
        try:
            try:
                p = self.prepare(self.args)
            except (ConfigError, RunDirError, TrackingUnavailable) as err:
                raise SweepExit(2, f"error: {err}") from None
            start = time.perf_counter()
            run = RunDir.open(p.output, p.settings, create=False, tracking_uri=p.tracking_uri)
            done = self.stored(run, p) if run is not None and run.done(SWEEP_STAGE) else self.train(p, start)
            return self.finish(done, p, self.write_outputs(done, p), start)
        except SweepExit as stop:
            if str(stop):
                print(stop, file=sys.stderr)
            return stop.status

    def prepared(self, cfg: dict, settings: dict, output: Path, data_dir: Path | None,
                 load: Callable[[], Any]) -> Prepared:
        """The end of :meth:`prepare`: the tracking URI (``--tracking-uri``, else the default for ``output``)
        checked, ``--resume`` and an existing run in ``output`` checked against ``settings`` (same settings, same
        store), then the corpus loaded by ``load()``. Raises :class:`ConfigError` / :class:`RunDirError` /
        :class:`TrackingUnavailable`; writes nothing."""
        tracking_uri = check_tracking_uri(self.args.tracking_uri or default_tracking_uri(output))
        if self.args.resume and not (output / "manifest.json").exists():
            raise RunDirError(f"--resume: {output} holds no run to resume")
        RunDir.open(output, settings, create=False, tracking_uri=tracking_uri)
        data = load_corpus(load)
        return Prepared(cfg, settings, output, tracking_uri, data_dir, len(data.train), data.describe())

    def train(self, p: Prepared, start: float) -> Finished:
        """Run (or resume) the sweep with a progress bar under the MLflow parent run (``start``: when the command
        started, :func:`time.perf_counter` seconds). Raises :class:`SweepExit` if it stopped."""
        from pipelines.sweeps.tracking import SweepProgress

        run = self.open_run(p)
        experiment = self.experiment(p)
        tags = self.run_tags(p, run)
        tree = self.parent_run(run, p, tags)
        trial_tags = {**tags, **RunTree.nest_under(tree.root)}
        grid = self.fit_or_stop(lambda: self.fit(run, p, self.recorder(run, p, experiment, trial_tags,
                                                                       SweepProgress(self.sweep_size(p)))), tree)
        # Rows the callback could not record (a trial that finished while a previous driver was killed) come
        # from Tune's own results; a fresh recorder reads the table as the (possibly restored) callback left it.
        self.recorder(run, p, experiment, trial_tags).reconcile(grid)
        return Finished(run, self.read_results(run, p), self.tune_tables(grid, p), time.perf_counter() - start,
                        tree.root, tree)

    def stored(self, run: RunDir, p: Prepared) -> Finished:
        """A finished sweep's rows and tables read back (nothing trains, MLflow is not touched)."""
        info = run.info(SWEEP_STAGE)
        print(f"the sweep in {run.path} finished on {info['finished']}: nothing to train; "
              "rewriting the outputs from the stored rows")
        return Finished(run, self.read_results(run, p), self.stored_tables(run, p), float(info.get("seconds", 0.0)),
                        info.get("mlflow_parent_run"))

    def finish(self, done: Finished, p: Prepared, written: list[Path], start: float) -> int:
        """End a sweep whose outputs are ``written``: the parent run's metrics (FINISHED even if every training
        failed: the trial runs say why), the manifest (with :meth:`manifest_counts`), the summary and the outputs;
        the exit status (1 when every training failed)."""
        run, results = done.run, done.results
        failed = int((results["status"] == "failed").sum())
        if done.tree is not None:
            done.tree.log_metrics(done.tree.root, {"trainings": len(results), "failed": failed,
                                                   "seconds": done.seconds})
            done.tree.end()
        if not run.done(SWEEP_STAGE):
            run.finish(SWEEP_STAGE, seconds=round(done.seconds, 1), rows=len(results), failed=failed,
                       **self.manifest_counts(results), mlflow_parent_run=done.parent_id)
        print(self.summary(results))
        print(f"{len(results)} trainings ({failed} failed) in {time.perf_counter() - start:.0f} s; outputs:")
        for path in (run / "results.parquet", *written, run / "manifest.json"):
            print(f"  {path}")
        print(f"  {run / 'tune' / SWEEP_STAGE} (Tune's experiment; TensorBoard reads it)")
        print(f"  MLflow {mlflow_line(self.experiment(p), p.tracking_uri, done.parent_id)}")
        return 1 if failed == len(results) else 0

    # --- the steps of train ------------------------------------------------------------------------------
    def open_run(self, p: Prepared) -> RunDir:
        """Quiet the libraries, start (or join) Ray, check one configuration's resources against it, and create
        (or reopen) the run directory; exit 2 with one line if the resources or the directory refuse."""
        need, what, hints = self.resources(p)
        try:
            quiet_libraries()
            start_ray(self.args.address, dashboard=not self.args.no_dashboard)
            check_resources(need, local=is_local(self.args.address), what=what, hints=hints)
            return RunDir.open(p.output, p.settings, tracking_uri=p.tracking_uri)
        except (ConfigError, RunDirError) as err:
            raise SweepExit(2, f"error: {err}") from None

    def parent_run(self, run: RunDir, p: Prepared, tags: dict[str, str]) -> RunTree:
        """The run directory's MLflow parent run (created once, found again on a rerun): every setting as a param,
        the code and package versions; exit 1 with one ``error:`` line if the store fails."""
        from mlflow.exceptions import MlflowException

        try:
            recorder = MLflowRecorder(run.path, self.experiment(p), p.tracking_uri, extra_tags=tags)
            return RunTree(recorder, self.parent_name(p), p.settings)
        except (MlflowException, RunStopped, ValueError, OSError) as err:  # the store went away, a deleted experiment
            raise SweepExit(1, f"error: MLflow {p.tracking_uri}: {one_line(err)}; rerun the same command once that "
                               "is fixed") from None

    def fit_or_stop(self, fit: Callable[[], Any], tree: RunTree):
        """``fit()``'s ResultGrid; exit 1 with one ``error:`` line if Tune itself stopped (disk full, lost node:
        the finished trainings are kept, and the parent run is KILLED, not FAILED, so a rerun continues it)."""
        try:
            return fit()
        except Exception as err:
            reason = stop_reason(err) or (f"Ray Tune stopped: {error_line(err)}; finished {self.KEPT} are kept, "
                                          "rerun the same command to resume")
            tree.end(status="KILLED")
            raise SweepExit(1, f"\nerror: {reason}") from None  # a new line: the progress bar may be mid-line

    # --- what a subclass says ----------------------------------------------------------------------------
    @abstractmethod
    def flags(self) -> dict[str, dict[str, Any]]:
        """The command-line options, flag -> argparse keywords (over ``command_line.OPTIONS``), in --help order."""

    @abstractmethod
    def prepare(self, args: argparse.Namespace) -> Prepared:
        """Everything checked before Ray starts (settings, corpus, output, store; see :meth:`prepared`); nothing
        is written. Raises :class:`ConfigError` / :class:`RunDirError` / :class:`TrackingUnavailable`."""

    @abstractmethod
    def experiment(self, p: Prepared) -> str:
        """The MLflow experiment of the sweep."""

    @abstractmethod
    def parent_name(self, p: Prepared) -> str:
        """The name of the MLflow parent run."""

    @abstractmethod
    def run_tags(self, p: Prepared, run: RunDir) -> dict[str, str]:
        """The tags of the parent run and of every trial run."""

    @abstractmethod
    def resources(self, p: Prepared) -> tuple[dict[str, float], str, dict[str, str]]:
        """``(need, what, hints)`` of one configuration for ``check_resources``: Ray resources (``CPU``, ``GPU``),
        the configuration in words, and a hint per resource."""

    @abstractmethod
    def sweep_size(self, p: Prepared) -> int:
        """Trainings of the whole sweep (the progress bar's total)."""

    @abstractmethod
    def recorder(self, run: RunDir, p: Prepared, experiment: str, tags: dict[str, str], progress=None):
        """The sweep's ``SweepRecorder`` (a Tune callback) for ``run``, tagging every trial run with ``tags``."""

    @abstractmethod
    def fit(self, run: RunDir, p: Prepared, recorder):
        """Fit (or restore and continue) the Tune experiment in ``run/tune/sweep``; its ResultGrid."""

    @abstractmethod
    def read_results(self, run: RunDir, p: Prepared) -> pd.DataFrame:
        """The rows of ``results.parquet``."""

    @abstractmethod
    def tune_tables(self, grid, p: Prepared) -> Any:
        """The sweep's tables (:attr:`Finished.tables`) from Tune's ResultGrid."""

    @abstractmethod
    def stored_tables(self, run: RunDir, p: Prepared) -> Any:
        """The sweep's tables (:attr:`Finished.tables`) a finished sweep stored in ``run``."""

    @abstractmethod
    def write_outputs(self, done: Finished, p: Prepared) -> list[Path]:
        """Write every output but ``results.parquet`` and the manifest; the paths written, in order."""

    @abstractmethod
    def summary(self, results: pd.DataFrame) -> str:
        """The results as the console shows them at the end."""

    def manifest_counts(self, results: pd.DataFrame) -> dict[str, int]:
        """Extra counts the manifest's sweep stage records (none by default)."""
        return {}
