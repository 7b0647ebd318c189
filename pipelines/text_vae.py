"""Text-VAE sweep (β schedules × posteriors × aggressive training, Ray Tune grid or Optuna TPE + ASHA, MLflow):
``python pipelines/text_vae.py --help``.

A front door: the sweep itself lives in ``pipelines/sweeps/text_vae/`` (the command and its ``--help`` in
``sweep.py``, the settings in ``settings.py``, the Tune experiment in ``experiment.py``, the outputs in
``outputs.py``, the results rows and MLflow runs in ``tracking.py``, plots and report beside them) over the
shared sweep driver ``pipelines/sweeps/driver.py``.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.sweeps.text_vae.sweep import main

if __name__ == "__main__":
    sys.exit(main())
