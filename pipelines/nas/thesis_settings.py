"""The thesis's DCSOD settings, and which of them a run uses.

:data:`THESIS_SETTINGS` lists every setting the thesis fixes: ``method`` settings (how DCSOD works) and
``budget`` settings (how much it trains). The ``*-thesis`` presets use every method setting; the other presets
keep this project's documented defaults, and DESIGN.md's table "The thesis's settings against the defaults"
gives the reason for each difference (a test keeps that table and this list in step). :func:`against_thesis`
compares a run's effective settings (defaults of the trainer and the predictor included) with the list;
best.json and report.md carry the result.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThesisSetting:
    """``key``: the dotted setting (``train.*`` are :class:`trainables.image.TrainConfig` fields,
    ``predictor.args.*`` the predictor's keyword arguments); ``thesis``: its value there; ``where``: the place
    in the thesis; ``kind``: ``method`` or ``budget``."""

    key: str
    thesis: Any
    where: str
    kind: str = "method"


THESIS_SETTINGS = (
    ThesisSetting("space.residual", False, "eq. 4.6: a cell is a plain DAG, no path around it"),
    ThesisSetting("warmup.objective", "oe", "Alg. 2: warmup with CE + outlier exposure"),
    ThesisSetting("search_fraction", 0.5, "§4.4.1: search stages train on half of the ID images"),
    ThesisSetting("distill.algorithm", "alg2", "Alg. 2: every iteration retrains the pool"),
    ThesisSetting("distill.temperature", 20.0, "eq. 4.11: T = 20"),
    ThesisSetting("distill.alpha", 0.5, "eq. 4.11 with outliers: (λ, α, β) = (0.5, 0.5, 0.2)"),
    ThesisSetting("distill.beta", 0.2, "eq. 4.11 with outliers: (λ, α, β) = (0.5, 0.5, 0.2)"),
    ThesisSetting("distill.lam", 0.5, "eq. 4.11 with outliers: (λ, α, β) = (0.5, 0.5, 0.2)"),
    ThesisSetting("distill.t_squared", False, "eq. 4.11: L_DS without a T² factor"),
    ThesisSetting("predictor.name", "mlp", "§4.3: an MLP predictor"),
    ThesisSetting("predictor.args.rank_weight", 1.0, "§4.3: MSE plus the ranking loss, summed"),
    ThesisSetting("search.reference", "best", "§4.3.1: a proposal is compared with the best so far"),
    ThesisSetting("final.champion", "optimum", "Alg. 2/3: the EA's optimum under the final predictor, retrained"),
    ThesisSetting("warmup.n", 2000, "§4.4.1: N = 2000", "budget"),
    ThesisSetting("distill.iterations", 3, "§4.4.1: 3 iterations", "budget"),
    ThesisSetting("distill.top", 10, "§4.4.1: the top 10 architectures as teachers", "budget"),
    ThesisSetting("distill.random", 1, "§4.4.1: plus 1 random", "budget"),
    ThesisSetting("train.epochs", 20, "§4.4.1: 20 epochs per candidate", "budget"),
    ThesisSetting("train.lr", 0.1, "§4.4.1: SGD, learning rate 0.1", "budget"),
    ThesisSetting("train.batch_size", 128, "§4.4.1: batch 128", "budget"),
    ThesisSetting("final.epochs", 300, "§4.4.1: the final retrain, 300 epochs", "budget"),
)

#: Marks a setting the run's components do not have (e.g. ``rank_weight`` of a ridge predictor).
NOT_APPLICABLE = "n/a"


def effective(cfg: dict, key: str) -> Any:
    """The value ``key`` takes in a run with settings ``cfg``, defaults of the trainer and predictor included."""
    if key.startswith("train."):
        from pipelines.nas.settings import train_config

        return getattr(train_config(cfg), key.removeprefix("train."))
    if key.startswith("predictor.args."):
        from search_space import PREDICTORS

        name = key.removeprefix("predictor.args.")
        if name in cfg["predictor"]["args"]:
            return cfg["predictor"]["args"][name]
        parameter = inspect.signature(PREDICTORS[cfg["predictor"]["name"]]).parameters.get(name)
        return NOT_APPLICABLE if parameter is None else parameter.default
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool | str):
        return float(a) == float(b) and isinstance(b, bool) == isinstance(a, bool)
    return a == b


def against_thesis(cfg: dict) -> dict:
    """``{"method": {"same": [keys], "differ": {key: {"thesis", "run"}}}, "budget": {...}}`` for best.json."""
    out: dict = {kind: {"same": [], "differ": {}} for kind in ("method", "budget")}
    for s in THESIS_SETTINGS:
        run = effective(cfg, s.key)
        if _same(s.thesis, run):
            out[s.kind]["same"].append(s.key)
        else:
            out[s.kind]["differ"][s.key] = {"thesis": s.thesis, "run": run}
    return out


def thesis_lines(comparison: dict) -> list[str]:
    """report.md's section on the thesis's settings, from :func:`against_thesis`'s result."""
    method, budget = comparison["method"], comparison["budget"]
    n = len(method["same"]) + len(method["differ"])
    if not method["differ"]:
        head = f"All {n} method settings are the thesis's (DCSOD as written)."
    else:
        head = (f"{len(method['same'])} of {n} method settings are the thesis's; these are not (DESIGN.md gives the "
                "reason for each default):")
    lines = ["## Against the thesis's DCSOD", "", head, ""]
    if method["differ"]:
        lines += [f"- `{k}`: thesis {v['thesis']!r}, this run {v['run']!r}" for k, v in method["differ"].items()]
        lines.append("")
    if budget["differ"]:
        lines.append("Budget differences: " + "; ".join(f"`{k}` {v['run']!r} (thesis {v['thesis']!r})"
                                                        for k, v in budget["differ"].items()) + ".")
    else:
        lines.append("The budget is the thesis's.")
    return [*lines, ""]
