"""One stage of candidate evaluations as a Ray Tune experiment, resumable with ``Tuner.restore``.

Every candidate is a trial of :func:`trainables.image.tune_trainable.candidate_trainable` on reused actors (data and
teachers loaded once per actor); the teacher bundle (and a fine-tune's initial weights) go into the object store
once per stage through ``tune.with_parameters``. The driver-side
:class:`pipelines.nas.tracking.MLflowHistoryCallback` writes one MLflow run and one ``history.parquet`` row per
completed trial; a crashed trial is retried ``max_failures`` times, then recorded as FAILED with its reason; a
diverged one (or a fine-tune without initial weights) is recorded as FAILED at once. The experiment lives in
``<run dir>/tune/<stage name>`` (Tune's own results, where TensorBoard also reads them); a rerun after a crash
restores it: finished trials are kept, unfinished ones rerun, searcher state included.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune import Callback

from pipelines.common.mlflow_runs import MLflowRecorder
from pipelines.common.ray_session import error_line
from pipelines.common.rundir import RunDir, RunStopped
from pipelines.nas.tracking import MLflowHistoryCallback, metrics_of, stopped_early
from search_space.architecture import arch_hash_of
from trainables.image.tune_trainable import InitialWeights, TeacherBundle, candidate_trainable

#: Result keys kept per evaluation besides the metrics.
RECORD_KEYS = ("arch_hash", "genotype", "seed", "stage", "iteration", "error", "trainable_seconds", "data_seconds",
               "eval_seconds", "started_at", "finished_at", "worker_pid", "params", "flops", "aux_images",
               "lineage")


@dataclass
class Stage:
    """What one Tune experiment evaluates.

    ``name``: experiment and manifest id (``warmup``, ``distill-1``, ``search``); ``stage``/``iteration``: the
    history key part; ``train``: :class:`trainables.image.TrainConfig` fields; either ``genotypes`` (architecture
    JSON strings, one trial each) or ``searcher`` + ``num_samples``; ``seeds``: train every genotype once per
    seed (default: the run's ``seed`` only); ``teachers``: the ensemble for ``distill``; ``initial``: the weights
    each (architecture, seed) fine-tunes from (None: every trial trains from scratch); ``scheduler``: a Tune
    trial scheduler (e.g. ASHA) that may stop trainings early (they must then report the metric every epoch:
    ``train["eval_every"] = 1``); ``required``: False lets every trial fail without stopping the run (the
    ``compare`` stage: its report names the missing rows instead).
    """

    name: str
    stage: str
    iteration: int
    train: dict
    genotypes: list[str] | None = None
    searcher: Any = None
    num_samples: int = 0
    teachers: TeacherBundle | None = None
    seeds: list[int] | None = None
    scheduler: Any = None
    required: bool = True
    initial: InitialWeights | None = None

    @property
    def size(self) -> int:
        if self.genotypes is None:
            return self.num_samples
        return len(self.genotypes) * (len(self.seeds) if self.seeds else 1)


class StageProgress(Callback):
    """A tqdm bar per stage: completed (and failed) trials, best metric so far, trainings a scheduler stopped
    early (their metric is not at the stage's budget: not counted as best); one line per failed trial."""

    def __init__(self, desc: str, total: int, metric: str) -> None:
        self.desc, self.total, self.metric = desc, total, metric
        self._bar, self.best, self.finished = None, -math.inf, 0  # restored with the experiment on Tuner.restore
        self.stopped = 0

    def __getstate__(self) -> dict:  # Tune pickles callbacks with the experiment; a tqdm bar does not pickle
        return {**self.__dict__, "_bar": None}

    def setup(self, **info) -> None:
        self._open()

    def _open(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.finished, desc=self.desc, unit="arch", dynamic_ncols=True)
        return self._bar

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        value = result.get(self.metric)
        if stopped_early(result):
            self.stopped += 1
        elif value is not None and math.isfinite(value):
            self.best = max(self.best, value)
        self._tick()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        # Tune's own per-failure traceback is off (quiet_libraries); one line here, the rest in MLflow
        self._open().write(f"warning: {self.desc}: trial {trial.trial_id} failed after "
                           f"{trial.num_failures} attempt(s): {MLflowRecorder.error_message(trial)}", file=sys.stderr)
        self._tick()

    def _tick(self) -> None:
        bar = self._open()
        self.finished += 1
        bar.n = self.finished
        postfix = {self.metric: f"{self.best:.3f}"} if math.isfinite(self.best) else {}
        if self.stopped:
            postfix["stopped early"] = self.stopped
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def on_experiment_end(self, trials, **info) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def trial_name(trial) -> str:
    """``<stage>_<arch_hash>_<trial_id>``: short, unique, and readable in the dashboard and on disk."""
    from search_space import arch_hash_of

    config = trial.config or {}
    genotype = config.get("genotype")
    try:
        arch = arch_hash_of(genotype) if isinstance(genotype, str) else "arch"
    except ValueError:  # an odd value must not fail the trial: the name only has to be readable and unique
        arch = "arch"
    return f"{config.get('stage', 'trial')}_{arch}_{trial.trial_id}"


def resources(cfg: dict) -> dict:
    return {"cpu": cfg["resources"]["cpu"], "gpu": cfg["resources"]["gpu"]}


def run_stage(run: RunDir, cfg: dict, stage: Stage, experiment: str, tracking_uri: str,
              tags: dict | None = None) -> tuple[list[dict], dict]:
    """Run (or resume) ``stage``; return ``(records, stats)``. ``tags``: added to every MLflow run of the stage
    (e.g. ``mlflow.parentRunId`` to nest them under a parent run).

    ``records``: one dict per trial with :data:`RECORD_KEYS`, the metrics and ``checkpoint`` (path of the
    trained weights, None for failed trials and those a scheduler stopped early) and ``stopped_early``;
    ``stats``: ``trials``, ``failed``, ``stopped_early``, ``wall_seconds``,
    ``mean_train_seconds``, ``mean_trainable_seconds`` and ``overhead_seconds_per_trial`` (wall time per trial
    and concurrency slot not spent inside the trainable: scheduling, reporting, MLflow, checkpoints).
    """
    path = run.path / "tune" / stage.name
    trainable = tune.with_resources(tune.with_parameters(candidate_trainable, teachers=stage.teachers,
                                                         initial=stage.initial), resources(cfg))
    start = time.perf_counter()
    space = param_space(cfg, stage)
    set_aside_unreadable_searcher_state(path, stage)
    if restorable(path):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=space, resume_unfinished=True,
                                   resume_errored=False, restart_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config(cfg, stage),
                           run_config=run_config(run, cfg, stage, experiment, tracking_uri, tags))
    try:
        grid = tuner.fit()
    except Exception as err:  # Tune itself stopped (disk full, lost node, lost driver state): not a trial's fault
        raise StageInterrupted(f"stage {stage.name}: Ray Tune stopped: {error_line(err)}; finished trials are kept, "
                               "rerun the same command to resume") from err
    wall = time.perf_counter() - start
    record_late_trials(grid, recorder(run, stage, experiment, tracking_uri, tags))
    records = [record_of(result) for result in grid]
    refuse_full_disk(run, stage, records, grid)
    return records, stage_stats(records, wall, cfg["max_concurrent"])


def param_space(cfg: dict, stage: Stage) -> dict:
    """The trials' configurations: the stage's settings, one trial per genotype (and seed) of a fixed stage."""
    base = {"protocol": cfg["protocol"], "protocol_options": cfg["protocol_options"], "train": stage.train,
            "seed": cfg["seed"], "stage": stage.stage, "iteration": stage.iteration, "checkpoint": True,
            "metric": cfg["metric"]}
    if stage.seeds:
        base["seed"] = tune.grid_search(list(stage.seeds))
    return base if stage.genotypes is None else {**base, "genotype": tune.grid_search(stage.genotypes)}


def set_aside_unreadable_searcher_state(path, stage: Stage) -> None:
    """Move the stage's Tune experiment out of the way when its searcher state cannot be read back: Tune would
    log it and silently restart the experiment from one trial, so the stage starts afresh instead."""
    problem = unreadable_searcher_state(path, stage.searcher)
    if problem is not None:
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        print(f"warning: stage {stage.name}: {problem}; its Tune experiment was moved to {aside} and the stage "
              "starts again (recorded trials keep their history rows and MLflow runs)", file=sys.stderr)


def restorable(path) -> bool:
    """Restorable once Tune saved an experiment state: a driver killed between writing tuner.pkl and the first
    state restarts the stage. The param space is given again on restore because tuner.pkl does not hold it."""
    return tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json"))


def tune_config(cfg: dict, stage: Stage) -> tune.TuneConfig:
    """A fixed stage runs one trial per grid point; a searched one asks ``stage.searcher`` (and its scheduler)."""
    common = {"max_concurrent_trials": cfg["max_concurrent"], "reuse_actors": True, "trial_name_creator": trial_name,
              "trial_dirname_creator": trial_name}
    if stage.genotypes is not None:
        return tune.TuneConfig(num_samples=1, **common)
    return tune.TuneConfig(search_alg=stage.searcher, num_samples=stage.num_samples, scheduler=stage.scheduler,
                           **common)


def run_config(run: RunDir, cfg: dict, stage: Stage, experiment: str, tracking_uri: str,
               tags: dict | None) -> tune.RunConfig:
    """The experiment under ``<run dir>/tune/<stage>`` with the MLflow recorder and the progress bar."""
    callbacks = [recorder(run, stage, experiment, tracking_uri, tags), StageProgress(stage.name, stage.size,
                                                                                    cfg["metric"])]
    return tune.RunConfig(
        name=stage.name, storage_path=str(run.path / "tune"), callbacks=callbacks, verbose=0,
        # No CheckpointConfig(num_to_keep): each trial checkpoints once, and num_to_keep would force an
        # experiment snapshot (all trials) per checkpoint, O(trials^2) per stage. Trials finished after the
        # last periodic snapshot rerun on restore; the tracking callback records them once.
        failure_config=tune.FailureConfig(max_failures=cfg["max_failures"]))


def record_late_trials(grid, late: MLflowHistoryCallback) -> None:
    """Trials that finished while the callback could not record them (the tracking server was down, the driver
    was killed between Tune's snapshot and the callback) are TERMINATED in Tune's state: record them once now."""
    for result in grid:
        metrics = result.metrics or {}
        if result.error is None and result.checkpoint is not None and not metrics.get("error"):
            late.record(metrics, result.config or {}, str(metrics.get("trial_id", "")))


def record_of(result) -> dict:
    """One trial's record (see :func:`run_stage`) from its Tune result."""
    metrics = result.metrics or {}
    record = {**{k: metrics.get(k) for k in RECORD_KEYS}, **metrics_of(metrics)}
    config = result.config or {}
    record["genotype"] = record["genotype"] or config.get("genotype")
    if record["seed"] is None:  # a worker that died before its first report left no metrics: its config says
        record["seed"] = config.get("seed")
    if record["arch_hash"] is None and record["genotype"]:
        record["arch_hash"] = arch_hash_of(record["genotype"])
    record["stopped_early"] = stopped_early(metrics)
    if result.error is not None:
        record["error"] = error_line(result.error)
    ok = result.checkpoint is not None and not record["error"]
    record["checkpoint"] = result.checkpoint.path if ok else None
    return record


def refuse_full_disk(run: RunDir, stage: Stage, records: list[dict], grid) -> None:
    """Trials that failed because the disk is full are not the candidates' fault: the stage stays unfinished
    (:class:`StageInterrupted`) and its failed trials rerun on resume."""
    full = [r for r, result in zip(records, grid) if result.error is not None
            and any(mark in str(result.error) for mark in DISK_FULL)]
    if full:
        raise StageInterrupted(f"stage {stage.name}: {len(full)} of {len(records)} trials failed because the disk "
                               f"is full ({full[0]['error']}); free space under {run.path} and rerun the same "
                               "command to resume")


def stage_stats(records: list[dict], wall: float, max_concurrent: int) -> dict:
    """The stage's ``stats`` (see :func:`run_stage`) from its records and wall time."""
    done = [r for r in records if r["checkpoint"]]
    slots = max(1, min(max_concurrent, len(records)))

    def mean(key: str) -> float:
        values = [r[key] for r in done if r.get(key) is not None]
        return sum(values) / len(values) if values else math.nan

    stopped = sum(r["stopped_early"] for r in records)
    return {"trials": len(records), "failed": len(records) - len(done) - stopped, "stopped_early": stopped,
            "wall_seconds": wall,
            "mean_train_seconds": mean("train_seconds"), "mean_trainable_seconds": mean("trainable_seconds"),
            "overhead_seconds_per_trial": wall * slots / max(1, len(records)) - mean("trainable_seconds"),
            "gap_seconds_per_trial": between_trials(records)}


def recorder(run: RunDir, stage: Stage, experiment: str, tracking_uri: str, tags: dict | None):
    """The stage's :class:`MLflowHistoryCallback` (history rows + MLflow runs of its trials)."""
    return MLflowHistoryCallback(run.path, experiment, stage.stage, stage.iteration, tracking_uri,
                                 extra_tags={"dcsod.run_dir": str(run.path), **(tags or {})},
                                 log_genotype_artifact=False, label=stage.name,
                                 seed_in_name=len(stage.seeds or ()) > 1)


class StageInterrupted(RunStopped):
    """Ray Tune or Ray Train stopped a stage from outside its trials (e.g. the disk filled, a node was lost)."""


DISK_FULL = ("[Errno 28]", "No space left on device", "[Errno 122]", "Disk quota exceeded")


def unreadable_searcher_state(path, searcher) -> str | None:
    """Why the searcher state that ``Tuner.restore`` would read in the experiment ``path`` cannot be read (a
    pickled state of an older version, never unpickled; a corrupt or foreign JSON state), else None. Checked
    on a copy of ``searcher``, the way Tune restores it (the newest ``CKPT_FILE_TMPL`` file)."""
    import copy
    import glob
    import os

    if searcher is None or not os.path.isdir(path):
        return None
    from search_space.searcher import legacy_state_error

    legacy = legacy_state_error(path)
    if legacy is not None:
        return legacy
    template = getattr(searcher, "CKPT_FILE_TMPL", None)
    states = sorted(glob.glob(os.path.join(path, template.format("*")))) if template else []
    if not states:
        return None
    try:
        copy.deepcopy(searcher).restore(states[-1])
    except ValueError as err:
        return str(err)
    return None


def between_trials(records: list[dict]) -> float:
    """Mean wall time a reused worker spends between the end of one trial's trainable and the start of its
    next one (Tune scheduling, result processing, checkpoint upload, driver callbacks); NaN if no worker ran
    two trials. This is the steady-state per-trial overhead; cold starts are excluded."""
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        if r.get("worker_pid") is not None and r.get("started_at") is not None:
            by_worker.setdefault(r["worker_pid"], []).append((r["started_at"], r["finished_at"]))
    gaps = [b[0] - a[1] for spans in by_worker.values() for a, b in zip(sorted(spans), sorted(spans)[1:])]
    return sum(gaps) / len(gaps) if gaps else math.nan
