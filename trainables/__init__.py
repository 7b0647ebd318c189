"""How one candidate is trained and scored, plain PyTorch and callable without Ray (except the Tune adapters).

Two rooms that import nothing from each other: ``trainables.image`` (DCSOD's image candidates: protocols,
objectives, OOD scores, the training loop, export, the Tune adapter) and ``trainables.text`` (text VAEs and the
dialog CVAE). At the root only what both use: ``errors`` (``DivergedError``) and ``overrides`` (the
``--set key=value`` parser). ``python -m trainables train`` trains one image candidate.

Modules that lived at the root before the re-lay of 2026-12 stay importable under their old names (pickles and
MLflow models written before it name them), by :func:`search_space.moved_modules.keep_old_names`.
"""
from search_space.moved_modules import keep_old_names

MOVED = {
    "augment": "image.augment", "data": "image.data", "image_folder": "image.image_folder",
    "losses": "image.losses", "ood": "image.ood", "train": "image.train", "cuda_graph": "image.cuda_graph",
    "export": "image.export", "loss_landscape": "image.loss_landscape", "tune_trainable": "image.tune_trainable",
    "train_cli": "image.train_cli", "vocab": "text.vocab", "text_data": "text.data",
    "dialog_data": "text.dialog_data", "beta_schedules": "text.beta_schedules", "posteriors": "text.posteriors",
    "vae_training": "text.vae_training", "vae_metrics": "text.vae_metrics", "text_vae_model": "text.vae_model",
    "text_vae_tune": "text.vae_tune", "dialog_model": "text.dialog_model", "dialog_metrics": "text.dialog_metrics",
    "dialog_tune": "text.dialog_tune",
}
keep_old_names(__name__, MOVED)
