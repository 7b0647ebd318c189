"""Predictor fit and predict time on CPU: fit on 2,000 sampled genotypes, predict 10^5 encodings; then one
Metropolis evolution (32 chains x 30 generations, the searcher's defaults) over the fitted mlp.

    python benchmarks/predictor_speed.py
"""
from __future__ import annotations

import time

import numpy as np

from search_space import PREDICTORS, SearchSpace, encode_many, evolve, make_predictor


def main() -> None:
    X = encode_many(SearchSpace().sample_many(2000, seed=0))
    y = X[:, :15].mean(1) + 0.01 * np.random.default_rng(0).normal(size=len(X))
    big = np.tile(X, (50, 1))  # 10^5 rows
    print(f"{'predictor':<14} {'fit 2000 s':>10} {'predict 1e5 s':>14}")
    for name in PREDICTORS:
        p = make_predictor(name)
        start = time.perf_counter()
        p.fit(X, y, seed=0)
        fit = time.perf_counter() - start
        start = time.perf_counter()
        p.predict(big)
        print(f"{name:<14} {fit:10.2f} {time.perf_counter() - start:14.3f}")
    mlp = make_predictor("mlp").fit(X, y, seed=0)
    start = time.perf_counter()
    evolve(SearchSpace(), lambda gs: mlp.predict(encode_many(gs)), population=32, generations=30, top_k=5, seed=0)
    print(f"evolution 32 x 30 over the mlp: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
