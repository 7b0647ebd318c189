"""DCSOD main job: ``python pipelines/dcsod.py`` (locally) or
``ray job submit --working-dir . -- python pipelines/dcsod.py`` (on a Ray cluster).

Status: only the search space exists yet. This entry point is a **dry run**: it loads the embedded
``digits`` protocol, samples the warm-up population and describes it, then prints the stages that the
pipeline issues will implement. It trains nothing and writes nothing; it says so and exits 0.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from search_space import SearchSpace, describe

# Embedded near-OOD class split of scikit-learn's digits (DESIGN.md): ID / auxiliary outliers / OOD test.
DIGITS_SPLIT = {"id": (0, 1, 2, 3, 4, 5), "aux": (6, 7), "ood": (8, 9)}

STAGES = (
    ("warmup", "train N sampled architectures with CE + outlier exposure, evaluate OOD AUROC"),
    ("distill", "iterations of evolving distillation: teachers = top K% + random k%, retrain with eq. 4.11"),
    ("predictor", "fit the MLP predictor (MSE + ranking loss) on the last iteration's (arch, AUROC) pairs"),
    ("search", "predictor-guided Metropolis evolution proposes M architectures, each trained for real"),
    ("final", "retrain the best measured architecture with the final teachers; register it in MLflow"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DCSOD pipeline (dry run until the pipeline lands)")
    parser.add_argument("--n", type=int, default=8, help="warm-up architectures to sample (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=6, help="vertices per cell incl. the input vertex")
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    counts = {part: int(np.isin(labels, classes).sum()) for part, classes in DIGITS_SPLIT.items()}
    print(f"protocol digits: {len(images)} images 8x8x1; ID {DIGITS_SPLIT['id']} = {counts['id']}, "
          f"aux outliers {DIGITS_SPLIT['aux']} = {counts['aux']}, OOD test {DIGITS_SPLIT['ood']} = {counts['ood']}")

    try:
        space = SearchSpace(k=args.k)
        size = space.size()
        population = space.sample_many(args.n, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"search space k={args.k}: 2^{size['edge_configurations_log2']} edge configurations, "
          f"{size['distinct_networks']:.3e} distinct networks after pruning")
    print(f"warm-up population (seed {args.seed}), described at 8x8x1 input, 6 classes, width 32:")
    for g in population:
        info = describe(g, num_classes=len(DIGITS_SPLIT["id"]), in_channels=1, input_size=8)
        print(f"  {info['arch_hash']}  live ops/cell {info['live_operators']}  "
              f"params {info['params']:>9,}  FLOPs {info['flops']:>12,}")
    print("stages the pipeline will run:")
    for name, what in STAGES:
        print(f"  {name:<9} {what}")
    print("DRY RUN: training, distillation, search and the MLflow registry are not implemented yet "
          "(open issues 3-5). Nothing was trained and nothing was written.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
