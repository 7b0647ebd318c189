"""Does outlier distillation de-noise the OOD labels the predictor learns from? (DCSOD's central claim.)

Trains ``--archs`` sampled architectures twice with outlier exposure (seeds s and s+1), picks teachers from the
first pass (top ``--top`` + ``--random`` others, as ``pipelines/nas/teachers.py`` does), then trains every
architecture twice more with outlier distillation (eq. 4.11, cached teachers). Prints per objective:

- label reliability: Kendall tau between the two seeds' AUROC(MSP) over all architectures (1 = noise-free);
- predictor quality: the ``mlp`` predictor's held-out Kendall tau (``search_space.validate``, 85/15), mean and
  standard deviation over ``--splits`` random splits, on the seed-s labels and on the two seeds' mean.

The thesis reports predictor tau 0.74 with distillation vs 0.44 with plain training (CIFAR-10, 2,000 archs).
Rows go to ``--out`` (JSON lines) as they finish; a rerun with the same ``--out`` skips what is there.

    python benchmarks/predictor_tau.py --protocol digits --archs 120 --out runs/predictor_tau_digits.jsonl
    python benchmarks/predictor_tau.py --protocol cifar10-split --data data/cifar10-train-jpeg.zip \
        --epochs 20 --width 32 --archs 200 --top 10 --random 1 --out runs/predictor_tau_cifar.jsonl  # GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from bench_protocol import add_protocol_args, protocol_from_args  # benchmarks/ is on sys.path when run as a script
from scipy.stats import kendalltau

from pipelines.nas.teachers import choose_teachers
from search_space import SearchSpace, encode_many, validate
from trainables.image import DeviceData, TeacherCache, TrainConfig, train_candidate
from trainables.image.tune_trainable import TeacherBundle

OBJECTIVES = ("oe", "distill")


def load_rows(path: str) -> dict[tuple, dict]:
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                rows[(r["arch"], r["objective"], r["seed"])] = r
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_args(parser, default="digits")
    parser.add_argument("--archs", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--top", type=int, default=3, help="teachers: the best this many of the OE pass ...")
    parser.add_argument("--random", type=int, default=1, help="... plus this many drawn from the rest")
    parser.add_argument("--splits", type=int, default=20, help="random 85/15 predictor splits")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON-lines file of per-training rows (resumable)")
    args = parser.parse_args()
    protocol = protocol_from_args(parser, args)
    data = DeviceData(protocol, args.device)
    base = TrainConfig(epochs=args.epochs, width=args.width, batch_size=args.batch_size, lr=args.lr,
                       flip=args.protocol != "digits", scores=("msp",), device=args.device)
    archs = SearchSpace().sample_many(args.archs, seed=args.seed)
    seeds = (args.seed, args.seed + 1)
    rows = load_rows(args.out)
    print(f"# {time.strftime('%Y-%m-%d')}, {args.protocol}, {args.device}, {len(data.train_y)} ID train, "
          f"{args.archs} archs, {args.epochs} epochs, width {args.width}; {len(rows)} rows already in {args.out}",
          flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    weights: dict[str, dict] = {}  # arch_hash -> state dict of the seed-s outlier-exposure training

    def train(g, objective: str, seed: int, teachers=None) -> dict:
        key = (g.arch_hash, objective, seed)
        if key not in rows:
            r = train_candidate(g, data, base.replace(objective=objective, seed=seed), teachers=teachers)
            rows[key] = {"arch": g.arch_hash, "objective": objective, "seed": seed, "auroc_msp": r["auroc_msp"],
                         "id_acc": r["id_acc"], "train_seconds": r["train_seconds"]}
            if key[1:] == ("oe", args.seed):
                weights[g.arch_hash] = r["state_dict"]
            with open(args.out, "a") as f:
                f.write(json.dumps(rows[key]) + "\n")
        return rows[key]

    for seed in seeds:
        for g in archs:
            train(g, "oe", seed)

    records = [{"arch_hash": g.arch_hash, "auroc_msp": rows[(g.arch_hash, "oe", args.seed)]["auroc_msp"],
                "checkpoint": g.arch_hash} for g in archs]
    chosen = choose_teachers(records, "auroc_msp", args.top, args.random, args.seed, iteration=1)
    by_hash = {g.arch_hash: g for g in archs}
    for r in chosen:
        g = by_hash[r["arch_hash"]]
        if g.arch_hash not in weights:  # resumed run: retrain the teacher (same seed, same weights on CPU)
            weights[g.arch_hash] = train_candidate(g, data, base.replace(objective="oe", seed=args.seed))["state_dict"]
    bundle = TeacherBundle([by_hash[r["arch_hash"]].to_json() for r in chosen],
                           [weights[r["arch_hash"]] for r in chosen], args.width)
    teachers = bundle.build(protocol.num_classes, protocol.in_channels, data.device)
    cache = TeacherCache.compute(teachers, data, temperature=20.0)
    print(f"# teachers {[r['arch_hash'] for r in chosen]} (AUROC {[round(r['auroc_msp'], 3) for r in chosen]})",
          flush=True)
    for seed in seeds:
        for g in archs:
            train(g, "distill", seed, teachers=cache)

    X = encode_many(archs)
    print(f"\n| objective | mean AUROC | mean ID acc | reliability τ (seed {seeds[0]} vs {seeds[1]}) | "
          f"predictor τ, seed-{seeds[0]} labels | predictor τ, 2-seed mean | median train s |")
    print("|---|---|---|---|---|---|---|")
    for objective in OBJECTIVES:
        y = np.array([[rows[(g.arch_hash, objective, s)]["auroc_msp"] for s in seeds] for g in archs])
        acc = [rows[(g.arch_hash, objective, s)]["id_acc"] for g in archs for s in seeds]
        secs = [rows[(g.arch_hash, objective, s)]["train_seconds"] for g in archs for s in seeds]
        reliability = kendalltau(y[:, 0], y[:, 1]).statistic

        def predictor_tau(labels: np.ndarray) -> str:
            taus = [validate("mlp", X, labels, seed=k)[1]["kendall_tau"] for k in range(args.splits)]
            return f"{statistics.mean(taus):.3f} ± {statistics.stdev(taus):.3f}"

        print(f"| {objective} | {y.mean():.3f} | {statistics.mean(acc):.3f} | {reliability:.3f} | "
              f"{predictor_tau(y[:, 0])} | {predictor_tau(y.mean(1))} | {statistics.median(secs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
