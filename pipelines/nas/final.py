"""The final stage: retrain the champion architecture through Ray Train and evaluate it on the test split.

``TorchTrainer`` runs :func:`final_loop` on ``final.workers`` workers (1 by default; more = DDP, gradient
all-reduce through ``ray.train.torch.prepare_model``). Rank 0 reports the weights and what packaging needs
(:func:`model_info`: normalisation, class names, input shape, a few example images) as a checkpoint, so the
driver never loads the data set itself. Every worker also reports each epoch (``train_loss``, ``lr``, ... of
:meth:`trainables.image.train.CandidateTraining.train`), which the Ray dashboard shows while the retrain runs. The
driver keeps the outcome in ``<run dir>/final/`` (``result.json`` with the per-epoch ``epoch_curve``, ``weights.pt``,
``model_info.pt``, written atomically) so a rerun after a crash does not train again, writes the curve as TensorBoard
events (``<run dir>/tune/final/tensorboard``), then records it like any candidate (one MLflow run with the curve as
per-epoch metrics, one history row with stage ``final``) with the packaged model logged into that run.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from pipelines.common.rundir import RunDir, atomic_write, read_json, write_json
from trainables.image.tune_trainable import (
    TeacherBundle,
    device_data,
    lineage_of,
    load_weights,
    stage_train_config,
)

MODEL_INFO_FILE = "model_info.pt"


def model_info(protocol, n_examples: int = 4) -> dict:
    """What :func:`package` needs from a protocol: ``mean``/``std`` (C,) float in [0, 1] units, ``class_names``,
    ``num_classes``, ``in_channels`` and ``examples`` (up to ``n_examples`` ID test images, uint8 NCHW); and
    ``summary`` (:meth:`trainables.image.data.Protocol.summary`: classes per role, images per part), which report.md
    reads instead of loading the data set in the driver."""
    mean, std = protocol.mean_std()
    return {"mean": mean, "std": std, "class_names": [str(c) for c in protocol.info.get("id_classes", [])],
            "num_classes": protocol.num_classes, "in_channels": protocol.in_channels,
            "examples": protocol.id_test[0][:n_examples].clone(), "summary": protocol.summary()}


def final_loop(config: dict) -> None:
    """Ray Train worker loop: ``config`` holds ``genotype``, ``protocol``, ``protocol_options``, ``train``
    (TrainConfig fields), ``seed`` and ``teachers`` (a TeacherBundle or None)."""
    import ray.train
    import ray.train.torch

    from trainables.image import train_candidate

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    data, _ = device_data(config["protocol"], config["protocol_options"], device)
    train = stage_train_config(config, data, device)
    bundle: TeacherBundle | None = config.get("teachers")
    models = bundle.teachers_for(data, train) if bundle else None
    distributed = (rank, world, ray.train.torch.prepare_model) if world > 1 else None
    # every rank reports every epoch (Ray Train expects the same number of reports from each worker)
    result = train_candidate(config["genotype"], data, train, teachers=models, distributed=distributed,
                             on_epoch=lambda entry: ray.train.report({**entry, "world_size": world}))
    state_dict, curve = result.pop("state_dict"), result.pop("curve")
    metrics = {**result, "epoch_curve": json.dumps(curve, allow_nan=True), "seed": train.seed, "world_size": world,
               "lineage": lineage_of(config["protocol"], data, train, bundle)}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state_dict, os.path.join(tmp, "weights.pt"))
        torch.save(model_info(data.protocol), os.path.join(tmp, MODEL_INFO_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def retrain(run: RunDir, cfg: dict, genotype: str, train: dict, teachers: TeacherBundle | None,
            name: str = "final") -> tuple[dict, dict]:
    """Train ``genotype`` with ``train`` settings via ``TorchTrainer`` unless ``run/<name>`` already holds the
    outcome; return ``(metrics, state_dict)``."""
    out = run.path / name
    if (out / "result.json").exists() and (out / "weights.pt").exists():
        return read_json(out / "result.json"), torch.load(out / "weights.pt", map_location="cpu", weights_only=True)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.common.ray_session import error_line
    from pipelines.nas.tune_stage import StageInterrupted

    use_gpu = cfg["resources"]["gpu"] > 0
    per_worker = {"CPU": cfg["resources"]["cpu"], **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        final_loop,
        train_loop_config={"genotype": genotype, "protocol": cfg["protocol"],
                           "protocol_options": cfg["protocol_options"], "train": train, "seed": cfg["seed"],
                           "teachers": teachers},
        scaling_config=ScalingConfig(num_workers=cfg["final"]["workers"], use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        # a lost worker (node gone, OOM-killed) restarts the retrain on the workers left, up to max_failures times
        run_config=RunConfig(name=name, storage_path=str(run.path / "tune"),
                             failure_config=FailureConfig(max_failures=cfg.get("max_failures", 0))),
    )
    try:
        result = trainer.fit()
        error = result.error
    except Exception as err:  # Ray Train raises (rather than returns) the error once retries are spent
        error = err
    if error is not None:
        raise StageInterrupted(f"retrain {name}: Ray Train stopped: {error_line(error)}; finished stages are kept, "
                               "rerun the same command to resume")
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, type(None)))}
    state_dict = load_weights(result.checkpoint)
    with result.checkpoint.as_directory() as path:
        info = torch.load(os.path.join(path, MODEL_INFO_FILE), map_location="cpu", weights_only=True)
    atomic_write(out / "weights.pt", lambda tmp: torch.save(state_dict, tmp))
    atomic_write(out / MODEL_INFO_FILE, lambda tmp: torch.save(info, tmp))
    write_curve_events(json.loads(metrics.get("epoch_curve") or "[]"), run.path / "tune" / name / "tensorboard")
    write_json(out / "result.json", metrics)
    return metrics, state_dict


def write_curve_events(curve: list[dict], directory: Path) -> None:
    """TensorBoard scalars (step = epoch) of a per-epoch curve, in a fresh events file under ``directory``
    (any earlier one there is replaced, so a rerun does not double the curve)."""
    from tensorboardX import SummaryWriter

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("events.out.tfevents*"):
        old.unlink()
    with SummaryWriter(str(directory)) as writer:
        for entry in curve:
            for key, value in entry.items():
                if key not in ("epoch", "epochs") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"final/{key}", value, entry["epoch"])


def load_model_info(run: RunDir, cfg: dict, name: str = "final") -> dict:
    """:func:`model_info` of the retrain ``name`` as its worker saved it; for a run directory written before
    workers saved it, computed from the protocol (which loads the data set in the driver)."""
    path = run.path / name / MODEL_INFO_FILE
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    from trainables.image import make_protocol

    return model_info(make_protocol(cfg["protocol"], **cfg["protocol_options"]))


def package(genotype: str, state_dict: dict, info: dict, train: dict):
    """The retrained network as a :class:`trainables.image.export.ScoredClassifier` (CPU, eval mode); ``info`` from
    :func:`load_model_info`."""
    from pipelines.nas.settings import train_config_of
    from search_space import build_model
    from trainables.image.export import ScoredClassifier

    width = train_config_of(train).width
    net = build_model(genotype, info["num_classes"], info["in_channels"], width)
    net.load_state_dict(state_dict)
    return ScoredClassifier(net, info["mean"], info["std"], class_names=info["class_names"])


def example_images(info: dict) -> torch.Tensor:
    """The example test images of :func:`model_info` as float in [0, 1] (the model's documented input)."""
    return info["examples"].float() / 255.0


def source_dirs() -> list[str]:
    """The packages a logged model needs to unpickle (shipped with it as MLflow ``code_paths``)."""
    root = Path(__file__).resolve().parents[2]
    return [str(root / "search_space"), str(root / "trainables")]
