"""Ray Tune adapter for the text VAE: one configuration (schedule × posterior × aggressive, or one Optuna
suggestion) per trial, trained in the trial's process (reused actors) or, with ``workers`` > 1, data-parallel
on a Ray Train ``TorchTrainer`` started inside the trial.

``text_vae_trainable(config)`` is a Tune function trainable. ``config`` keys: ``dataset``, ``data_dir``,
``data`` (loader options), ``model`` (:class:`VAEModelConfig` fields), ``train`` (:class:`VAETrainConfig` fields),
``threads`` (torch CPU threads per process), ``device`` (``cpu`` or ``cuda``; default cpu), ``downstream`` (the
label probe of a labelled corpus: ``logistic``, logistic regression on the frozen posterior means, or
``finetune``, a linear layer fine-tuned with the encoder for ``finetune_steps`` updates, default 300
(``trainables.text.vae_metrics``); ``True`` = ``logistic``; absent or false: none), ``workers`` (default 1),
and for ``workers`` > 1 ``worker_resources`` (Ray resources of each Train worker, e.g. ``{"CPU": 1, "GPU":
0.5}``) and ``train_storage`` (folder of the Ray Train runs). The corpus is loaded once per process (cache keyed
by dataset, directory and options), so reused actors skip it.

Reports: one result per epoch (``epoch``, ``beta``, ``k``, ``val_elbo``, ... see ``train_vae``); the last
epoch's result also carries the test metrics ``elbo, rec, kl, ppl, iw_nll, iw_ppl, au, mi, mi_upper``, the
``tokens_per_s`` of training, ``train_seconds``, ``knn_acc`` (leave-one-out 1-NN accuracy of z samples →
label, when the corpus is labelled and ``latent_samples`` > 0), ``latent``/``latent_labels`` (those samples,
at most :data:`MAX_LATENT_POINTS`), ``acc_<p>pct`` (downstream), ``trace`` (with ``train.trace_every`` > 0:
one list per trace point, values in the order of ``trainables.text.vae_model.TRACE_KEYS``) and ``final: True``.
A diverged run reports ``error`` instead of raising, so Tune does not retry it.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from trainables.errors import DivergedError
from trainables.text.data import TextData, load_text_data
from trainables.text.vae_metrics import downstream_accuracy, evaluate_vae, finetune_accuracy, knn_accuracy
from trainables.text.vae_model import TRACE_KEYS, VAEModelConfig, VAETrainConfig, train_vae

_DATA: dict[str, TextData] = {}
MAX_LATENT_POINTS = 2000
TEST_METRICS = ("elbo", "rec", "kl", "ppl", "iw_nll", "iw_ppl", "au", "mi", "mi_upper")


def cached_data(dataset: str, data_dir: str | None, options: dict) -> tuple[TextData, float]:
    """(corpus, seconds spent loading it; 0 when it came from this process's cache)."""
    key = json.dumps([dataset, data_dir, options], sort_keys=True)
    if key in _DATA:
        return _DATA[key], 0.0
    start = time.perf_counter()
    _DATA.clear()
    _DATA[key] = load_text_data(dataset, data_dir, **options)
    return _DATA[key], time.perf_counter() - start


def run_configuration(config: dict[str, Any], report, distributed=None) -> dict[str, Any]:
    """Train and evaluate one configuration; ``report(dict)`` is called per epoch except the last, whose
    metrics are returned merged with the final ones (so a scheduler stopping at max epochs sees them).
    ``distributed``: ``(rank, world_size, wrap)`` as in :func:`~trainables.text.vae_model.train_vae`; every rank
    reports the same per-epoch rows, only rank 0's return value carries test metrics."""
    torch.set_num_threads(int(config.get("threads", 1)))
    data, data_seconds = cached_data(config["dataset"], config.get("data_dir"), config.get("data", {}))
    model_cfg, train_cfg = VAEModelConfig(**config["model"]), VAETrainConfig(**config["train"])
    device = config.get("device", "cpu")
    start = time.perf_counter()

    def on_epoch(row: dict) -> None:
        if row["epoch"] < train_cfg.epochs:
            report(dict(row))

    try:
        result = train_vae(data, model_cfg, train_cfg, device=device, on_epoch=on_epoch, distributed=distributed)
    except DivergedError as e:
        return {"error": str(e), "final": True}
    world = distributed[1] if distributed else 1
    out: dict[str, Any] = {**result.history[-1], "tokens_per_s": result.tokens_per_second,
                           "train_seconds": result.train_seconds, "data_seconds": data_seconds,
                           "workers": world, "final": True}
    test = result.test
    if not test:  # a rank other than 0 of a distributed run
        return out
    out.update({m: float(test[m]) for m in TEST_METRICS})
    if result.trace:
        out["trace"] = [list(point) for point in zip(*(result.trace[k] for k in TRACE_KEYS))]
    if "samples" in test and (test["labels"] >= 0).all():
        n, s, d = test["samples"].shape
        keep = max(1, min(s, MAX_LATENT_POINTS // max(n, 1)))
        z = test["samples"][:, :keep].reshape(-1, d)
        labels = np.repeat(test["labels"], keep)
        out["knn_acc"] = knn_accuracy(z, labels)
        out["latent"], out["latent_labels"] = z.tolist(), labels.tolist()
    if config.get("downstream"):
        probe = "logistic" if config["downstream"] is True else config["downstream"]
        out.update(label_accuracies(result.model, data, test, probe, train_cfg, int(config.get("finetune_steps", 300)),
                                    device))
    out["trainable_seconds"] = time.perf_counter() - start
    return out


def label_accuracies(model, data: TextData, test: dict[str, Any], probe: str, train_cfg: VAETrainConfig,
                     finetune_steps: int, device: str) -> dict[str, float]:
    """``acc_<p>pct`` of the label probe ``probe`` (``logistic`` | ``finetune``) on the trained ``model``; ``test``:
    its test metrics (the posterior means the logistic probe scores)."""
    if probe == "finetune":
        return finetune_accuracy(model, data.train, data.val, data.test, data.vocab, steps=finetune_steps,
                                 lr=train_cfg.lr, batch_size=train_cfg.batch_size,
                                 n_components=train_cfg.eval_components, seed=train_cfg.seed, device=device)
    if probe != "logistic":
        raise ValueError(f"downstream: expected logistic or finetune, got {probe!r}")
    train_z = evaluate_vae(model, data.train, data.vocab, iw_samples=0, mi_rows=1, batch_size=train_cfg.eval_batch_size,
                           n_components=train_cfg.eval_components, seed=train_cfg.seed, device=device)["means"]
    return downstream_accuracy(train_z, data.train.labels, test["means"], test["labels"], seed=train_cfg.seed)


def text_vae_train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: one configuration, data-parallel over the run's workers (DDP through
    ``ray.train.torch.prepare_model``). Every worker reports every epoch (Ray Train's report is a barrier);
    Tune sees rank 0's results through ``TuneReportCallback``."""
    import ray.train
    import ray.train.torch

    _quiet_train_reports()
    ctx = ray.train.get_context()
    if config.get("device", "cpu") != "cpu":
        config = {**config, "device": str(ray.train.torch.get_device())}
    distributed = (ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.prepare_model)
    ray.train.report(run_configuration(config, ray.train.report, distributed))


def _quiet_train_reports() -> None:
    """Ray Train logs every report's full metrics at INFO on each worker (here: hundreds of latent points per
    final report); keep its warnings only. The logger is internal, so a missing one is fine."""
    import logging

    try:
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


def train_with_ray_train(config: dict[str, Any], workers: int) -> None:
    """Run :func:`text_vae_train_loop` on a ``TorchTrainer`` of ``workers`` workers from inside a Tune trial,
    forwarding the workers' reports to the trial. ``config["worker_resources"]`` (e.g. ``{"CPU": 1}``) is
    each worker's request and ``config["train_storage"]`` the folder of the Ray Train run."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = dict(config.get("worker_resources") or {"CPU": 1})
    trainer = TorchTrainer(
        text_vae_train_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=resources.get("GPU", 0) > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"text_vae_{tune.get_context().get_trial_id()}", storage_path=config["train_storage"],
                             callbacks=[TuneReportCallback()]))
    trainer.fit()


def text_vae_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable (see module docstring): trains in this process, or through Ray Train when
    ``config["workers"]`` > 1."""
    from ray import tune

    workers = int(config.get("workers", 1))
    if workers > 1:
        train_with_ray_train(config, workers)
    else:
        tune.report(run_configuration(config, tune.report))
