"""Data-parallel text-VAE training (plain torch.distributed, gloo on CPU): sharding arithmetic, ranks staying in
lock-step (same rows, same parameters, same aggressive-training decisions), divergence raised on every rank."""
import multiprocessing
import socket

import numpy as np
import pytest
import torch

from trainables.errors import DivergedError
from trainables.text.data import length_bucketed_batches, shard_batches, toy_corpus
from trainables.text.vae_model import VAEModelConfig, VAETrainConfig, train_vae

TINY = VAEModelConfig(emb_dim=8, hidden_dim=16, latent_dim=3, posterior="semi-implicit")
TOY_COPIES = 6  # 60 training sentences: 6 global batches of 10 per epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, train_kwargs: dict, queue) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = train_vae(toy_corpus(copies=TOY_COPIES), TINY, VAETrainConfig(**train_kwargs),
                           distributed=(rank, world, DistributedDataParallel))
        params = torch.cat([p.detach().flatten() for p in result.model.parameters()]).numpy()
        queue.put((rank, result.history, params, sorted(result.test)))
    except DivergedError as e:
        queue.put((rank, None, str(e), None))
    finally:
        dist.destroy_process_group()


def _run_ddp(train_kwargs: dict, world: int = 2) -> dict[int, tuple]:
    ctx = multiprocessing.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, train_kwargs, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        out = {}
        for _ in range(world):
            rank, *rest = queue.get(timeout=180)
            out[rank] = tuple(rest)
        return out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def test_shards_partition_every_global_batch_and_shares_weight_the_global_mean():
    data = toy_corpus(copies=2)  # 20 sentences; batch 6 → global batches of 6, 6, 6, 2
    global_idx = length_bucketed_batches([len(s) for s in data.train.sentences], 6, shuffle=True, seed=5)
    world = 3
    shards = [shard_batches(data.train, data.vocab, 6, rank=r, world=world, shuffle=True, seed=5) for r in range(world)]
    assert all(len(s) == len(global_idx) for s in shards)
    values = np.random.default_rng(0).normal(size=len(data.train))
    for i, rows in enumerate(global_idx):
        parts = [shards[r][i] for r in range(world)]
        assert sum(share for _, share in parts) == pytest.approx(1.0)
        assert sum(len(b.lengths) for b, share in parts if share > 0) == len(rows)
        # each rank's rows are its slice of the global batch: Σ share · mean(rank) = mean(global)
        slices = [rows[r::world] for r in range(world)]
        weighted = sum(share * values[s].mean() for (_, share), s in zip(parts, slices) if share > 0)
        assert weighted == pytest.approx(values[rows].mean())
    i_small = next(i for i, rows in enumerate(global_idx) if len(rows) == 2)
    small = [shards[r][i_small] for r in range(world)]  # the batch of 2: rank 2 gets a zero-weight stand-in
    assert [share for _, share in small] == [0.5, 0.5, 0.0]
    single = shard_batches(data.train, data.vocab, 6, rank=0, world=1, shuffle=True, seed=5)
    assert [share for _, share in single] == [1.0] * len(global_idx)


def test_two_rank_training_stays_in_lock_step_with_aggressive_steps():
    kwargs = dict(epochs=3, batch_size=10, lr=1e-2, schedule="cyclical", cycles=2, k_max=2, aggressive=True,
                  aggressive_max_steps=6, aggressive_window=2, iw_samples=2, eval_components=2, seed=0)
    out = _run_ddp(kwargs)
    (h0, p0, test0), (h1, p1, test1) = out[0], out[1]
    assert h0 is not None and h1 is not None, f"a rank diverged: {p0 if h0 is None else p1}"
    assert h0 == h1, "every rank sees the same epoch rows (broadcast validation, all-reduced sums)"
    np.testing.assert_array_equal(p0, p1)  # DDP keeps the replicas identical
    assert "elbo" in test0 and test1 == []  # rank 0 tests, the others do not
    single = train_vae(toy_corpus(copies=TOY_COPIES), TINY, VAETrainConfig(**kwargs)).history
    assert [h["iteration"] for h in h0] == [h["iteration"] for h in single]  # same β/K schedule position
    assert [h["beta"] for h in h0] == [h["beta"] for h in single]
    assert h0[0]["aggressive"] and h0[0]["inner_steps"] >= 6 * 4  # ≥ 2 windows of 2 per outer step
    assert h0[-1]["val_elbo"] > h0[0]["val_elbo"] - 1.0 and np.isfinite(h0[-1]["train_elbo"])


def test_divergence_is_raised_on_every_rank():
    out = _run_ddp(dict(epochs=2, batch_size=10, lr=float("inf"), schedule="constant", iw_samples=0, eval_components=2))
    assert all(hist is None and "diverged" in msg for hist, msg, _ in out.values())
