"""Ray Tune adapter for the text VAE: one configuration (schedule × posterior × aggressive, or one Optuna
suggestion) per trial, on reused trainable actors.

``text_vae_trainable(config)`` is a Tune function trainable. ``config`` keys: ``dataset``, ``data_dir``,
``data`` (loader options), ``model`` (:class:`ModelConfig` fields), ``train`` (:class:`TrainConfig` fields),
``threads`` (torch CPU threads), ``device`` (``cpu`` or ``cuda``; default cpu), ``downstream`` (fit the label
classifiers on z). The corpus is loaded once
per worker process (cache keyed by dataset, directory and options), so reused actors skip it.

Reports: one result per epoch (``epoch``, ``beta``, ``k``, ``val_elbo``, ... see ``train_vae``); the last
epoch's result also carries the test metrics ``elbo, rec, kl, ppl, iw_nll, iw_ppl, au, mi``, the
``tokens_per_s`` of training, ``train_seconds``, ``knn_acc`` (leave-one-out 1-NN accuracy of z samples →
label, when the corpus is labelled and ``latent_samples`` > 0), ``latent``/``latent_labels`` (those samples,
at most :data:`MAX_LATENT_POINTS`), ``acc_<p>pct`` (downstream) and ``final: True``. A diverged run reports
``error`` instead of raising, so Tune does not retry it.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from .text_data import TextData, load_text_data
from .text_vae import DivergedError, ModelConfig, TrainConfig, train_vae
from .vae_metrics import downstream_accuracy, evaluate_vae, knn_accuracy

_DATA: dict[str, TextData] = {}
MAX_LATENT_POINTS = 2000
TEST_METRICS = ("elbo", "rec", "kl", "ppl", "iw_nll", "iw_ppl", "au", "mi")


def cached_data(dataset: str, data_dir: str | None, options: dict) -> tuple[TextData, float]:
    """(corpus, seconds spent loading it; 0 when it came from this process's cache)."""
    key = json.dumps([dataset, data_dir, options], sort_keys=True)
    if key in _DATA:
        return _DATA[key], 0.0
    start = time.perf_counter()
    _DATA.clear()
    _DATA[key] = load_text_data(dataset, data_dir, **options)
    return _DATA[key], time.perf_counter() - start


def run_configuration(config: dict[str, Any], report) -> dict[str, Any]:
    """Train and evaluate one configuration; ``report(dict)`` is called per epoch except the last, whose
    metrics are returned merged with the final ones (so a scheduler stopping at max epochs sees them)."""
    torch.set_num_threads(int(config.get("threads", 1)))
    data, data_seconds = cached_data(config["dataset"], config.get("data_dir"), config.get("data", {}))
    model_cfg, train_cfg = ModelConfig(**config["model"]), TrainConfig(**config["train"])
    device = config.get("device", "cpu")
    start = time.perf_counter()

    def on_epoch(row: dict) -> None:
        if row["epoch"] < train_cfg.epochs:
            report(dict(row))

    try:
        result = train_vae(data, model_cfg, train_cfg, device=device, on_epoch=on_epoch)
    except DivergedError as e:
        return {"error": str(e), "final": True}
    test = result.test
    out: dict[str, Any] = {**result.history[-1], **{m: float(test[m]) for m in TEST_METRICS},
                           "tokens_per_s": result.tokens_per_second, "train_seconds": result.train_seconds,
                           "data_seconds": data_seconds, "final": True}
    if "samples" in test and (test["labels"] >= 0).all():
        n, s, d = test["samples"].shape
        keep = max(1, min(s, MAX_LATENT_POINTS // max(n, 1)))
        z = test["samples"][:, :keep].reshape(-1, d)
        labels = np.repeat(test["labels"], keep)
        out["knn_acc"] = knn_accuracy(z, labels)
        out["latent"], out["latent_labels"] = z.tolist(), labels.tolist()
    if config.get("downstream"):
        train_z = evaluate_vae(result.model, data.train, data.vocab, iw_samples=0, mi_rows=1,
                               batch_size=train_cfg.eval_batch_size, n_components=train_cfg.eval_components,
                               seed=train_cfg.seed, device=device)["means"]
        out.update(downstream_accuracy(train_z, data.train.labels, test["means"], test["labels"],
                                       seed=train_cfg.seed))
    out["trainable_seconds"] = time.perf_counter() - start
    return out


def text_vae_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable (see module docstring)."""
    from ray import tune

    tune.report(run_configuration(config, tune.report))
