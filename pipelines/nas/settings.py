"""DCSOD's settings: the presets of ``presets/dcsod.yaml`` (:data:`DCSOD_PRESETS`) and their validation.

>>> cfg = load_config("quick", ["warmup.n=4", "train.epochs=2"])
>>> cfg["warmup"]["n"], cfg["train"]["epochs"], dataset_name(cfg)
(4, 2, 'digits')

Three sections are open dictionaries whose keys are checked against what they configure: ``train`` (fields of
:class:`trainables.image.TrainConfig`), ``protocol_options`` (keyword arguments of the protocol) and
``predictor.args`` (the predictor's). Everything that can be checked before Ray starts is checked here: registry
names and arguments (protocol, predictor, objectives, scores), ranges, and the ranking metric.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from pipelines.common.settings import PRESETS_DIR, ConfigError, PresetFile, check, is_int

ALGORITHMS = ("alg2", "alg3")
REFERENCES = ("best", "chain")  # search.reference: what a mutated candidate is compared with
CHAMPIONS = ("measured", "predicted", "optimum")  # final.champion: which architecture the final stage retrains
PROMOTE = ("if-better", "always")  # final.promote: when the registry alias @champion moves to a new model
EARLY_STOP = ("none", "asha")  # search.early_stop: whether a scheduler may stop a search training early
#: Parameters the largest architecture of the space may have (10x the thesis's largest, K = 6 at width 32 with
#: searched operators: 2.4e7). A dense k = 60 cell at width 32 has 8.7e8: refused before anything starts.
MAX_PARAMS = 250_000_000
#: The largest SGD learning rate a run may set (the presets use 0.05-0.1).
MAX_LR = 10.0
#: Architectures the predictor needs: validated on a split of at least 2 for fitting and 2 held out.
MIN_PREDICTOR_PAIRS = 4
#: TrainConfig fields the workflow sets per stage, not ``train``: field -> where to set it instead.
STAGE_FIELDS = {"train_fraction": "set search_fraction (the final retrain uses all images)",
                "train_on_val": "set final.train_on_val", "eval_split": "val for the search stages, test for the final"}


def dataset_name(cfg: dict) -> str:
    """``cfg["dataset"]`` or the protocol's dataset: ``digits``, ``cifar10`` (from ``cifar10-*``), ..."""
    return cfg.get("dataset") or cfg["protocol"].split("-")[0]


def parse_count(value, pool: int) -> int:
    """A teacher count: an int, or ``"x%"`` of ``pool`` (rounded, at least 1 when x > 0)."""
    if isinstance(value, str) and value.endswith("%"):
        frac = float(value[:-1]) / 100
        return max(1, round(frac * pool)) if frac > 0 else 0
    return int(value)


def distill_args(cfg: dict) -> dict:
    """The ``distill`` objective's arguments from ``cfg["distill"]`` (eq. 4.11's T, α, β, λ and the T² option)."""
    return {k: cfg["distill"][k] for k in ("temperature", "alpha", "beta", "lam", "t_squared")}


def train_config_of(train: dict):
    """The :class:`trainables.image.TrainConfig` of a training's settings: ``cfg["train"]`` or a stage's
    (``Workflow.warmup_train()``, ``final_train()``, ...). Raises ``ValueError``/``TypeError`` for an unknown key
    or a bad value (:func:`validate` reports it as a :class:`ConfigError` first)."""
    from trainables.image import TrainConfig

    return TrainConfig().replace(**train)


def train_config(cfg: dict):
    """The :class:`trainables.image.TrainConfig` that the settings' ``train`` section describes."""
    return train_config_of(cfg["train"])


def validate(cfg: dict) -> None:
    """Check what the kinds of the defaults cannot say (:func:`pipelines.common.settings.check_types` checked
    those first): ranges, cross-key rules, registry names and what the constructors accept. Raise
    :class:`ConfigError` (one line naming the key)."""
    _check_protocol(cfg)
    _check_search(cfg)
    _check_searcher(cfg)
    _check_final(cfg)
    train = _checked_train_config(cfg)
    _check_train_budget(cfg, train)
    _check_space(cfg, train)
    _check_predictor(cfg)
    _check_distill(cfg)
    _check_counts(cfg)
    _check_teachers(cfg)
    _check_resources(cfg)
    _check_ranking(cfg, train.scores)
    _check_objectives(cfg)


def _check_searcher(cfg: dict) -> None:
    """``search.searcher`` names an entry of :data:`search_space.searchers.SEARCHERS` (imports Ray, starts nothing)."""
    from search_space.searchers import SEARCHERS

    name = cfg["search"]["searcher"]
    check(name in SEARCHERS, f"search.searcher: unknown {name!r}; valid: {', '.join(SEARCHERS)}")


def _one_of(path: str, value, valid: tuple[str, ...]) -> None:
    check(value in valid, f"{path}: expected one of {', '.join(valid)}, got {value!r}")


def _check_protocol(cfg: dict) -> None:
    """A registered protocol, its keyword arguments, and no ``train`` key the workflow sets per stage."""
    from trainables.image import PROTOCOLS

    check(cfg["protocol"] in PROTOCOLS, f"protocol: unknown {cfg['protocol']!r}; valid: {', '.join(PROTOCOLS)}")
    params = inspect.signature(PROTOCOLS[cfg["protocol"]]).parameters
    bad = sorted(set(cfg["protocol_options"]) - set(params))
    check(not bad, f"protocol_options: unknown {bad} for {cfg['protocol']}; valid: {', '.join(params)}")
    for key in sorted(set(cfg["train"]) & set(STAGE_FIELDS)):
        raise ConfigError(f"train.{key}: the workflow sets it per stage ({STAGE_FIELDS[key]})")


def _check_search(cfg: dict) -> None:
    """The search stages' data fraction, reference and early stopping."""
    value = cfg["search_fraction"]
    check(0 < value <= 1, f"search_fraction: expected a fraction in (0, 1], got {value!r}")
    s = cfg["search"]
    _one_of("search.reference", s["reference"], REFERENCES)
    _one_of("search.early_stop", s["early_stop"], EARLY_STOP)
    check(is_int(s["reduction_factor"], 2),
          f"search.reduction_factor: expected an integer >= 2, got {s['reduction_factor']!r}")


def _check_final(cfg: dict) -> None:
    """The champion rule, the promotion rule and the comparison's seeds and standard architecture."""
    _one_of("final.champion", cfg["final"]["champion"], CHAMPIONS)
    _one_of("final.promote", cfg["final"]["promote"], PROMOTE)
    compare = cfg["final"]["compare"]
    seeds = compare["seeds"]
    check(all(is_int(s, 0) for s in seeds) and len(set(seeds)) == len(seeds),
          f"final.compare.seeds: expected a list of distinct integers >= 0 ([] = no comparison), got {seeds!r}")
    if compare["standard"] is not None:
        from search_space.standard_models import StandardModel

        try:
            StandardModel.from_dict(compare["standard"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"final.compare.standard: {err}") from None


def _checked_train_config(cfg: dict):
    """:func:`train_config`, its errors as a :class:`ConfigError` naming the ``train`` key."""
    try:
        return train_config(cfg)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train.{err}" if not str(err).startswith("config:") else f"train: {err}") from None


def _check_train_budget(cfg: dict, train) -> None:
    """What the per-candidate training allows: an early-stopping grace below its epochs, CUDA graphs only
    with a GPU, a learning rate SGD survives."""
    grace = cfg["search"]["grace_epochs"]  # its range is checked by _check_counts
    check(not is_int(grace, 1) or cfg["search"]["early_stop"] == "none" or grace < train.epochs,
          f"search.grace_epochs: expected fewer than train.epochs = {train.epochs} with search.early_stop=asha "
          f"(else no training is ever stopped), got {grace!r}")
    check(not train.cuda_graph or cfg["resources"]["gpu"] > 0,
          "train.cuda_graph: true needs a GPU per trial (resources.gpu > 0); CUDA graphs do not exist on CPUs")
    check(train.lr <= MAX_LR, f"train.lr: expected a positive number <= {MAX_LR:g} (SGD with a larger rate diverges "
          f"for every network of the space), got {train.lr!r}")


def _check_space(cfg: dict, train) -> None:
    """The search space builds, and its largest architecture at ``train.width`` stays under :data:`MAX_PARAMS`."""
    from search_space.size import largest_network_params
    from search_space.space import SearchSpace

    try:
        space = SearchSpace(**cfg["space"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"space: {err}") from None
    largest = largest_network_params(space.k, train.width, space.search_ops, space.residual)
    check(largest <= MAX_PARAMS, f"space.k={space.k} at train.width={train.width}: the largest architecture of the "
          f"space has {largest:.2g} parameters, more than the {MAX_PARAMS:.0e} any candidate may have; lower "
          "space.k or train.width")


def _check_predictor(cfg: dict) -> None:
    """A registered predictor that accepts ``predictor.args``."""
    from search_space import PREDICTORS, make_predictor

    check(cfg["predictor"]["name"] in PREDICTORS,
          f"predictor.name: unknown {cfg['predictor']['name']!r}; valid: {', '.join(PREDICTORS)}")
    try:
        make_predictor(cfg["predictor"]["name"], **cfg["predictor"]["args"])
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_distill(cfg: dict) -> None:
    d = cfg["distill"]
    _one_of("distill.algorithm", d["algorithm"], ALGORITHMS)
    check(d["teacher_mode"] in ("online", "cached"),
          f"distill.teacher_mode: expected online or cached, got {d['teacher_mode']!r}")


#: Integer settings and their least value.
COUNTS = {"warmup.n": MIN_PREDICTOR_PAIRS, "distill.iterations": 0, "distill.q": 1, "search.trials": 0,
          "search.min_results": 2, "search.refit_every": 1, "search.grace_epochs": 1, "final.epochs": 1,
          "final.workers": 1, "max_concurrent": 1, "max_failures": 0, "seed": 0}


def _check_counts(cfg: dict) -> None:
    """Every setting of :data:`COUNTS` is an integer of at least its least value."""
    for name, low in COUNTS.items():
        value = cfg
        for part in name.split("."):
            value = value[part]
        check(is_int(value, low), f"{name}: expected an integer >= {low}, got {value!r}")


def _check_teachers(cfg: dict) -> None:
    """``distill.top`` and ``distill.random``: a count or a percentage (free types); at least one top teacher."""
    d = cfg["distill"]
    for name in ("top", "random"):
        value = d[name]
        ok = is_int(value, 0) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?%", value) is not None)
        check(ok, f"distill.{name}: expected an integer >= 0 or a percentage like '0.5%', got {value!r}")
    check(parse_count(d["top"], cfg["warmup"]["n"]) >= 1, "distill.top: at least one teacher is needed")


def _check_resources(cfg: dict) -> None:
    for name in ("cpu", "gpu"):
        value = cfg["resources"][name]
        check(value >= 0, f"resources.{name}: expected a number >= 0, got {value!r}")
    check(cfg["resources"]["cpu"] > 0 or cfg["resources"]["gpu"] > 0, "resources: a trial needs some cpu or gpu")


def _check_ranking(cfg: dict, scores) -> None:
    """Registered OOD scores, and a higher-is-better ranking ``metric`` of one of them."""
    from trainables.image import SCORES
    from trainables.image.ood import LOWER_IS_BETTER, parse_metric

    unknown = [s for s in scores if s not in SCORES]
    check(not unknown, f"train.scores: unknown {unknown}; valid: {', '.join(SCORES)}")
    try:
        kind, score = parse_metric(cfg["metric"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check(kind not in LOWER_IS_BETTER, f"metric: {cfg['metric']} is lower = better; the ranking metric must be "
          f"higher = better (id_acc, auroc_<score>, aupr_in_<score>, aupr_out_<score>)")
    check(score is None or score in scores,
          f"metric: {cfg['metric']} needs score {score!r} in train.scores {list(scores)}")


def _check_objectives(cfg: dict) -> None:
    """The warmup objective and the distillation objective accept their arguments."""
    from trainables.image import make_objective

    for where, name, args in [("warmup.objective", cfg["warmup"]["objective"], {}),
                              ("distill", "distill", distill_args(cfg))]:
        try:
            make_objective(name, **args)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None


def check_data(cfg: dict) -> None:
    """The protocol's local data (``path``, ``aux_path``, ``test_path``) exists and reads as an ImageFolder
    (a readable zip, no empty class folder, every image's header readable; :mod:`trainables.image.image_folder`):
    checked by the driver before Ray starts, so bad data is one line, not a failure in every trial."""
    from trainables.image.image_folder import ImageFolderFiles

    for name in ("path", "aux_path", "test_path"):
        value = cfg["protocol_options"].get(name)
        check(value is None or Path(value).exists(), f"protocol_options.{name}: no such file or directory: {value!r}")
        if value is not None and (Path(value).is_dir() or Path(value).suffix.lower() == ".zip"):
            try:
                ImageFolderFiles(value).check()
            except ValueError as err:
                raise ConfigError(f"protocol_options.{name}: {str(err).removeprefix('path: ')}") from None


DCSOD_PRESETS = PresetFile(PRESETS_DIR / "dcsod.yaml", validate=validate,
                           open_sections=("train", "protocol_options", "predictor.args"),
                           free_types=("distill.top", "distill.random"))


def load_config(preset: str = "quick", overrides: list[str] | None = None) -> dict:
    """The validated settings of ``preset`` with ``overrides`` (``key.sub=value`` strings) applied."""
    return DCSOD_PRESETS.load(preset, overrides)


def preset_names() -> list[str]:
    return DCSOD_PRESETS.names()
