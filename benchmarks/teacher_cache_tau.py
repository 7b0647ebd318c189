"""Does the cached teacher path change the students' AUROC ranking? (Kendall tau, CIFAR-10 class split.)

Trains ``--teachers`` architectures with outlier exposure, then ``--students`` (>= 10) sampled
architectures with outlier distillation (eq. 4.11) against that ensemble three times each:
online teachers (seed s), cached teachers (seed s), and online again with seed s+1. It prints
tau(online, cached) next to the noise floor tau(online seed s, online seed s+1): the cached path is
harmless for ranking when the first is not clearly below the second. Also prints training seconds per path.

    python benchmarks/teacher_cache_tau.py --data ../shared/data/cifar10-train-jpeg.zip               # GPU
    python benchmarks/teacher_cache_tau.py --data ... --images 1500 --aux 3000 --epochs 3 --width 8 \
        --teachers 3 --students 10 --eval-images 1000                                   # CPU
    python benchmarks/teacher_cache_tau.py --protocol digits --epochs 20 --width 16 --teachers 5 \
        --students 12                                                                   # CPU proxy, embedded data
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_protocol import add_protocol_args, protocol_from_args  # benchmarks/ is on sys.path when run as a script
from scipy.stats import kendalltau

from search_space import SearchSpace, build_network
from trainables.image import DeviceData, TeacherCache, TrainConfig, train_candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_args(parser, default="cifar10-split")
    parser.add_argument("--aux", type=int, default=10000, help="auxiliary outlier images kept")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--teachers", type=int, default=11)
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-images", type=int, default=None, help="cap ID/OOD validation sets (CPU runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    protocol = protocol_from_args(parser, args)
    protocol.aux = protocol.aux[: args.aux]
    if args.eval_images:  # random subsets of the validation sets for slow devices (parts are sorted by class)
        g = torch.Generator().manual_seed(args.seed)
        keep = torch.randperm(len(protocol.id_val[1]), generator=g)[: args.eval_images]
        protocol.id_val = tuple(t[keep] for t in protocol.id_val)
        keep = torch.randperm(len(protocol.ood["val"]), generator=g)[: args.eval_images]
        protocol.ood["val"] = protocol.ood["val"][keep]
    data = DeviceData(protocol, args.device)
    card = torch.cuda.get_device_name() if data.device.type == "cuda" else "CPU"
    print(f"# {card}, {time.strftime('%Y-%m-%d')}, {args.protocol}, {len(data.train_y)} ID train, {len(data.aux)} aux, "
          f"{args.epochs} epochs, width {args.width}, {args.teachers} teachers, {args.students} students", flush=True)
    base = TrainConfig(epochs=args.epochs, width=args.width, device=args.device, scores=("msp", "energy"))
    pool = SearchSpace().sample_many(args.teachers + args.students, seed=args.seed)

    teachers = []
    for g in pool[: args.teachers]:
        r = train_candidate(g, data, base.replace(objective="oe"))
        model = build_network(g, protocol.num_classes, protocol.in_channels, args.width).to(data.device)
        model.load_state_dict(r["state_dict"])
        teachers.append(model)
        print(json.dumps({"teacher": g.arch_hash, "auroc_msp": r["auroc_msp"], "id_acc": r["id_acc"]}), flush=True)

    distill = base.replace(objective="distill")
    start = time.perf_counter()
    cache = TeacherCache.compute(teachers, data, temperature=20.0)
    cache_seconds = time.perf_counter() - start
    rows = []
    for g in pool[args.teachers:]:
        row = {"arch": g.arch_hash}
        for path, config, teach in [("online", distill.replace(seed=args.seed), teachers),
                                    ("cached", distill.replace(seed=args.seed), cache),
                                    ("online_reseed", distill.replace(seed=args.seed + 1), teachers)]:
            r = train_candidate(g, data, config, teachers=teach)
            row[path] = r["auroc_msp"]
            row[f"{path}_seconds"] = r["train_seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    def tau(a: str, b: str) -> float:
        return float(kendalltau([r[a] for r in rows], [r[b] for r in rows]).statistic)

    print(f"\ncache computed once in {cache_seconds:.1f} s")
    for path in ("online", "cached"):
        print(f"{path:<7} median training {statistics.median(r[f'{path}_seconds'] for r in rows):.1f} s, "
              f"mean AUROC(MSP) {statistics.mean(r[path] for r in rows):.4f}")
    print(f"kendall_tau_online_vs_cached={tau('online', 'cached'):.3f}  "
          f"noise_floor_tau_online_vs_reseeded={tau('online', 'online_reseed'):.3f}  (n={len(rows)})")


if __name__ == "__main__":
    main()
