"""Settings of ``pipelines/experiments.py``: the presets of ``presets/experiments.yaml`` over a DCSOD pipeline
preset that every method of an experiment shares, and the budget every method is held to.

>>> exp, cfg = load_experiment("ci", ["seeds=[0, 1, 2]", "dcsod.train.epochs=2"])
>>> exp["seeds"], cfg["train"]["epochs"], exp["pipeline"], cfg["preset"]
([0, 1, 2], 2, 'ci', 'ci')
>>> search_budget(cfg)   # warmup 6 + distill 1 x 6 + search 2
14

Budget: every search method trains :func:`search_budget` candidates at the pipeline's per-candidate budget
(``train`` on ``search_fraction`` of the ID training images); the cost of running teachers during
distillation is not counted (:mod:`pipelines.thesis.cost` counts it for the cost estimate). Every method's winner,
and every standard architecture, is then retrained at ``final.epochs`` once per seed.
"""
from __future__ import annotations

import json
import re

from pipelines.common.settings import PRESETS_DIR, ConfigError, PresetFile, check, flatten, is_int
from pipelines.nas.settings import DCSOD_PRESETS, check_data

#: The search methods of Table 4.1 (pipelines/thesis/methods.py registers one class per name).
METHOD_NAMES = ("random", "regularized-evolution", "ce-predictor", "dcsod")


def search_budget(cfg: dict) -> int:
    """Candidate trainings of one DCSOD run with settings ``cfg``: warmup N, distillation (Alg. 2: N per
    iteration; Alg. 3: q per iteration plus the final retrain of the pool, counted without dead
    architectures dropped) and search M."""
    n, d, m = cfg["warmup"]["n"], cfg["distill"], cfg["search"]["trials"]
    if d["iterations"] == 0:
        distill = 0
    elif d["algorithm"] == "alg2":
        distill = n * d["iterations"]
    else:
        distill = 2 * d["q"] * d["iterations"] + n
    return n + distill + m


def validate_experiment(exp: dict) -> None:
    """Check the experiment's own keys (the DCSOD part is checked by its own presets) for what the kinds of the
    defaults cannot say (:func:`pipelines.common.settings.check_types` checked those first); one-line
    ConfigError."""
    _check_methods(exp)
    _check_standard(exp["standard"])
    _check_regularized_evolution(exp["regularized_evolution"])
    _check_table_4_2(exp["table_4_2"])
    check(is_int(exp["bootstrap"], 100), f"bootstrap: expected an integer >= 100, got {exp['bootstrap']!r}")
    _check_noise(exp["noise"])
    _check_ablation(exp["ablation"]["rows"])
    _check_landscape(exp["landscape"])
    _check_tradeoff(exp["tradeoff"])
    _check_seconds(exp["seconds_per_candidate"])


#: The keys of ``seconds_per_candidate`` (pipelines/thesis/cost.py reads them; a null default: any kind).
SECONDS_KEYS = ("seconds", "batch_size", "device", "measured", "assumed")


def _check_seconds(s: dict | None) -> None:
    """``seconds_per_candidate``: null, or positive ``seconds`` on a named ``device`` at ``batch_size`` (null: the
    pipeline's) with its source: ``measured: {file, date}`` (a file of this repository, a YYYY-MM-DD date) or,
    when not measured, ``assumed`` (one line saying where the figure comes from)."""
    if s is None:
        return
    where = "seconds_per_candidate"
    check(isinstance(s, dict) and set(s) <= set(SECONDS_KEYS) and "seconds" in s,
          f"{where}: expected null or a mapping of {', '.join(SECONDS_KEYS)}, got {s!r}")
    seconds, batch, device = s["seconds"], s.get("batch_size"), s.get("device")
    check(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0,
          f"{where}.seconds: expected a positive number, got {seconds!r}")
    check(batch is None or is_int(batch, 1), f"{where}.batch_size: expected null or an integer >= 1, got {batch!r}")
    check(isinstance(device, str) and device.strip() != "", f"{where}.device: expected the card it is for, got "
          f"{device!r}")
    measured, assumed = s.get("measured"), s.get("assumed")
    check((measured is None) != (assumed is None), f"{where}: expected either measured: {{file, date}} (measured "
          "here) or assumed: SOURCE (not measured), not both or neither")
    if assumed is not None:
        check(isinstance(assumed, str) and assumed.strip() != "", f"{where}.assumed: expected one line saying where "
              f"the figure comes from, got {assumed!r}")
        return
    check(isinstance(measured, dict) and set(measured) == {"file", "date"},
          f"{where}.measured: expected {{file: PATH, date: YYYY-MM-DD}}, got {measured!r}")
    path = PRESETS_DIR.parent.parent / str(measured["file"])
    check(path.is_file(), f"{where}.measured.file: no such file in the repository: {measured['file']!r}")
    check(re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(measured["date"])) is not None,
          f"{where}.measured.date: expected YYYY-MM-DD, got {measured['date']!r}")


def _distinct_seeds(seeds: list, least: int) -> bool:
    """At least ``least`` distinct integers >= 0."""
    return len(seeds) >= least and all(is_int(s, 0) for s in seeds) and len(set(seeds)) == len(seeds)


def _check_methods(exp: dict) -> None:
    """Distinct seeds and distinct registered search methods."""
    seeds = exp["seeds"]
    check(_distinct_seeds(seeds, 1), f"seeds: expected a list of distinct integers >= 0, got {seeds!r}")
    methods = exp["methods"]
    check(all(m in METHOD_NAMES for m in methods) and len(set(methods)) == len(methods),
          f"methods: expected a list of distinct names out of {', '.join(METHOD_NAMES)}, got {methods!r}")


def _check_standard(standard: list[dict]) -> None:
    """Every entry names a standard architecture that builds with its arguments."""
    from search_space.standard_models import StandardModel

    for i, spec in enumerate(standard):
        check(set(spec) <= {"model", "args"} and "model" in spec,
              f"standard[{i}]: expected {{model: NAME, args: {{...}}}}, got {spec!r}")
        try:
            StandardModel.from_dict(spec)
        except ValueError as err:
            raise ConfigError(f"standard[{i}]: {err}") from None


def _check_regularized_evolution(re: dict) -> None:
    check(is_int(re["population"], 2) and is_int(re["sample_size"], 1) and re["sample_size"] <= re["population"],
          f"regularized_evolution: expected population >= 2 and 1 <= sample_size <= population, got {re}")


def _check_table_4_2(t: dict) -> None:
    """An open section (``n`` may be null): its keys are checked by :func:`load_experiment`."""
    check(t["n"] is None or is_int(t["n"], 4), f"table_4_2.n: expected null or an integer >= 4, got {t['n']!r}")
    check(is_int(t["folds"], 2), f"table_4_2.folds: expected an integer >= 2, got {t['folds']!r}")
    check(is_int(t["repeats"], 1), f"table_4_2.repeats: expected an integer >= 1, got {t['repeats']!r}")


def _check_noise(n: dict) -> None:
    """fig-4.3: architectures, seeds, registered objectives and scores, and the fine-tune protocol."""
    from pipelines.thesis.noise_study import check_noise_protocol
    from trainables.image import OBJECTIVES, SCORES

    check_noise_protocol(n)

    check(is_int(n["architectures"], 2), f"noise.architectures: expected an integer >= 2, got {n['architectures']!r}")
    check(_distinct_seeds(n["seeds"], 2), f"noise.seeds: expected >= 2 distinct integers, got {n['seeds']!r}")
    for key, registry in (("objectives", OBJECTIVES), ("scores", SCORES)):
        values = n[key]
        check(len(values) > 0 and all(v in registry for v in values) and len(set(values)) == len(values),
              f"noise.{key}: expected distinct names out of {', '.join(registry)}, got {values!r}")


def _check_ablation(rows: list[list]) -> None:
    """table-4.3: rows of (λ, α, β)."""
    def fraction(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1

    check(len(rows) > 0 and all(
        len(r) == 3 and isinstance(r[0], (int, float)) and r[0] >= 0 and fraction(r[1])
        and (r[2] is None or fraction(r[2])) for r in rows),
        f"ablation.rows: expected a list of [lam >= 0, alpha in [0, 1], beta in [0, 1] or null], got {rows!r}")


#: ``landscape.loss`` (fig-4.5): ``own`` (each network under its training objective; the thesis's) or ``ce``
#: (both under cross-entropy).
LANDSCAPE_LOSSES = ("own", "ce")


def _check_landscape(ls: dict) -> None:
    """fig-4.5: an odd grid, a positive span, some images."""
    check(is_int(ls["steps"], 3) and ls["steps"] % 2 == 1, f"landscape.steps: expected an odd integer >= 3, "
          f"got {ls['steps']!r}")
    check(ls["span"] > 0, f"landscape.span: expected a positive number, got {ls['span']!r}")
    check(is_int(ls["images"], 1), f"landscape.images: expected an integer >= 1, got {ls['images']!r}")
    check(ls["loss"] in LANDSCAPE_LOSSES, f"landscape.loss: expected one of {', '.join(LANDSCAPE_LOSSES)}, "
          f"got {ls['loss']!r}")


def _check_tradeoff(t: dict) -> None:
    """fig-4.4: a budget (null: the pipeline's) and the distill iterations."""
    check(t["budget"] is None or is_int(t["budget"], 4), f"tradeoff.budget: expected null or an integer >= 4, "
          f"got {t['budget']!r}")
    check(len(t["iterations"]) > 0 and all(is_int(i, 0) for i in t["iterations"]),
          f"tradeoff.iterations: expected a list of integers >= 0, got {t['iterations']!r}")


EXPERIMENT_PRESETS = PresetFile(PRESETS_DIR / "experiments.yaml",
                                validate=validate_experiment, open_sections=("dcsod", "table_4_2"))


def load_experiment(preset: str, overrides: list[str] | None = None) -> tuple[dict, dict]:
    """``(experiment settings, DCSOD settings)`` of ``preset`` with ``overrides`` applied; keys under
    ``dcsod.`` change the shared DCSOD settings (validated like ``pipelines/dcsod.py``'s)."""
    exp = EXPERIMENT_PRESETS.load(preset, overrides)
    check(set(exp["table_4_2"]) == {"n", "folds", "repeats"},
          f"table_4_2: expected keys n, folds and repeats, got {sorted(exp['table_4_2'])}")
    names = DCSOD_PRESETS.names()
    check(exp["pipeline"] in names, f"pipeline: unknown DCSOD preset {exp['pipeline']!r}; valid: {', '.join(names)}")
    sets = [f"{key}={json.dumps(value)}" for key, value in flatten(exp["dcsod"]).items()]
    try:
        cfg = DCSOD_PRESETS.load(exp["pipeline"], sets)
    except ConfigError as err:
        raise ConfigError(f"dcsod: {err}") from None
    check_data(cfg)
    return exp, cfg


def preset_names() -> list[str]:
    return EXPERIMENT_PRESETS.names()
