"""Ray Tune overhead per candidate: wall time outside the trainable, on reused actors.

Runs ``--trials`` tiny digits candidates through ``trainables.image.tune_trainable.candidate_trainable`` on a local
Ray (``--cpus``), ``reuse_actors=True``, for each concurrency in ``--concurrency``. Overhead per trial =
(concurrency × Tuner wall − Σ time inside the trainable) / trials, i.e. the time a slot spends not training;
the first actor's start-up is included (amortised), Ray's own start is not. Gap = mean wall time a reused
worker waits between the end of one trial and the start of its next (``pipelines.nas.tune_stage.between_trials``).

``--checkpoint`` reports the trained weights as a Tune checkpoint (as every pipeline stage does);
``--teachers N`` hands an ensemble of N random-weight teachers to every trial through ``tune.with_parameters``
and trains by distillation (as the distill and search stages do).

    python benchmarks/ray_overhead.py --trials 24 --concurrency 1,2
    python benchmarks/ray_overhead.py --trials 24 --concurrency 2 --checkpoint --teachers 11
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time

import ray
from ray import tune

from pipelines.nas.tune_stage import between_trials
from search_space import SearchSpace, build_network
from trainables.image.tune_trainable import TeacherBundle, candidate_trainable


def random_teachers(n: int, width: int, seed: int) -> TeacherBundle | None:
    """``n`` untrained digits networks (6 classes, 1 channel) as a bundle; None for ``n == 0``."""
    if n == 0:
        return None
    genotypes = SearchSpace().sample_many(n, seed=seed + 1)
    return TeacherBundle([g.to_json() for g in genotypes],
                         [build_network(g, 6, 1, width).state_dict() for g in genotypes], width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--checkpoint", action="store_true", help="report the weights as a Tune checkpoint")
    parser.add_argument("--teachers", type=int, default=0, help="distill from this many teachers (0: plain CE)")
    parser.add_argument("--teacher-width", type=int, default=4, help="teacher width (32: a CIFAR-sized bundle)")
    args = parser.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"# ray {ray.__version__}, {args.cpus} CPUs, ray.init {time.perf_counter() - start:.1f} s, "
          f"{time.strftime('%Y-%m-%d')}")
    genotypes = [g.to_json() for g in SearchSpace().sample_many(args.trials, seed=0)]
    train = {"epochs": 1, "width": 4, "batch_size": 64, "flip": False, "scores": ["msp"]}
    teachers = random_teachers(args.teachers, args.teacher_width, seed=0)
    if teachers is not None:
        train.update(objective="distill", teacher_mode="cached")
        size = sum(t.numel() * t.element_size() for sd in teachers.state_dicts for t in sd.values())
        print(f"# teachers: {args.teachers} x width {args.teacher_width}, {size / 1e6:.1f} MB of weights, cached")
    print(f"# checkpoint {args.checkpoint}")
    for c in [int(x) for x in args.concurrency.split(",")]:
        space = {"genotype": tune.grid_search(genotypes), "protocol": "digits", "protocol_options": {},
                 "train": train, "seed": 0, "stage": "warmup", "iteration": 0,
                 "checkpoint": args.checkpoint}
        with tempfile.TemporaryDirectory() as storage:
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(candidate_trainable, teachers=teachers),
                                   {"cpu": args.cpus / c}), param_space=space,
                tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=c),
                run_config=tune.RunConfig(storage_path=storage, verbose=0))
            start = time.perf_counter()
            grid = tuner.fit()
            wall = time.perf_counter() - start
            frame = grid.get_dataframe()
        gap = between_trials([r.metrics for r in grid])
        inside = float(frame["trainable_seconds"].sum())
        overhead = (c * wall - inside) / len(frame)
        print(f"concurrency {c}: {len(frame)} trials in {wall:.1f} s; inside trainable {inside / len(frame):.2f} s "
              f"per trial (training {frame['train_seconds'].mean():.2f} s); overhead {overhead:.2f} s per trial; "
              f"gap {gap:.2f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
