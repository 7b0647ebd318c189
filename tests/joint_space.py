"""Shared helpers for the joint architecture + hyperparameter search tests (test_searcher_contract.py,
test_searcher_joint.py, test_baseline_searchers_joint.py): the metric name, a param_space, the objectives, driving a
searcher trial by trial and the malformed-state cases every searcher refuses."""
import json
import math

import pytest
from ray import tune

METRIC = "auroc_msp"


def hp_space(without=()):
    """A param_space of every supported kind, nested, with constants (a fresh copy: Tune mutates domains); the
    top-level keys in ``without`` are left out."""
    space = {"optim": {"lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([64, 128]), "momentum": 0.9},
             "layers": tune.randint(1, 4), "dropout": tune.quniform(0.0, 0.5, 0.1), "width": tune.qlograndint(8, 64, 8),
             "epochs": 3, "name": "run"}
    return {key: value for key, value in space.items() if key not in without}


def objectives():
    """``edges`` (fraction of first-cell edges present, from the genotype JSON alone) and ``joint_value`` (best at
    lr = 1e-2, batch size 64, few layers, plus the ``edges`` term). Defined inside a function so that Ray pickles
    them by value for its workers, which can import neither this module nor, cheaply, ``search_space``."""
    def edges(config) -> float:
        return len(json.loads(config["genotype"])["cells"][0]["edges"]) / 15

    def joint_value(config) -> float:
        optim = config["optim"]
        return (edges(config) - abs(math.log10(optim["lr"]) + 2) - (optim["batch_size"] == 128) / 4
                - config["layers"] / 10)

    return edges, joint_value


edges, joint_value = objectives()


def joint(searcher, without=()):
    """``searcher`` given :func:`hp_space` (less ``without``) as Tune would give it; returns the searcher."""
    searcher.set_search_properties(None, None, hp_space(without))
    return searcher


def drive(searcher, steps, start=0, value=joint_value):
    """Suggest and complete ``steps`` trials one at a time, each scored by ``value(config)``; returns the configs."""
    out = []
    for t in range(start, start + steps):
        config = searcher.suggest(f"t{t}")
        out.append(config)
        searcher.on_trial_complete(f"t{t}", {METRIC: value(config)})
    return out


def previous_version(state):
    """A copy of ``state`` as written before trials stopped early, hyperparameters and budgets existed."""
    state = json.loads(json.dumps(state))
    for key in ("pruned", "hyperparameters"):
        del state[key]
    for key in ("full_budget", "budget_attr"):
        del state["settings"][key]
    return state


def assert_malformed_new_fields_refused(fresh, good, extra_bad=()):
    """``fresh.set_state`` refuses ``good`` with any of the new fields (pruned trials, hyperparameters, budget
    settings) malformed, plus the ``(key, value)`` pairs in ``extra_bad``, with a one-line error starting with the
    class's name, and changes nothing."""
    hp = good["hyperparameters"]
    pending = next(iter(good["pending"]))
    bad = [("pruned", {"x": 1}), ("pruned", [[good["pending"][pending], float("nan")]]),
           ("hyperparameters", {**hp, "extra": 1}),
           ("hyperparameters", {**hp, "pending": {"not-pending": hp["pending"][pending]}}),
           ("hyperparameters", {**hp, "dimensions": [{"path": ["x"], "kind": "float"}]}),
           ("settings", {**good["settings"], "full_budget": 0}), ("settings", {**good["settings"], "budget_attr": ""}),
           *extra_bad]
    expected = fresh.get_state()
    for key, value in bad:
        with pytest.raises(ValueError, match=rf"^{type(fresh).__name__} state: ") as info:
            fresh.set_state({**good, key: value})
        assert "\n" not in str(info.value), key
    assert fresh.get_state() == expected
