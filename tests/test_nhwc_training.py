"""Channels-last training on the CPU does not crash (issue 32).

oneDNN (v3.12 in PyTorch 2.14.1; uxlfoundation/oneDNN#6035) corrupts the heap computing the weight gradient of
a strided 1×1 convolution over fewer input channels than its channel block in NHWC;
:func:`trainables.image.train.nhwc_safe` keeps such models in NCHW on the CPU. The end-to-end
check trains every registered standard model at its smallest depth and sampled DCSOD cells, at the smallest
width a preset uses (4, the ``ci`` preset), with ``channels_last`` on and one OpenMP thread (where the crash
showed), in a subprocess: a native crash fails the test instead of killing pytest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from search_space import StandardModel, build_model
from trainables.image.train import nhwc_safe

ROOT = Path(__file__).resolve().parents[1]
#: The smallest depth of each registered standard model (a new entry fails here until it is listed).
SMALLEST = {"resnet": {"depth": 8}, "wide_resnet": {"depth": 10, "widen": 1}, "densenet_bc": {"depth": 10}}
CPU = torch.device("cpu")

SCRIPT = """
import json, sys
from search_space import SearchSpace
from trainables.image import TrainConfig, make_protocol, train_candidate
candidates = json.loads(sys.argv[1])
candidates += [g.to_json() for g in SearchSpace(k=6).sample_many(3, seed=0)]
protocol = make_protocol("digits")
for candidate in candidates:
    for _ in range(2):
        train_candidate(candidate, protocol, TrainConfig(epochs=2, width=4, batch_size=128, lr=0.05, flip=False,
                                                          channels_last=True, scores=("msp",)))
    print("trained", candidate[:60], flush=True)
"""


def standard(name: str) -> StandardModel:
    return StandardModel(name, SMALLEST[name])


def test_every_standard_model_is_listed_with_its_smallest_depth():
    from search_space import STANDARD_MODELS

    assert set(SMALLEST) == set(STANDARD_MODELS)


def test_a_strided_1x1_convolution_over_few_channels_keeps_nchw_on_the_cpu_only():
    resnet4 = build_model(standard("resnet").to_json(), in_channels=1, num_classes=6, width=4)
    assert not nhwc_safe(resnet4, CPU)  # its first projection shortcut: 1x1, stride 2, 4 -> 8 channels
    assert nhwc_safe(resnet4, torch.device("cuda"))
    assert not nhwc_safe(build_model(standard("resnet").to_json(), in_channels=1, num_classes=6, width=8), CPU)
    assert nhwc_safe(build_model(standard("resnet").to_json(), in_channels=1, num_classes=6, width=16), CPU)
    assert nhwc_safe(build_model(standard("densenet_bc").to_json(), in_channels=1, num_classes=6, width=4), CPU)


def test_training_channels_last_at_width_4_does_not_crash():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    candidates = [standard(name).to_json() for name in SMALLEST]
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(candidates)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.count("trained") == len(candidates) + 3
