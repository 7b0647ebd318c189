"""The training core on an accelerator: bf16 autocast, device-resident data, compile/CUDA graphs, teachers.

Runs on the devices named in ``DCSOD_TEST_DEVICES`` (comma-separated, default ``cuda``); a CUDA device on a
machine without one is skipped, so CI (no GPU) skips the file. ``DCSOD_TEST_DEVICES=cpu pytest
tests/test_device.py`` runs the same checks on the CPU (slow: torch.compile).
"""
import os

import pytest
import torch

from search_space import SearchSpace
from trainables import DeviceData, TeacherCache, TrainConfig, make_protocol, train_candidate
from trainables.train import PRESETS
from trainables.tune_trainable import TeacherBundle

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
