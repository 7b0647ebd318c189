"""Dialog CVAE sweep on Ray Tune: β schedules × posteriors × bag-of-words loss on/off × seeds for a kgCVAE-style
conditional VAE on Switchboard.

``python pipelines/dialog.py [--preset swda-small|swda] [--set key=value ...] [--data-dir DIR] [--output DIR]
[--resume] [--tracking-uri URI] [--address ADDR] [--no-dashboard]``, locally or through ``ray job submit
--working-dir . -- python pipelines/dialog.py ...``.

Stages:

1. **prepare** (the driver, before Ray starts): the preset of ``pipelines/presets/dialog.yaml`` with the ``--set``
   overrides (YAML values) checked by :func:`validate`; the dialogs loaded from ``--data-dir``, else
   ``$DCSOD_DATA_DIR``, else ``../shared/data`` next to the repository (``swda/{train,valid,test}.jsonl``, or
   ``swda/valid.jsonl`` alone, split by dialog with ``seed``); the tracking URI and an existing run directory
   checked. Any problem is one line ``error: ...`` on stderr and exit status 2, with nothing written.
2. **sweep**: one Tune experiment in ``DIR/tune/sweep``, shown as one progress bar: every configuration of
   ``schedules × posteriors × bow`` (the grid axes, ``pipelines.sweeps.dialog.axes``) is trained once per entry of
   ``seeds`` (one trial each, ``trainables.text.dialog_tune``, on reused actors, ``concurrency`` at a time). The
   driver records every finished trial once (:class:`pipelines.sweeps.dialog.tracking.DialogRecorder`): a row of
   ``results.parquet`` and an MLflow run in experiment ``dialog-swda``, nested under the run directory's parent run
   (every setting as a param, the code and package versions; found again, not duplicated, by a rerun).
3. **outputs**, written atomically into ``--output`` (default ``runs/dialog/<preset>``): ``results.parquet`` (one
   row per configuration and seed: ``schedule, posterior, bow, seed``, the test metrics ``rec, kl, elbo,
   rec_ppl, ppl, mi, bleu{1..4}_{p,r,f1}, bow_{avg,extrema,greedy}_{p,r}, intra_dist{1,2}, inter_dist{1,2},
   response_len, act_acc`` (definitions: ``trainables.text.dialog_metrics``), the settings, ``status``,
   ``error``, ``trial_id``, ``mlflow_run_id``), ``curves.parquet`` (per epoch), ``examples.json`` (generated
   responses), ``learning_curves.png`` (validation KL, rec and β per epoch), ``beta_schedules.png``, ``report.md``
   (tables like the thesis's Table 2.3 with mean ± sd over seeds and a plain-words reading of every grid axis
   with Welch's test over seeds) and ``manifest.json``.

Resume: rerun the same command (or add ``--resume``) after a crash or ``kill -9``: the Tune experiment continues
with ``Tuner.restore`` and no row or MLflow run is written twice; once the sweep is finished a rerun trains
nothing and only rewrites the outputs. Other settings on an existing ``--output`` are refused.

Run time: trainings (configurations × seeds) × epochs × updates per epoch (training pairs / batch_size) × the
cost of one update (model sizes, context_window, max_utt_len), divided by ``concurrency``, plus the test
generation (``samples`` per context) and Ray's start-up.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import RunDir
from pipelines.sweeps.dialog.axes import configurations
from pipelines.sweeps.dialog.experiment import run_sweep
from pipelines.sweeps.dialog.outputs import stored_tables, summary, tune_tables, write_outputs
from pipelines.sweeps.dialog.settings import DATA_KEYS, DIALOG_PRESETS, load_config
from pipelines.sweeps.driver import Finished, Prepared, SweepDriver
from pipelines.sweeps.settings import resolve_data_dir, training_seeds

EXPERIMENT = "dialog-swda"

#: The --help text: this module's docstring.
HELP = __doc__


class DialogSweep(SweepDriver):
    """The dialog sweep (module docstring) on the shared :class:`pipelines.sweeps.driver.SweepDriver`."""

    PROG = "python pipelines/dialog.py"
    DOC = HELP
    KEPT = "trainings"

    def flags(self) -> dict[str, dict[str, Any]]:
        return {
            "--preset": {"default": "swda-small", "help": f"one of {', '.join(DIALOG_PRESETS.names())}"},
            "--set": {"help": "override a setting, e.g. --set epochs=5 --set 'seeds=[0, 1]' (values are YAML)"},
            "--data-dir": {"help": "folder holding swda/ (default $DCSOD_DATA_DIR, else ../shared/data)"},
            "--output": {"default": None, "help": "run directory (default runs/dialog/<preset>)"},
            "--resume": {},
            "--tracking-uri": {"help": "MLflow tracking URI (default MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                       "in the working directory)"},
            "--address": {}, "--no-dashboard": {},
        }

    def prepare(self, args: argparse.Namespace) -> Prepared:
        """The settings, the dialogs under the data directory, the output and the store checked; nothing is
        written."""
        from trainables.text.dialog_data import load_swda

        cfg = load_config(args.preset, args.sets)
        data_dir = resolve_data_dir(args.data_dir)
        output = Path(args.output or Path("runs") / "dialog" / args.preset)
        return self.prepared(cfg, {**cfg, "data_dir": str(data_dir)}, output, data_dir,
                             lambda: load_swda(data_dir, **{k: cfg[k] for k in DATA_KEYS}))

    def experiment(self, p: Prepared) -> str:
        return EXPERIMENT

    def parent_name(self, p: Prepared) -> str:
        return f"dialog ({p.cfg['preset']})"

    def run_tags(self, p: Prepared, run: RunDir) -> dict[str, str]:
        return {"preset": p.cfg["preset"], "dialog.run_dir": str(run.path)}

    def resources(self, p: Prepared) -> tuple[dict[str, float], str, dict[str, str]]:
        """One trial: ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs."""
        cfg = p.cfg
        need = {"CPU": cfg["cpus_per_trial"], **({"GPU": cfg["gpus_per_trial"]} if cfg["gpus_per_trial"] else {})}
        return need, "a configuration", {"GPU": "set gpus_per_trial=0 to train on CPUs"}

    def sweep_size(self, p: Prepared) -> int:
        """Configurations (the product of the grid axes) × seeds."""
        return configurations(p.cfg) * len(training_seeds(p.cfg))

    def recorder(self, run: RunDir, p: Prepared, experiment: str, tags: dict[str, str], progress=None):
        from pipelines.sweeps.dialog.tracking import DialogRecorder

        return DialogRecorder(run.path, experiment, p.tracking_uri, extra_tags=tags, progress=progress)

    def fit(self, run: RunDir, p: Prepared, recorder):
        return run_sweep(run, p.cfg, p.data_dir, recorder)

    def read_results(self, run: RunDir, p: Prepared) -> pd.DataFrame:
        from pipelines.sweeps.dialog.tracking import DialogResultsTable

        return DialogResultsTable(run / "results.parquet").read()

    def tune_tables(self, grid, p: Prepared):
        return tune_tables(grid)

    def stored_tables(self, run: RunDir, p: Prepared):
        return stored_tables(run)

    def write_outputs(self, done: Finished, p: Prepared) -> list[Path]:
        return write_outputs(done, p, EXPERIMENT)

    def summary(self, results: pd.DataFrame) -> str:
        return summary(results)


def main(argv: list[str] | None = None) -> int:
    """``python pipelines/dialog.py``; the exit status (module docstring)."""
    return DialogSweep().run(argv)
