"""Teacher ensembles of evolving distillation: the top of the evaluated pool plus a few random others.

>>> chosen = choose_teachers(records, "auroc_msp", top=10, random=1, seed=0, iteration=1)   # doctest: +SKIP
>>> bundle = load_bundle(chosen, width=32)                                                 # doctest: +SKIP
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.common.rundir import RunStopped
from pipelines.nas.settings import parse_count
from trainables.image.tune_trainable import TeacherBundle, load_weights


class NoUsableCandidates(RunStopped):
    """Every candidate of a stage failed (or none reported the metric): the workflow cannot go on."""


def usable(records: list[dict], metric: str) -> list[dict]:
    """Records with trained weights and a finite ``metric``."""
    return [r for r in records if r.get("checkpoint") and r.get(metric) is not None and math.isfinite(r[metric])]


def choose_teachers(records: list[dict], metric: str, top: int | str, random: int | str, seed: int,
                    iteration: int) -> list[dict]:
    """The ``top`` best records by ``metric`` (higher = better; ties broken by arch_hash) and ``random`` more
    drawn without replacement from the rest with a generator seeded by ``(seed, iteration)``.
    ``top``/``random`` are counts or percentages of the usable pool (``"0.5%"``). Raises
    :class:`NoUsableCandidates` when no record is usable."""
    pool = sorted(usable(records, metric), key=lambda r: (-r[metric], r["arch_hash"]))
    if not pool:
        raise NoUsableCandidates(f"no evaluated architecture with weights and a finite {metric} to use as a teacher "
                                 "(every candidate failed: see the FAILED runs in MLflow and stages/*.json)")
    n_top = min(len(pool), parse_count(top, len(pool)))
    rest = pool[n_top:]
    n_random = min(len(rest), parse_count(random, len(pool)))
    rng = np.random.default_rng([seed, iteration])
    picked = sorted(rng.choice(len(rest), size=n_random, replace=False).tolist()) if n_random else []
    return pool[:n_top] + [rest[i] for i in picked]


def load_bundle(chosen: list[dict], width: int) -> TeacherBundle:
    """The chosen records' genotypes and trained weights as a :class:`TeacherBundle`."""
    from ray.tune import Checkpoint

    return TeacherBundle(genotypes=[r["genotype"] for r in chosen],
                         state_dicts=[load_weights(Checkpoint(r["checkpoint"])) for r in chosen], width=width,
                         lineages=[r.get("lineage") or "" for r in chosen])
