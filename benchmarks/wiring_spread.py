"""Which cell wiring separates architectures better relative to seed noise? (``space.residual`` true vs false)

Trains ``--archs`` sampled architectures with ``--seeds`` seeds each, once with the residual cell wiring
(``ReLU(x + proj(concat(leaves)))``) and once without it (the thesis's eq. 4.6, ``ReLU(proj(concat(leaves)))``),
same cells, same budget, outlier exposure. Prints per wiring, for AUROC (MSP) and ID accuracy:

- sd across architectures of the seed-mean, and the mean sd across seeds of one architecture;
- the architecture share of the variance, ``σ²_arch / (σ²_arch + σ²_seed)`` with ``σ²_seed`` the mean within-
  architecture variance and ``σ²_arch = max(0, var(arch means) − σ²_seed / seeds)``: the reliability of a single
  seed's label (1 = noise-free, 0 = pure seed noise);
- the seed-to-seed Kendall τ over architectures (mean over seed pairs).

The predictor learns from these labels: the wiring with the larger architecture share gives it more signal.
Rows go to ``--out`` (JSON lines) as they finish; a rerun with the same ``--out`` skips what is there.

    python benchmarks/wiring_spread.py --protocol digits --archs 40 --seeds 3 --out runs/wiring_digits.jsonl
    python benchmarks/wiring_spread.py --protocol cifar10-split --data data/cifar10-train-jpeg.zip --images 2000 \
        --epochs 3 --archs 16 --seeds 2 --out runs/wiring_cifar.jsonl
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time

import numpy as np
import torch
from bench_protocol import add_protocol_args, protocol_from_args  # benchmarks/ is on sys.path when run as a script
from scipy.stats import kendalltau

from search_space import Genotype, SearchSpace
from trainables.image import DeviceData, TrainConfig, train_candidate

WIRINGS = {"residual": True, "plain": False}


def spread(values: np.ndarray) -> dict[str, float]:
    """``values`` (archs, seeds) -> sd across archs of the means, mean sd across seeds, architecture share,
    mean seed-to-seed Kendall τ."""
    seeds = values.shape[1]
    within = float(values.var(axis=1, ddof=1).mean())
    between = max(0.0, float(values.mean(axis=1).var(ddof=1)) - within / seeds)
    taus = [kendalltau(values[:, a], values[:, b]).statistic for a, b in itertools.combinations(range(seeds), 2)]
    return {"sd_archs": float(values.mean(axis=1).std(ddof=1)), "sd_seeds": float(np.sqrt(within)),
            "arch_share": between / (between + within) if between + within > 0 else float("nan"),
            "tau": float(np.mean(taus))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_args(parser, default="digits")
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON-lines file of per-training rows (resumable)")
    args = parser.parse_args()
    if args.seeds < 2 or args.archs < 3:
        parser.error("--seeds must be >= 2 and --archs >= 3")
    protocol = protocol_from_args(parser, args)
    data = DeviceData(protocol, args.device)
    base = TrainConfig(epochs=args.epochs, width=args.width, batch_size=args.batch_size, lr=args.lr,
                       flip=args.protocol != "digits", scores=("msp",), device=args.device)
    cells = [g.cells for g in SearchSpace().sample_many(args.archs, seed=args.seed)]
    rows: dict[tuple, dict] = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            for line in f:
                r = json.loads(line)
                rows[(r["arch"], r["seed"])] = r
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d')}, {args.protocol}, {args.device}, {len(data.train_y)} ID train, "
          f"{args.archs} archs x {args.seeds} seeds x {len(WIRINGS)} wirings, {args.epochs} epochs, width "
          f"{args.width}; {len(rows)} rows already in {args.out}", flush=True)
    seeds = [args.seed + s for s in range(args.seeds)]
    for seed in seeds:  # seed-major: an interrupted run already has every architecture at the first seeds
        for c in cells:
            for residual in WIRINGS.values():
                g = Genotype(c, residual)
                if (g.arch_hash, seed) in rows:
                    continue
                r = train_candidate(g, data, base.replace(objective="oe", seed=seed))
                rows[(g.arch_hash, seed)] = {"arch": g.arch_hash, "residual": residual, "seed": seed,
                                             "auroc_msp": r["auroc_msp"], "id_acc": r["id_acc"],
                                             "train_seconds": r["train_seconds"]}
                with open(args.out, "a") as f:
                    f.write(json.dumps(rows[(g.arch_hash, seed)]) + "\n")

    print("\n| wiring | metric | mean | sd across archs | sd across seeds | arch share of variance | "
          "seed-to-seed τ | median train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, residual in WIRINGS.items():
        hashes = [Genotype(c, residual).arch_hash for c in cells]
        secs = statistics.median(rows[(h, s)]["train_seconds"] for h in hashes for s in seeds)
        for metric in ("auroc_msp", "id_acc"):
            values = np.array([[rows[(h, s)][metric] for s in seeds] for h in hashes])
            st = spread(values)
            print(f"| {name} | {metric} | {values.mean():.3f} | {st['sd_archs']:.3f} | {st['sd_seeds']:.3f} | "
                  f"{st['arch_share']:.2f} | {st['tau']:.2f} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
