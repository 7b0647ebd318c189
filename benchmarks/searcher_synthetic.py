"""Searcher quality on a synthetic objective with a known optimum (not a test).

Objective: a hidden target genotype; f(g) = -(Hamming distance between the cell adjacency bits of g and of the
target) / (bits), so f(target) = 0 is the optimum; observed values add Gaussian noise (``--noise``).
Regret of a run = f(target) - f(best architecture by observed value), noise-free, so 0 is perfect.

Strategies at equal trial counts, each driven through the Ray Tune ``Searcher`` interface
(``suggest`` / ``on_trial_complete``, one trial at a time, without a Ray cluster):
``predictor`` (PredictorEvolutionSearcher), ``random``, ``aging`` (regularized evolution, no predictor),
``tpe`` (Optuna's TPE through Ray Tune's ``OptunaSearch``, one boolean per edge; an invalid cell is
repaired with the edge v0 -> v1). Prints median regret per strategy and, last, ``regret_ratio=<predictor/random>``.

    python benchmarks/searcher_synthetic.py --trials 100 --seeds 5
"""
from __future__ import annotations

import argparse
import collections
import logging
import statistics
import time

import numpy as np
from ray.tune.search import Searcher

from search_space import Cell, Genotype, SearchSpace
from search_space.searcher import PredictorEvolutionSearcher

SPACE = SearchSpace()
PAIRS = SPACE.edge_pairs


def bits(g: Genotype) -> np.ndarray:
    """Adjacency bits of the pruned cells, (3 * k(k-1)/2,)."""
    return np.array([[p in c.pruned().edges for p in PAIRS] for c in g.cells], dtype=float).ravel()


class Objective:
    def __init__(self, seed: int, noise: float):
        self.target = bits(SPACE.sample(seed + 10_000))
        self.noise, self.rng = noise, np.random.default_rng(seed + 20_000)

    def true(self, g: Genotype) -> float:
        return -float(np.abs(bits(g) - self.target).mean())

    def observe(self, g: Genotype) -> float:
        return self.true(g) + self.noise * float(self.rng.normal())


class RandomSearcher(Searcher):
    def __init__(self, seed: int):
        super().__init__(metric="score", mode="max")
        self.rng = np.random.default_rng(seed)

    def suggest(self, trial_id):
        return {"genotype": SPACE.sample(self.rng).to_json()}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


class AgingEvolution(Searcher):
    """Regularized evolution: tournament of ``sample`` from the last ``population`` results, mutate the winner."""

    def __init__(self, seed: int, population: int = 20, sample: int = 5):
        super().__init__(metric="score", mode="max")
        self.rng = np.random.default_rng(seed)
        self.population, self.sample = population, sample
        self.history: collections.deque = collections.deque(maxlen=population)
        self.pending = {}

    def suggest(self, trial_id):
        if len(self.history) < self.population:
            g = SPACE.sample(self.rng)
        else:
            idx = self.rng.choice(len(self.history), size=self.sample, replace=False)
            parent = max((self.history[i] for i in idx), key=lambda gv: gv[1])[0]
            g = SPACE.mutate(parent, self.rng)
        self.pending[trial_id] = g
        return {"genotype": g.to_json()}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.history.append((self.pending.pop(trial_id), result["score"]))


def tpe_searcher(seed: int):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {f"e{c}_{j}_{i}": tune.choice([0, 1]) for c in range(3) for j, i in PAIRS}
    return OptunaSearch(space=space, metric="score", mode="max", sampler=optuna.samplers.TPESampler(seed=seed))


def from_bits(config: dict) -> Genotype:
    cells = []
    for c in range(3):
        edges = {(j, i) for j, i in PAIRS if config[f"e{c}_{j}_{i}"]}
        if not any(j == 0 for j, _ in edges):
            edges.add((0, 1))  # repair an invalid cell
        cells.append(Cell(SPACE.sample(0).cells[0].ops, frozenset(edges)).pruned())
    return Genotype(tuple(cells))


def run(strategy: str, seed: int, trials: int, noise: float) -> float:
    objective = Objective(seed, noise)
    searcher = {
        "predictor": lambda: PredictorEvolutionSearcher(metric="score", mode="max", seed=seed, min_results=20,
                                                        refit_every=10),
        "random": lambda: RandomSearcher(seed),
        "aging": lambda: AgingEvolution(seed),
        "tpe": lambda: tpe_searcher(seed),
    }[strategy]()
    best_observed, best_true = -np.inf, None
    for t in range(trials):
        config = searcher.suggest(f"t{t}")
        g = Genotype.from_json(config["genotype"]) if "genotype" in config else from_bits(config)
        value = objective.observe(g)
        searcher.on_trial_complete(f"t{t}", {"score": value})
        if value > best_observed:
            best_observed, best_true = value, objective.true(g)
    return 0.0 - best_true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--strategies", default="predictor,random,aging,tpe")
    args = parser.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)
    medians = {}
    for strategy in args.strategies.split(","):
        start = time.perf_counter()
        regrets = [run(strategy, s, args.trials, args.noise) for s in range(args.seeds)]
        medians[strategy] = statistics.median(regrets)
        print(f"{strategy:<10} median regret {medians[strategy]:.4f}  per seed {[round(r, 4) for r in regrets]}  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    if "predictor" in medians and "random" in medians:
        print(f"regret_ratio={medians['predictor'] / medians['random']:.3f}")


if __name__ == "__main__":
    main()
