"""Ray Tune adapter: one candidate evaluation per trial, on reused trainable actors.

``candidate_trainable(config)`` is a Tune function trainable. With ``TuneConfig(reuse_actors=True)`` the
worker process survives across trials, so the protocol's tensors are loaded and moved to the device once per
worker (a per-process cache keyed by protocol, options and device), not once per candidate. A teacher
ensemble is handed over with ``tune.with_parameters(candidate_trainable, teachers=bundle)``, which puts it
into the Ray object store once for all trials; so are the weights a fine-tune starts from
(``initial=InitialWeights(...)``, keyed by architecture hash and seed: each trial loads its own).

``config`` keys: ``genotype`` (the architecture's JSON: a genotype, or a standard model ``{"model": ..., "args":
...}``; see :mod:`search_space.architecture`), ``protocol`` (name), ``protocol_options`` (dict), ``train`` (dict of
:class:`trainables.image.TrainConfig` fields), ``seed``, ``stage``, ``iteration``, ``checkpoint`` (bool: also report the
trained weights as a Tune checkpoint holding ``weights.pt``, a CPU state dict; the pipeline loads teachers from
them), ``metric`` (optional: the stage's ranking metric, present in every per-epoch report — NaN in an epoch without
evaluation — because Tune checks that a searcher's metric is in every result). The result holds the metrics of
:func:`trainables.image.train_candidate` (without weights) plus ``arch_hash``, ``genotype``, ``seed``, ``stage``,
``iteration``, ``data_seconds`` (protocol load on a cold worker, 0 when cached), ``trainable_seconds`` (wall time
inside the trainable), ``started_at``/``finished_at`` (Unix seconds), ``worker_pid`` (to measure the gaps between
consecutive trials of one reused worker) and ``epoch_curve`` (the per-epoch entries
of :meth:`trainables.image.train.CandidateTraining.train` as a JSON string). A diverged run is reported, not raised,
so Tune does not retry it: its metrics are NaN and ``error`` holds the reason.

Every epoch but the last is reported too (``tune.report`` without a checkpoint: ``epoch``, ``epochs``,
``train_loss``, ``lr``, ``epoch_seconds``, the identity keys and, every ``train.eval_every`` epochs, the metrics),
so TensorBoard shows learning curves and a Tune scheduler (ASHA) may stop a hopeless candidate early; a trial so
stopped ends with such a report as its last result (``epoch < epochs``) and no checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainables.errors import DivergedError
from trainables.image.data import make_protocol
from trainables.image.losses import make_objective
from trainables.image.train import DeviceData, TeacherCache, TrainConfig, resolve_device, train_candidate

WEIGHTS_FILE = "weights.pt"
_DATA: dict[str, DeviceData] = {}
_TEACHERS: dict[tuple, Any] = {}


@dataclass
class TeacherBundle:
    """A teacher ensemble as plain data (architecture JSONs + CPU state dicts), cheap to put in the object store.
    ``token`` is drawn once where the bundle is made and survives pickling: workers key their built models on it.

    Pickled, the weights travel as numpy arrays: Ray hands those out of its object store without a copy, so
    the ``ray.get`` that ``tune.with_parameters`` makes at every trial start no longer deserialises the whole
    ensemble (11 width-32 teachers: 0.97 s → 0.04 s between trials, ``benchmarks/ray_overhead.py``). The
    tensors are rebuilt once per process, in :meth:`build`."""

    genotypes: list[str]
    state_dicts: list[dict]
    width: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Each teacher's :class:`trainables.image.lineage.Lineage` string ("" or None: not recorded = unknown).
    lineages: list[str] | None = None

    def teacher_lineages(self) -> list[str]:
        """One lineage string per teacher (``""`` where unknown, also for a bundle pickled before the field)."""
        known = getattr(self, "lineages", None) or []
        return [*known, *[""] * (len(self.genotypes) - len(known))]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "state_dicts": [{k: _to_numpy(v) for k, v in sd.items()} for sd in self.state_dicts]}

    def weights(self, i: int) -> dict[str, torch.Tensor]:
        """Teacher ``i``'s state dict as (writable, CPU) tensors."""
        return _to_tensors(self.state_dicts[i])

    def build(self, num_classes: int, in_channels: int, device: torch.device) -> list[torch.nn.Module]:
        """The teacher modules on ``device``, in eval mode; built once per process and bundle (the last one
        is kept), so trials on a reused actor do not rebuild them."""
        key = (self.token, num_classes, in_channels, str(device))
        if key not in _TEACHERS:
            _TEACHERS.clear()  # one bundle per process at a time (modules and caches)
            _TEACHERS[key] = self._build(num_classes, in_channels, device)
        return _TEACHERS[key]

    def teachers_for(self, data: DeviceData, train: TrainConfig) -> list[torch.nn.Module] | TeacherCache:
        """What ``train_candidate`` gets as ``teachers``: the modules (online path), or for
        ``teacher_mode="cached"`` their :class:`TeacherCache`, computed once per process, bundle, data,
        temperature and training set (``train_on_val``; every candidate of an iteration shares it)."""
        models = self.build(data.protocol.num_classes, data.protocol.in_channels, data.device)
        if train.teacher_mode != "cached":
            return models
        temperature = make_objective(train.objective, **train.objective_args).temperature
        key = ("cache", self.token, id(data), temperature, train.train_on_val)
        if key not in _TEACHERS:
            for k in [k for k in _TEACHERS if k[0] == "cache"]:  # keep the modules, drop older caches
                del _TEACHERS[k]
            _TEACHERS[key] = TeacherCache.compute(models, data, temperature, with_val=train.train_on_val)
        return _TEACHERS[key]

    def _build(self, num_classes: int, in_channels: int, device: torch.device) -> list[torch.nn.Module]:
        from search_space import build_model

        models = []
        for i, g in enumerate(self.genotypes):
            model = build_model(g, num_classes, in_channels, self.width)
            model.load_state_dict(self.weights(i))
            models.append(model.to(device).eval())
        return models


@dataclass
class InitialWeights:
    """The weights fine-tunes start from, as plain data: one CPU state dict per (architecture hash, seed) of the
    trainings they come from, keyed ``"<arch_hash>:<seed>"`` (:meth:`key`), with each one's lineage string
    (:class:`trainables.image.lineage.Lineage`; ``""``: not recorded). Pickled, the weights travel as numpy
    arrays, like :class:`TeacherBundle`'s, so one object-store copy serves every trial without a deserialisation
    per trial start."""

    state_dicts: dict[str, dict]
    lineages: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def key(arch_hash: str, seed: int) -> str:
        return f"{arch_hash}:{int(seed)}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "state_dicts": {key: {k: _to_numpy(v) for k, v in sd.items()}
                                                 for key, sd in self.state_dicts.items()}}

    def weights(self, arch_hash: str, seed: int) -> dict[str, torch.Tensor] | None:
        """The state dict of ``(arch_hash, seed)`` as (writable, CPU) tensors; None when there is none (its
        source training failed)."""
        sd = self.state_dicts.get(self.key(arch_hash, seed))
        if sd is None:
            return None
        return _to_tensors(sd)

    def lineage(self, arch_hash: str, seed: int) -> str:
        """The lineage string of ``(arch_hash, seed)``'s initial weights (``""`` where not recorded)."""
        return self.lineages.get(self.key(arch_hash, seed), "")


class MissingInitialWeights(LookupError):
    """A fine-tune trial whose (architecture, seed) has no entry in its :class:`InitialWeights`."""


def _to_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """A state dict pickled by :func:`_to_numpy` back as (writable, CPU) tensors."""
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in state_dict.items()}


def _to_numpy(value):
    """A CPU tensor as a numpy array where numpy has its dtype (bfloat16 has none: stays a tensor)."""
    if isinstance(value, torch.Tensor) and value.dtype != torch.bfloat16:
        return value.detach().cpu().numpy()
    return value


def device_data(protocol: str, options: dict, device: torch.device) -> tuple[DeviceData, float]:
    """The protocol's tensors on ``device``, loaded once per process; (data, seconds spent loading now)."""
    key = json.dumps([protocol, options, str(device)], sort_keys=True, default=str)
    if key in _DATA:
        return _DATA[key], 0.0
    start = time.perf_counter()
    _DATA[key] = DeviceData(make_protocol(protocol, **options), device)
    return _DATA[key], time.perf_counter() - start


def stage_train_config(config: dict[str, Any], data: DeviceData, device: torch.device) -> TrainConfig:
    """``config["train"]`` with the trial's seed and device; ``distill`` without auxiliary outliers gets
    ``lam = 0`` (the thesis's setting without outliers: the outlier term has nothing to average over)."""
    train = TrainConfig(**{**config.get("train", {}), "seed": config.get("seed", 0), "device": str(device)})
    if train.objective == "distill" and (data.aux is None or len(data.aux) == 0):
        train = train.replace(objective_args={**train.objective_args, "lam": 0.0})
    return train


def lineage_of(protocol: str, data: DeviceData, train: TrainConfig, teachers: TeacherBundle | None,
               initial_lineage: str | None = None) -> str:
    """The :class:`trainables.image.lineage.Lineage` string of a training with these settings: outliers reach it
    directly when its objective draws outlier batches (they share the forward pass, so batch norm sees them
    even at ``lam = 0``), through ``teachers`` when its objective uses them, and through the weights it was
    fine-tuned from (``initial_lineage``, their lineage string; None: trained from a random initialisation)."""
    from trainables.image.lineage import training_lineage

    objective = make_objective(train.objective, **train.objective_args)
    direct = objective.needs_outliers and data.aux is not None and len(data.aux) > 0
    via = teachers.teacher_lineages() if teachers is not None and objective.needs_teacher else None
    return str(training_lineage(protocol, train.train_fraction, train.train_on_val, train.eval_split, direct, via,
                                initial_lineage))


def candidate_trainable(config: dict[str, Any], teachers: TeacherBundle | None = None,
                        initial: InitialWeights | None = None) -> dict[str, Any] | None:
    """Train and score ``config["genotype"]``; see the module docstring for the config and result keys.
    ``initial``: the fine-tune's starting weights of every (architecture, seed) of the stage; a trial whose
    entry is missing (its source training failed) is reported failed, not retried."""
    start, started_at = time.perf_counter(), time.time()
    import ray
    from ray import tune

    gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    device = resolve_device(config.get("device", "cuda" if gpus else "cpu"))
    data, data_seconds = device_data(config["protocol"], config.get("protocol_options", {}), device)
    train = stage_train_config(config, data, device)
    models = None
    if teachers is not None:
        models = teachers.teachers_for(data, train)
    identity = {"genotype": config["genotype"], "seed": train.seed, "stage": config.get("stage", "search"),
                "iteration": config.get("iteration", 0)}
    state_dict = None

    curve: list[dict] = []
    from search_space import arch_hash_of

    arch_hash = arch_hash_of(config["genotype"])
    crash_if_told(identity["stage"], arch_hash, train.seed)
    ranked = {config["metric"]: math.nan} if config.get("metric") else {}  # Tune's searchers require the key
    fixed = {**identity, "arch_hash": arch_hash, "started_at": started_at}

    def report_epoch(entry: dict) -> None:
        curve.append(entry)
        tune.report({**ranked, **entry, **fixed, "epoch_curve": json.dumps(curve, allow_nan=True)})

    start_from = None if initial is None else initial.weights(arch_hash, train.seed)
    initial_lineage = None if initial is None else initial.lineage(arch_hash, train.seed)
    try:
        if initial is not None and start_from is None:
            raise MissingInitialWeights(f"no initial weights for {arch_hash} seed {train.seed} (its source "
                                        "training failed)")
        result = train_candidate(config["genotype"], data, train, teachers=models,
                                 on_epoch=report_epoch if in_tune_trial() else None, initial_state=start_from)
        result["epoch_curve"] = json.dumps(result.pop("curve"), allow_nan=True)
        state_dict = result.pop("state_dict")
        error = None
    except (DivergedError, MissingInitialWeights) as err:
        result = {"arch_hash": arch_hash, "id_acc": math.nan, "epochs": train.epochs,
                  "epoch": train.epochs, **{f"auroc_{s}": math.nan for s in train.scores}}
        error = f"diverged: {err}" if isinstance(err, DivergedError) else str(err)
    metrics = {**result, **identity, "epoch": train.epochs, "error": error, "data_seconds": data_seconds,
               "lineage": lineage_of(config["protocol"], data, train, teachers, initial_lineage),
               "trainable_seconds": time.perf_counter() - start, "started_at": started_at,
               "finished_at": time.time(), "worker_pid": os.getpid()}
    if not config.get("checkpoint") or state_dict is None:
        return metrics
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state_dict, os.path.join(tmp, WEIGHTS_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
    return None


#: Testing only: comma-separated ``stage:arch_hash:seed`` patterns (``*`` matches any field); a trial matching
#: one ends its worker process the way a native crash does (exit status 139, no Python exception), e.g.
#: ``DCSOD_TESTING_CRASH_TRIALS=compare:resnet-depth8:1``. Read from the worker's environment.
CRASH_ENV = "DCSOD_TESTING_CRASH_TRIALS"


def crash_if_told(stage: str, arch_hash: str, seed: int) -> None:
    """End this process at once when :data:`CRASH_ENV` names this trial (tests of failed-trial reporting)."""
    for pattern in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        fields = pattern.strip().split(":")
        if len(fields) == 3 and all(f in ("*", str(v)) for f, v in zip(fields, (stage, arch_hash, seed))):
            os._exit(139)


def in_tune_trial() -> bool:
    """Whether this runs inside a Tune trial (per-epoch reports make sense); False for a direct call."""
    import warnings

    from ray import tune

    with warnings.catch_warnings():  # outside a trial Ray warns and returns None
        warnings.simplefilter("ignore")
        return tune.get_context().get_trial_id() is not None


def load_weights(checkpoint) -> dict:
    """The CPU state dict stored in a checkpoint of :func:`candidate_trainable` (a ``ray.tune.Checkpoint``)."""
    with checkpoint.as_directory() as path:
        return torch.load(os.path.join(path, WEIGHTS_FILE), map_location="cpu", weights_only=True)
