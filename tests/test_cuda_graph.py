"""The CPU-testable parts of the captured training step (trainables/image/cuda_graph.py): the tensor-op schedule, the
step written against static buffers (run eagerly here) against the eager step, warm-up and restore, the setting's
validation and the fall-back decisions. Capture and replay themselves are tested in tests/test_device.py (CUDA)."""
import types

import pytest
import torch

from search_space import SearchSpace, build_network
from trainables.image import DeviceData, TeacherCache, TrainConfig, make_protocol
from trainables.image.cuda_graph import (
    CapturableRun,
    GraphedStep,
    ImageShape,
    ProtocolData,
    StepSettings,
    TeacherProbabilities,
    fallback_reason,
    graphed_step,
    scheduled_lr,
)
from trainables.image.train import CandidateTraining

TINY = {"epochs": 2, "width": 4, "batch_size": 64, "flip": True}
DISTILL = {"objective": "distill", "objective_args": {"temperature": 4.0}}


@pytest.fixture(scope="module")
def digits():
    return DeviceData(make_protocol("digits"), "cpu")


@pytest.fixture(scope="module")
def teachers():
    return [build_network(g, num_classes=6, in_channels=1, width=4).eval()
            for g in SearchSpace().sample_many(2, seed=5)]


def _pair(digits, config, teachers=None, fused=True):
    """Two runs of the same seed; the second steps through a GraphedStep that runs its static step eagerly.
    ``fused``: the eager run's SGD is the fused kernel too (its own LambdaLR, float lr), so that the two agree
    bit for bit; the default (for-loop) SGD rounds differently, and over tens of steps of a width-4 network
    such differences grow chaotically (1e-7 after one step, 1e-2 after 22)."""
    eager = CandidateTraining(SearchSpace().sample(2), digits, config, teachers=teachers)
    if fused:
        schedule = eager.schedule.lr_lambdas[0]
        eager.optimizer = torch.optim.SGD(eager.model.parameters(), lr=config.lr, momentum=config.momentum,
                                          weight_decay=config.weight_decay, nesterov=config.nesterov, fused=True)
        eager.schedule = torch.optim.lr_scheduler.LambdaLR(eager.optimizer, schedule)
    static = CandidateTraining(SearchSpace().sample(2), digits, config, teachers=teachers)
    static.graphed = GraphedStep(static, capture=False)
    return eager, static


def _batch(run, start, size=None):
    size = size or run.batch
    idx = torch.arange(start, start + size)
    teacher_in = None if run.cache is None else run.cache.train[idx]
    return run.train_x[idx], run.train_y[idx], teacher_in


def _assert_same_state(eager, static, exact=True):
    for a, b in zip([*eager.model.parameters(), *eager.model.buffers()],
                    [*static.model.parameters(), *static.model.buffers()]):
        assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
    assert torch.equal(eager.gen.get_state(), static.gen.get_state()), "the same random numbers were drawn"
    assert float(static.optimizer.param_groups[0]["lr"]) == pytest.approx(eager.optimizer.param_groups[0]["lr"],
                                                                          rel=1e-6)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("cosine", [True, False])
def test_tensor_schedule_equals_lambdalr_step_by_step(digits, cosine):
    run = CandidateTraining(SearchSpace().sample(2), digits,
                            TrainConfig(**TINY, lr=0.3, schedule="cosine" if cosine else "constant"))
    total = run.steps_per_epoch * run.config.epochs
    for k in range(total + 1):
        expected = run.optimizer.param_groups[0]["lr"]  # LambdaLR's value after k steps
        got = scheduled_lr(torch.tensor(float(k), dtype=torch.float64), 0.3, total, cosine)
        assert got.dtype == torch.float64 and got.shape == ()
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-15), k
        run.schedule.step()
    with pytest.raises(ValueError, match="total_steps: expected an integer >= 1, got 0"):
        scheduled_lr(torch.zeros((), dtype=torch.float64), 0.1, 0)


@pytest.mark.parametrize("setting", ["oe", "ce", "distill-cached", "distill-online"])
def test_static_step_equals_the_eager_step(digits, teachers, setting):
    """The step as the graph records it (buffers, fused SGD, tensor lr), run eagerly after a warm-up that is
    undone, gives the eager step's losses, weights, BN statistics, generator state and lr."""
    config = TrainConfig(**TINY, **(DISTILL if setting.startswith("distill") else {"objective": setting}),
                         teacher_mode="cached" if setting == "distill-cached" else "online")
    eager, static = _pair(digits, config, teachers if setting.startswith("distill") else None)
    assert (static.cache is not None) == (setting == "distill-cached") and static.use_aux == (setting != "ce")
    static.graphed.images.copy_(_batch(static, 300)[0])  # the warm-up trains on whatever the buffers hold
    static.graphed.warm_up()
    assert all("momentum_buffer" in s for s in static.optimizer.state.values()), "warm-up made the state"
    for step in range(4):
        batch = _batch(eager, 64 * step)
        assert torch.equal(eager.step(*batch), static.step(*batch)), step
    _assert_same_state(eager, static)
    assert static.graphed.eager_steps == 4 and static.graphed.counter == 4


def test_static_step_against_the_default_sgd(digits):
    """Against the run's own (for-loop) SGD: one step agrees up to rounding."""
    eager, static = _pair(digits, TrainConfig(**TINY), fused=False)
    batch = _batch(eager, 0)
    assert torch.equal(eager.step(*batch), static.step(*batch)), "same forward: the same loss"
    _assert_same_state(eager, static, exact=False)


def test_warm_up_is_undone(digits):
    run = CandidateTraining(SearchSpace().sample(2), digits, TrainConfig(**TINY))
    graphed = GraphedStep(run, capture=False)
    graphed.images.copy_(_batch(run, 0)[0])
    before = graphed.snapshot()
    graphed.warm_up()
    after = graphed.snapshot()
    assert all(torch.equal(a, b) for a, b in zip(before["tensors"], after["tensors"]))
    assert all(torch.equal(a, b) for a, b in zip(before["generators"], after["generators"]))
    assert after["counter"] == 0 and after["lr"] == before["lr"]
    assert all(s["momentum_buffer"].abs().sum() == 0 for s in graphed.optimizer.state.values())


def test_a_batch_that_does_not_fit_the_buffers_runs_eagerly(digits):
    eager, static = _pair(digits, TrainConfig(**TINY))
    graphed = static.graphed
    full, partial = _batch(static, 0), _batch(static, 64, size=20)
    assert graphed.fits(*full) and not graphed.fits(*partial)
    assert not graphed.fits(full[0], full[1], torch.zeros(64, 6)), "teacher probabilities without a buffer"
    assert not graphed.fits(full[0].float(), *full[1:]), "another dtype"
    for batch in (full, partial):
        assert torch.equal(eager.step(*batch), static.step(*batch))
    _assert_same_state(eager, static)
    assert graphed.eager_steps == 2 and graphed.replays == 0


def test_the_epoch_loop_steps_through_the_graphed_step(digits):
    config = TrainConfig(**TINY, train_fraction=0.2)  # 2 steps an epoch
    eager, static = _pair(digits, config)
    loss_eager, _ = eager.train()
    loss_static, _ = static.train()
    assert static.graphed.eager_steps == static.steps_per_epoch * config.epochs, "every step went through it"
    assert loss_static == loss_eager
    for a, b in zip(eager.curve, static.curve):
        assert isinstance(b["lr"], float) and b["lr"] == pytest.approx(a["lr"], rel=1e-6, abs=1e-9)
        assert b["train_loss"] == a["train_loss"]
    _assert_same_state(eager, static)


@pytest.mark.parametrize("changes, message", [
    ({"cuda_graph": 1}, "cuda_graph: expected true or false, got 1"),
    ({"cuda_graph": True, "compile": True}, "cuda_graph: expected false when compile is true"),
    ({"cuda_graph": True, "device": "cpu"}, "cuda_graph: expected false on device cpu"),
])
def test_the_setting_is_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_a_cpu_training_with_cuda_graph_is_refused_at_set_up(digits):
    config = TrainConfig(**TINY, cuda_graph=True)  # device auto; the data live on the CPU
    with pytest.raises(ValueError, match=r"^cuda_graph: expected a CUDA device, got cpu \(set cuda_graph=false\)$"):
        CandidateTraining(SearchSpace().sample(2), digits, config)
    assert CandidateTraining(SearchSpace().sample(2), digits, TrainConfig(**TINY)).graphed is None


def test_fall_back_decisions():
    cuda = torch.device("cuda")
    assert fallback_reason(cuda, 1) is None
    assert "DDP" in fallback_reason(cuda, 2)
    with pytest.raises(ValueError, match="expected a CUDA device, got cpu"):
        fallback_reason(torch.device("cpu"), 1)
    ddp_run = types.SimpleNamespace(config=TrainConfig(cuda_graph=True), device=cuda, world=4)
    with pytest.warns(UserWarning, match="cuda_graph: training eagerly: data-parallel training on 4 ranks"):
        assert graphed_step(ddp_run) is None
    off = types.SimpleNamespace(config=TrainConfig(), device=torch.device("cpu"), world=1)
    assert graphed_step(off) is None


def test_teacher_cache_buffer_follows_the_cache(digits, teachers):
    config = TrainConfig(**TINY, **DISTILL, teacher_mode="cached")
    cache = TeacherCache.compute(teachers, digits, temperature=4.0)
    run = CandidateTraining(SearchSpace().sample(2), digits, config, teachers=cache)
    graphed = GraphedStep(run, capture=False)
    assert graphed.teacher_in.shape == (run.batch, 6) and graphed.images.dtype == torch.uint8
    assert graphed.labels.shape == (run.batch,) and run.optimizer is graphed.optimizer


def _members(protocol) -> set[str]:
    return {name for name in {*vars(protocol), *protocol.__annotations__} if not name.startswith("_")}


def test_candidate_training_has_every_member_the_graphed_step_reads(digits, teachers):
    """``cuda_graph`` declares what it reads of a training as :class:`CapturableRun` instead of importing
    ``train`` (which imports it); a ``CandidateTraining`` must have all of it, nested members included."""
    cache = TeacherCache.compute(teachers, digits, temperature=4.0)
    run = CandidateTraining(SearchSpace().sample(2), digits, TrainConfig(**TINY, **DISTILL, teacher_mode="cached"),
                            teachers=cache)
    for obj, protocol in ((run, CapturableRun), (run.config, StepSettings), (run.data, ProtocolData),
                          (run.data.protocol, ImageShape),
                          (run.cache, TeacherProbabilities)):
        members = _members(protocol)
        assert members and not [m for m in members if not hasattr(obj, m)], protocol.__name__
    assert "loss" in _members(CapturableRun) and "optimizer" in _members(CapturableRun)


# --- the benchmark's arithmetic (benchmarks/candidate_speed.py measures the captured step against the plain loop)

def _speed_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "candidate_speed.py"
    spec = importlib.util.spec_from_file_location("candidate_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_extrapolation_and_saturation():
    speed = _speed_module()
    assert speed.steady_epoch([5.0, 1.0, 1.2, 1.1]) == 1.1, "the first epoch (capture) is left out"
    assert speed.steady_epoch([2.0]) == 2.0
    # 4 workers x 1 candidate of 3 epochs in 10 s wall, steady 1 s: + 17 epochs each, 4 candidates
    assert speed.extrapolated_seconds(10.0, 1.0, 3, 20, 1, 4) == pytest.approx((10 + 17) / 4)
    assert speed.extrapolated_seconds(10.0, 1.0, 3, 20, 2, 8) == pytest.approx((10 + 34) / 8)
    with pytest.raises(ValueError, match="target_epochs: expected >= the measured epochs"):
        speed.extrapolated_seconds(1.0, 1.0, 3, 2, 1, 1)
    rows = [{"workers": n, "images_per_s": v} for n, v in ((1, 100.0), (2, 180.0), (4, 185.0), (8, 300.0))]
    assert "stops rising at 2 worker(s): 4 give +3 %" in speed.saturation(rows)
    assert "still rising at 2" in speed.saturation(rows[:2])


def test_benchmark_summary_table():
    speed = _speed_module()
    meta = {"device": "GPU", "torch": "2", "date": "d", "arch": "k6-median", "width": 32, "images": 25000,
            "data": "CIFAR-10 split", "epochs": 3, "target_epochs": 20, "candidates": 1, "id_acc": 0.5,
            "auroc_msp": 0.6}
    rows = [{**meta, "path": "plain fp32", "workers": 1, "epoch_s": 2.0, "images_per_s": 12000.0, "amortised_s": 45.0},
            {**meta, "path": "fast (CUDA graph)", "workers": 1, "epoch_s": 0.3, "images_per_s": 80000.0,
             "amortised_s": 6.0},
            {**meta, "path": "fast (CUDA graph)", "workers": 2, "epoch_s": 0.5, "images_per_s": 98000.0,
             "amortised_s": 4.5}]
    text = speed.summary(rows)
    assert "**extrapolated to 20**" in text and "| fast (CUDA graph) | 2 | 1 | 0.500 | 98,000 | 4.50 | 10.0 |" in text
    assert "at 2 worker(s), 4.50 s per candidate, 10.0x the plain fp32 loop" in text and ": met)." in text
    assert ": not judged)" in speed.summary(rows[1:])
