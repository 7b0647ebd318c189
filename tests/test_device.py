"""The training core on an accelerator: bf16 autocast, device-resident data, compile/CUDA graphs, teachers.

Runs on the devices named in ``DCSOD_TEST_DEVICES`` (comma-separated, default ``cuda``); a CUDA device on a
machine without one is skipped, so CI (no GPU) skips the file. ``DCSOD_TEST_DEVICES=cpu pytest
tests/test_device.py`` runs the same checks on the CPU (slow: torch.compile); the captured-step tests
(``cuda_graph``) need CUDA and skip on other devices (their CPU-testable parts: tests/test_cuda_graph.py).
"""
import gc
import math
import os

import pytest
import torch

from search_space import SearchSpace
from trainables.image import DeviceData, TeacherCache, TrainConfig, make_protocol, train_candidate
from trainables.image.train import PRESETS, CandidateTraining
from trainables.image.tune_trainable import TeacherBundle

DEVICES = [d for d in os.environ.get("DCSOD_TEST_DEVICES", "cuda").split(",") if d]
QUICK = {k: v for k, v in PRESETS["quick"].items() if k != "protocol"}
TINY = dict(epochs=1, width=4, batch_size=64, flip=False, scores=("msp",))


@pytest.fixture(scope="module", params=DEVICES)
def data(request):
    device = torch.device(request.param)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return DeviceData(make_protocol("digits"), device)


def test_quick_preset_bar_with_data_on_the_device(data):
    assert data.train_x.device.type == data.device.type and data.train_x.dtype == torch.uint8
    r = train_candidate(SearchSpace().sample(0), data, TrainConfig(**QUICK, device=str(data.device)))
    assert r["id_acc"] >= 0.85 and r["auroc_msp"] >= 0.6, r
    assert all(v.device.type == "cpu" for v in r["state_dict"].values()), "weights come back on the CPU"


def test_precision_auto_is_bf16_on_cuda_only(data):
    g = SearchSpace().sample(1)
    auto = train_candidate(g, data, TrainConfig(**TINY, seed=2))
    assert auto["precision"] == ("bf16" if data.device.type == "cuda" else "fp32")
    assert train_candidate(g, data, TrainConfig(**TINY, precision="fp32"))["precision"] == "fp32"


def test_compiled_training_matches_eager_quality(data):
    """reduce-overhead (CUDA graphs) on CUDA; default mode elsewhere. Same seed: close, not bitwise, results."""
    mode = "reduce-overhead" if data.device.type == "cuda" else "default"
    g = SearchSpace().sample(3)
    config = TrainConfig(**{**QUICK, "epochs": 4}, scores=("msp",))
    eager = train_candidate(g, data, config)
    compiled = train_candidate(g, data, config.replace(compile=True, compile_mode=mode))
    assert compiled["id_acc"] >= 0.6 and abs(compiled["id_acc"] - eager["id_acc"]) <= 0.15, (eager, compiled)


def test_teachers_online_and_cached_on_the_device(data):
    g = SearchSpace().sample(4)
    genotypes = SearchSpace().sample_many(2, seed=11)
    short = TrainConfig(**{**QUICK, "epochs": 4}, scores=("msp",))
    states = [train_candidate(t, data, short)["state_dict"] for t in genotypes]
    bundle = TeacherBundle([t.to_json() for t in genotypes], states, width=short.width)
    config = short.replace(objective="distill")
    teachers = bundle.build(6, 1, data.device)
    assert all(p.device.type == data.device.type for t in teachers for p in t.parameters())
    cache = bundle.teachers_for(data, config.replace(teacher_mode="cached"))
    assert isinstance(cache, TeacherCache) and cache.train.device.type == data.device.type

    cpu_teachers = TeacherBundle(bundle.genotypes, states, width=short.width).build(6, 1, torch.device("cpu"))
    reference = TeacherCache.compute(cpu_teachers, DeviceData(data.protocol, "cpu"), temperature=20.0)
    assert torch.allclose(cache.train.cpu(), reference.train, atol=1e-3), "device cache = CPU cache"

    online = train_candidate(g, data, config, teachers=teachers)
    cached = train_candidate(g, data, config.replace(teacher_mode="cached"), teachers=cache)
    for r in (online, cached):
        assert 0.0 <= r["auroc_msp"] <= 1.0 and r["id_acc"] >= 0.5, r


def _needs_cuda(data):
    if data.device.type != "cuda":
        pytest.skip("cuda_graph needs a CUDA device")


def _relative_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    diff = sum(float((p - q).float().norm() ** 2) for p, q in zip(a.parameters(), b.parameters()))
    norm = sum(float(p.float().norm() ** 2) for p in a.parameters())
    return (diff / norm) ** 0.5


def test_graph_replay_matches_eager_steps(data):
    """Same seed, same batches, outlier exposure (outlier indices drawn inside the graph): replay k draws eager
    step k's random numbers (equal generator states) and gives its loss, weights and lr within bf16
    tolerance; the step is captured once, at the first call."""
    _needs_cuda(data)
    config = TrainConfig(**QUICK, scores=("msp",))
    g = SearchSpace().sample(3)
    eager = CandidateTraining(g, data, config)
    graphed = CandidateTraining(g, data, config.replace(cuda_graph=True))
    assert graphed.graphed is not None and graphed.graphed.captures == 0 and graphed.use_aux
    for k in range(6):
        idx = torch.arange(k * 64, (k + 1) * 64, device=data.device)
        batch = (data.train_x[idx], data.train_y[idx])
        expected, got = eager.step(*batch), graphed.step(*batch).clone()
        assert torch.allclose(expected, got, rtol=2e-2, atol=1e-3), (k, expected, got)
        assert torch.equal(eager.gen.get_state(), graphed.gen.get_state()), f"step {k}: other random numbers"
    assert (graphed.graphed.captures, graphed.graphed.replays, graphed.graphed.eager_steps) == (1, 6, 0)
    assert _relative_difference(eager.model, graphed.model) < 2e-2
    assert float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(eager.optimizer.param_groups[0]["lr"],
                                                                           rel=1e-6)


def test_graphed_training_meets_the_quick_bar_with_one_capture(data):
    """The whole epoch loop on replays (evaluations between epochs included), then the eager run's quality."""
    _needs_cuda(data)
    g = SearchSpace().sample(0)
    config = TrainConfig(**QUICK, cuda_graph=True, eval_every=3)
    run = CandidateTraining(g, data, config)
    run.train()
    metrics, _ = run.evaluate()
    steps = run.steps_per_epoch * config.epochs
    assert (run.graphed.captures, run.graphed.replays, run.graphed.eager_steps) == (1, steps, 0)
    assert metrics["id_acc"] >= 0.85 and metrics["auroc_msp"] >= 0.6, metrics
    lrs = [e["lr"] for e in run.curve]
    assert all(isinstance(x, float) for x in lrs) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-6
    assert "auroc_msp" in run.curve[2], "evaluated every 3 epochs while training on the graph"
    eager = train_candidate(g, data, config.replace(cuda_graph=False))
    assert abs(metrics["id_acc"] - eager["id_acc"]) <= 0.1, (metrics, eager)


@pytest.mark.parametrize("teacher_mode", ["online", "cached"])
def test_graphed_distillation(data, teacher_mode):
    """Teachers inside the graph (online) or their cached probabilities through a static buffer (cached)."""
    _needs_cuda(data)
    short = TrainConfig(**{**QUICK, "epochs": 3}, scores=("msp",))
    genotypes = SearchSpace().sample_many(2, seed=11)
    states = [train_candidate(t, data, short)["state_dict"] for t in genotypes]
    bundle = TeacherBundle([t.to_json() for t in genotypes], states, width=short.width)
    config = short.replace(objective="distill", teacher_mode=teacher_mode, cuda_graph=True)
    run = CandidateTraining(SearchSpace().sample(4), data, config, teachers=bundle.teachers_for(data, config))
    assert (run.graphed.teacher_in is None) == (teacher_mode == "online")
    loss, _ = run.train()
    metrics, _ = run.evaluate()
    assert run.graphed.captures == 1 and run.graphed.eager_steps == 0
    assert math.isfinite(loss) and metrics["id_acc"] >= 0.5, (loss, metrics)


def test_a_finished_candidate_releases_its_graph(data):
    _needs_cuda(data)
    config = TrainConfig(**{**QUICK, "epochs": 1}, cuda_graph=True, scores=("msp",))
    CandidateTraining(SearchSpace().sample(5), data, config).train()  # the process's one-time allocations
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(data.device)
    run = CandidateTraining(SearchSpace().sample(5), data, config)
    run.train()
    assert run.graphed.captures == 1 and torch.cuda.memory_allocated(data.device) > before
    del run
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated(data.device) <= before + (1 << 20), "graph pool and buffers freed"
