"""The algorithms composed on Ray. Five front doors, each a command:

- ``dcsod.py`` — the DCSOD search job (rooms: ``nas``, over ``common``);
- ``experiments.py`` — the thesis's tables and figures (room: ``thesis``);
- ``text_vae.py`` — the text-VAE sweep (room: ``sweeps.text_vae``);
- ``dialog.py`` — the dialog-CVAE sweep (room: ``sweeps.dialog``);
- ``score.py`` — a registered model scored on a user's own image folders.

``common`` is the infrastructure every pipeline shares (presets, run directory, journal, MLflow runs, Ray
session); ``sweeps`` holds the sweep driver that the text-VAE and dialog sweeps build on. Modules that lived
at the root before the re-lay of 2026-12 stay importable under their old names (Ray Tune's pickled state and
``python -m pipelines.model_registry`` name them), by :func:`search_space.moved_modules.keep_old_names`.
"""
from search_space.moved_modules import keep_old_names

MOVED = {
    "settings": "common.settings", "rundir": "common.rundir", "journal": "common.journal",
    "mlflow_runs": "common.mlflow_runs", "ray_session": "common.ray_session", "workflow": "nas.workflow",
    "tune_stage": "nas.tune_stage", "teachers": "nas.teachers", "final": "nas.final", "report": "nas.report",
    "report_text": "nas.report_text", "model_registry": "nas.model_registry", "dcsod_settings": "nas.settings",
    "dcsod_tracking": "nas.tracking", "experiment_methods": "thesis.methods",
    "experiment_settings": "thesis.settings", "experiment_tables": "thesis.tables",
    "noise_study": "thesis.noise_study", "dcsod_variants": "thesis.variants",
    "champion_figures": "thesis.champion_figures", "sweep_tracking": "sweeps.tracking",
    "text_vae_tracking": "sweeps.text_vae.tracking", "text_vae_plots": "sweeps.text_vae.plots",
    "text_vae_report": "sweeps.text_vae.report", "text_vae_table": "sweeps.text_vae.table",
    "dialog_tracking": "sweeps.dialog.tracking", "dialog_plots": "sweeps.dialog.plots",
    "dialog_report": "sweeps.dialog.report",
}
keep_old_names(__name__, MOVED)
