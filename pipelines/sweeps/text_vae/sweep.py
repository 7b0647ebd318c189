"""Text-VAE sweep on Ray Tune: β schedules × posteriors × aggressive training × seeds for LSTM text VAEs.

``python pipelines/text_vae.py [--preset toy|ptb|yelp|ptb-paper|yelp-paper] [--set key=value ...] [--output DIR]
[--resume] [--search grid|optuna] [--data-dir DIR] [--tracking-uri URI] [--address ADDR] [--no-dashboard]``, locally or
through ``ray job submit --working-dir . -- python pipelines/text_vae.py ...``.

Stages:

1. **prepare** (the driver, before Ray starts): the preset of ``pipelines/presets/text_vae.yaml`` with the
   ``--set`` overrides (YAML values: ``--set epochs=5``, ``--set 'schedules=[constant, cyclical]'``) checked by
   :func:`validate`, the corpus loaded (ptb/yelp: ``--data-dir``, else ``$DCSOD_DATA_DIR``, else
   ``../shared/data`` next to the repository), the tracking URI and an existing run directory checked. Any
   problem is one line ``error: ...`` on stderr and exit status 2, with nothing written.
2. **sweep**: one Tune experiment in ``DIR/tune/sweep``, shown as one progress bar (configurations done, best
   test ELBO and lowest perplexity so far; one ``warning:`` line per failed configuration; Tune's status tables
   are off). ``--search grid`` (default): every configuration of ``schedules × posteriors × aggressive`` is
   trained once per entry of ``seeds`` (``[]``: once, with ``seed``), each training one trial (the VAE trains
   inside it, ``trainables.text.vae_tune``) on reused actors, ``concurrency`` at a time; a ``schedules`` entry is
   a schedule name (``constant``, ``monotonic``, ``cyclical``, ``ae``) or ``name@β_max`` (``cyclical@0.5``), so
   Table 2.1's rows are one sweep: ``--set 'schedules=[ae, monotonic@0.5, cyclical@0.5, monotonic, cyclical]'``.
   ``--search optuna``: Tune's ``OptunaSearch`` (TPE) proposes the cycle count M (``cycles``), the cyclical ratio
   R (``ratio``), ``k_max`` and ``lr`` of a cyclical-schedule, semi-implicit VAE (``aggressive`` = the first
   entry of the list, one seed) for ``optuna_trials`` trials; ASHA stops bad trials early on the per-epoch
   validation ELBO. ``workers`` > 1: each configuration trains data-parallel through Ray Train (a
   ``TorchTrainer`` of ``workers`` DDP workers inside its trial, each asking for ``cpus_per_trial`` CPUs and
   ``gpus_per_trial`` GPUs; the Ray Train runs' files go under ``DIR/train``). The driver records every finished
   trial once (:class:`pipelines.sweeps.text_vae.tracking.TextVAERecorder`): a row of ``results.parquet`` and an MLflow
   run in experiment ``text-vae-<dataset>``, nested under the run directory's parent run (every setting as a
   param, the code version as tag ``dcsod.code_version``, package versions as ``version.*`` params; found again,
   not duplicated, by a rerun; FINISHED when the sweep completes); a trial run starts and ends when its
   training did.
3. **outputs**, from Tune's own per-trial results (``ResultGrid``), all written atomically into ``--output``
   (default ``runs/text_vae/<preset>``): ``results.parquet`` (one row per training, i.e. per configuration and
   seed, or per trial for Optuna: ``schedule, posterior, aggressive, elbo, rec, kl, ppl, iw_ppl, au, mi`` on the
   test split, plus ``iw_nll, tokens_per_s, train_seconds``, ``knn_acc`` (toy), ``acc_1pct/acc_10pct/
   acc_100pct`` (yelp), ``val_elbo, epochs_run, seed, status, error, trial_id, mlflow_run_id``, ...; units in
   ``trainables.text.vae_metrics``), ``curves.parquet`` (per-epoch metrics), ``trace.parquet`` (with ``trace_every``
   > 0: KL, MI and AU of a validation subset every ``trace_every`` iterations), ``latents.parquet`` (toy: z
   samples of the test sentences), ``table.md`` (the thesis's Table 2.1/3.2 columns as mean ± sd over seeds,
   and a Welch test per thesis claim), ``beta_schedules.png``, ``learning_curves.png``,
   ``kl_mi_per_iteration.png`` (KL and MI against iteration, one line per schedule), ``active_units.png`` (AU
   per posterior and schedule), ``latent_toy.png`` (toy), ``report.md``
   (what was run, mean ± sd over seeds per configuration, which schedule kept the most KL/MI in z, posterior
   collapse, and whether the differences exceed seed noise; the plots embedded) and ``manifest.json`` (the
   settings, including ``search`` and the data directory, and the finished sweep). The command ends by naming
   every output it wrote, the MLflow experiment, parent run and tracking URI.

Resume: rerun the same command (or add ``--resume``) after a crash or ``kill -9``: the Tune experiment continues
with ``Tuner.restore`` (finished trials kept, unfinished ones rerun, Optuna's state included) and no result row
or MLflow run is written twice; once the manifest says the sweep is finished, a rerun trains nothing, adds no
MLflow run and only rewrites the outputs from the stored rows. Other settings on an existing ``--output`` are
refused (one line naming the first differing key).

Run time: configurations × seeds × epochs × updates per epoch (training sentences / batch_size) × the cost of one
update (model size: emb_dim, hidden_dim, j_samples, k_max; aggressive training adds up to aggressive_max_steps
encoder steps per update), divided by how many train at once (concurrency, bounded by the free CPUs/GPUs), plus
the test evaluation (iw_samples, eval_components) and Ray's start-up. The default toy preset (12
configurations, 100 epochs of 50 updates, 2 at a time) took 9 min 52 s on a loaded 2-core machine (measured
2026-11-29, 2 cores); the ptb preset (36 trainings of 8 epochs x 172 updates, half of them with aggressive
training) took 55 min 44 s and the yelp preset 24 min 57 s on 2 cores (2026-11-30); a rerun of a finished run takes
seconds.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import RunDir
from pipelines.common.settings import check
from pipelines.sweeps.driver import Finished, Prepared, SweepDriver
from pipelines.sweeps.settings import resolve_data_dir, training_seeds
from pipelines.sweeps.text_vae.experiment import data_options, run_sweep, worker_resources
from pipelines.sweeps.text_vae.outputs import (
    stored_frames,
    summary,
    tune_frames,
    write_report,
    write_tables_and_plots,
)
from pipelines.sweeps.text_vae.settings import TEXT_VAE_PRESETS, load_config, sweep_size

#: The --help text: this module's docstring.
HELP = __doc__


class TextVAESweep(SweepDriver):
    """The text-VAE sweep (module docstring) on the shared :class:`pipelines.sweeps.driver.SweepDriver`."""

    PROG = "python pipelines/text_vae.py"
    DOC = HELP
    KEPT = "configurations"

    def flags(self) -> dict[str, dict[str, Any]]:
        return {
            "--preset": {"default": "toy",
                         "help": f"one of {', '.join(TEXT_VAE_PRESETS.names())} (default toy: offline)"},
            "--set": {"help": "override a setting, e.g. --set epochs=5 --set 'schedules=[constant, cyclical]' "
                              "(values are YAML)"},
            "--output": {"default": None, "help": "run directory (default runs/text_vae/<preset>)"},
            "--resume": {},
            "--search": {"choices": ("grid", "optuna"), "default": "grid"},
            "--data-dir": {"help": "folder with ptb/ and yelp-sentiment/ (ptb and yelp presets)"},
            "--tracking-uri": {}, "--address": {}, "--no-dashboard": {},
        }

    def prepare(self, args: argparse.Namespace) -> Prepared:
        """The settings (``--search optuna`` trains one seed), the corpus (toy: built in; ptb, yelp: under the data
        directory), the output and the store checked; nothing is written."""
        from trainables.text.data import load_text_data

        cfg = load_config(args.preset, args.sets)
        check(args.search == "grid" or len(training_seeds(cfg)) == 1,
              f"--search optuna trains each proposal once: seeds takes at most one entry, got {cfg['seeds']}")
        data_dir = resolve_data_dir(args.data_dir) if cfg["dataset"] != "toy" else None
        output = Path(args.output or Path("runs") / "text_vae" / args.preset)
        settings = {**cfg, "search": args.search, "data_dir": str(data_dir) if data_dir else None}
        return self.prepared(cfg, settings, output, data_dir,
                             lambda: load_text_data(cfg["dataset"], data_dir, **data_options(cfg)))

    def experiment(self, p: Prepared) -> str:
        return f"text-vae-{p.cfg['dataset']}"

    def parent_name(self, p: Prepared) -> str:
        return f"text-vae ({p.cfg['preset']}, {p.settings['search']})"

    def run_tags(self, p: Prepared, run: RunDir) -> dict[str, str]:
        return {"preset": p.cfg["preset"], "search": self.args.search, "text_vae.run_dir": str(run.path)}

    def resources(self, p: Prepared) -> tuple[dict[str, float], str, dict[str, str]]:
        """``workers`` training processes per configuration, each with ``cpus_per_trial`` / ``gpus_per_trial``."""
        workers = p.cfg["workers"]
        return ({k: v * workers for k, v in worker_resources(p.cfg).items()}, f"a configuration (workers={workers})",
                {"CPU": "lower workers or cpus_per_trial", "GPU": "lower workers or gpus_per_trial (0: train on CPUs)"})

    def sweep_size(self, p: Prepared) -> int:
        return sweep_size(p.cfg, self.args.search)

    def recorder(self, run: RunDir, p: Prepared, experiment: str, tags: dict[str, str], progress=None):
        from pipelines.sweeps.text_vae.tracking import TextVAERecorder

        return TextVAERecorder(run.path, experiment, self.args.search, p.tracking_uri, extra_tags=tags,
                               progress=progress)

    def fit(self, run: RunDir, p: Prepared, recorder):
        return run_sweep(run, p.cfg, self.args.search, p.data_dir, recorder)

    def read_results(self, run: RunDir, p: Prepared) -> pd.DataFrame:
        from pipelines.sweeps.text_vae.tracking import ResultsTable

        return ResultsTable(run / "results.parquet", self.args.search).read()

    def tune_tables(self, grid, p: Prepared):
        return tune_frames(grid, self.args.search, with_seed=len(training_seeds(p.cfg)) > 1)

    def stored_tables(self, run: RunDir, p: Prepared):
        return stored_frames(run, self.args.search, with_seed=len(training_seeds(p.cfg)) > 1)

    def write_outputs(self, done: Finished, p: Prepared) -> list[Path]:
        """The frames as parquet, table.md, the plots and report.md."""
        tables, plots = write_tables_and_plots(done.run, p.cfg, self.args.search, done.tables, done.results,
                                               p.train_size)
        return [*tables, *plots, write_report(done, p, plots, self.experiment(p))]

    def summary(self, results: pd.DataFrame) -> str:
        return summary(results)

    def manifest_counts(self, results: pd.DataFrame) -> dict[str, int]:
        """Trainings ASHA stopped early."""
        return {"stopped": int((results["status"] == "stopped").sum())}


def main(argv: list[str] | None = None) -> int:
    """``python pipelines/text_vae.py``; the exit status (module docstring)."""
    return TextVAESweep().run(argv)
