"""The Ray Tune searchers over DCSOD genotypes by name: :data:`SEARCHERS`, the registry a preset's
``search.searcher`` names, as ``predictor.name`` names a predictor.

Every entry is a ``ray.tune.search.Searcher`` class taking ``metric``, ``mode`` and the keyword arguments ``space``,
``max_concurrent``, ``full_budget``, ``budget_attr`` and ``seed``; each takes its own settings besides (see the
class). ``SEARCHERS.build(name, metric=..., mode=..., **settings)`` checks them against the class's signature
(a :class:`~search_space.registry.RegistryError`, one line, for an unknown name or argument).

>>> searcher = SEARCHERS.build("random", metric="auroc_msp", mode="max", seed=0)
>>> sorted(searcher.suggest("trial-0"))
['genotype']

Importing this module imports Ray (the searchers are Ray Tune ``Searcher`` subclasses).
"""
from __future__ import annotations

from .baseline_searchers import RandomSearcher, RegularizedEvolutionSearcher
from .registry import Registry
from .searcher import PredictorEvolutionSearcher

#: Searcher name -> class: DCSOD's predictor-guided evolution and Table 4.1's baselines.
SEARCHERS = Registry("searcher")
SEARCHERS.register("predictor-evolution")(PredictorEvolutionSearcher)
SEARCHERS.register("random")(RandomSearcher)
SEARCHERS.register("regularized-evolution")(RegularizedEvolutionSearcher)
