"""Ray Tune overhead per candidate: wall time outside the trainable, on reused actors.

Runs ``--trials`` tiny digits candidates through ``trainables.tune_trainable.candidate_trainable`` on a local
Ray (``--cpus``), ``reuse_actors=True``, for each concurrency in ``--concurrency``. Overhead per trial =
(concurrency × Tuner wall − Σ time inside the trainable) / trials, i.e. the time a slot spends not training;
the first actor's start-up is included (amortised), Ray's own start is not.

    python benchmarks/ray_overhead.py --trials 24 --concurrency 1,2
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time

import ray
from ray import tune

from search_space import SearchSpace
from trainables.tune_trainable import candidate_trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"# ray {ray.__version__}, {args.cpus} CPUs, ray.init {time.perf_counter() - start:.1f} s, "
          f"{time.strftime('%Y-%m-%d')}")
    genotypes = [g.to_json() for g in SearchSpace().sample_many(args.trials, seed=0)]
    train = {"epochs": 1, "width": 4, "batch_size": 64, "flip": False, "scores": ["msp"]}
    for c in [int(x) for x in args.concurrency.split(",")]:
        space = {"genotype": tune.grid_search(genotypes), "protocol": "digits", "protocol_options": {},
                 "train": train, "seed": 0, "stage": "warmup", "iteration": 0}
        with tempfile.TemporaryDirectory() as storage:
            tuner = tune.Tuner(
                tune.with_resources(candidate_trainable, {"cpu": args.cpus / c}), param_space=space,
                tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=c),
                run_config=tune.RunConfig(storage_path=storage, verbose=0))
            start = time.perf_counter()
            frame = tuner.fit().get_dataframe()
            wall = time.perf_counter() - start
        inside = float(frame["trainable_seconds"].sum())
        overhead = (c * wall - inside) / len(frame)
        print(f"concurrency {c}: {len(frame)} trials in {wall:.1f} s; inside trainable {inside / len(frame):.2f} s "
              f"per trial (training {frame['train_seconds'].mean():.2f} s); overhead {overhead:.2f} s per trial")
    ray.shutdown()


if __name__ == "__main__":
    main()
