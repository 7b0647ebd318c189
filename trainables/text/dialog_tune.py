"""Ray Tune adapter for the dialog CVAE: one configuration (schedule × posterior × bow × seed) per trial, trained in
the trial's process (reused actors). :func:`run_configuration` is Ray-free; :func:`dialog_trainable` is the thin
Tune function trainable around it.

``config`` keys: ``data_dir``, ``data`` (``trainables.text.dialog_data.load_swda`` options), ``model``
(:class:`DialogModelConfig` fields), ``train`` (:class:`DialogTrainConfig` fields), ``vector_dim`` (size of the
evaluation word vectors), ``threads`` (torch CPU threads), ``device`` (``cpu`` or ``cuda``). The corpus and its
word vectors are built once per process (cache keyed by directory and options), so reused actors skip them.

Reports: one result per epoch but the last (see ``train_dialog``); the last carries the test metrics
:data:`TEST_METRICS`, ``examples`` (JSON text: a few contexts with their reference and generated responses),
``train_seconds``, ``data_seconds`` and ``final: True``. A diverged run reports ``error`` instead of raising, so
Tune does not retry it.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from trainables.errors import DivergedError
from trainables.text.dialog_data import DialogData, load_swda
from trainables.text.dialog_metrics import EMBEDDING_SCORES, word_vectors
from trainables.text.dialog_model import DialogModelConfig, DialogTrainConfig, train_dialog

#: The test metrics a final result carries (definitions and units: ``trainables.text.dialog_metrics``; rec and KL in
#: nats per response, response_len in words, the BOW cosines in [−1, 1], the rest in [0, 1]).
TEST_METRICS = ("rec", "kl", "elbo", "rec_ppl", "ppl", "mi",
                *(f"bleu{n}_{s}" for n in range(1, 5) for s in ("p", "r", "f1")),
                *(f"{key}_{s}" for key in EMBEDDING_SCORES for s in "pr"),
                "intra_dist1", "intra_dist2", "inter_dist1", "inter_dist2", "response_len", "act_acc")
_CACHE: dict[str, tuple[DialogData, np.ndarray]] = {}


def cached_data(data_dir: str, options: dict, vector_dim: int) -> tuple[DialogData, np.ndarray, float]:
    """(corpus, word vectors [V, d] from its training utterances, seconds spent; 0 when cached here)."""
    key = json.dumps([data_dir, options, vector_dim], sort_keys=True)
    if key in _CACHE:
        return (*_CACHE[key], 0.0)
    start = time.perf_counter()
    _CACHE.clear()
    data = load_swda(data_dir, **options)
    _CACHE[key] = data, word_vectors(data.train.utts, len(data.vocab), vector_dim, seed=options.get("seed", 0))
    return (*_CACHE[key], time.perf_counter() - start)


def run_configuration(config: dict[str, Any], report) -> dict[str, Any]:
    """Train and evaluate one configuration; ``report(dict)`` is called per epoch except the last, whose row is
    returned merged with the test metrics."""
    torch.set_num_threads(int(config.get("threads", 1)))
    data, vectors, data_seconds = cached_data(config["data_dir"], config.get("data", {}), config.get("vector_dim", 100))
    model_cfg, train_cfg = DialogModelConfig(**config["model"]), DialogTrainConfig(**config["train"])

    def on_epoch(row: dict) -> None:
        if row["epoch"] < train_cfg.epochs:
            report(dict(row))

    try:
        result = train_dialog(data, model_cfg, train_cfg, vectors=vectors, device=config.get("device", "cpu"),
                              on_epoch=on_epoch)
    except DivergedError as e:
        return {"error": str(e), "final": True}
    test = result.test
    return {**result.history[-1], **{m: float(test[m]) for m in TEST_METRICS if m in test},
            "examples": json.dumps(test.get("examples", [])), "train_seconds": result.train_seconds,
            "data_seconds": data_seconds, "final": True}


def dialog_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable (module docstring)."""
    from ray import tune

    tune.report(run_configuration(config, tune.report))
