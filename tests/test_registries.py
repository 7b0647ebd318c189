"""The registry contract (``search_space.registry``), over every entry of every registry of the project.

``CASES`` pairs each registry with a factory of minimal valid ``(args, kwargs)`` for one of its entries (None:
the entry needs data files, so it is not built here). Entries are read from the registries themselves, so a
new entry is covered as soon as it is registered; a new registry must be added to ``CASES``
(:func:`test_every_registry_of_the_project_is_covered` finds them in the source).
"""
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipelines.common.rundir import RunDir, RunDirError
from pipelines.common.settings import ConfigError
from pipelines.nas.settings import load_config, preset_names
from pipelines.nas.workflow import Workflow
from pipelines.thesis.methods import METHODS
from search_space import Genotype, SearchSpace
from search_space.ops import OPS
from search_space.predictor import PREDICTORS, make_predictor
from search_space.registry import Registry, RegistryError
from search_space.searchers import SEARCHERS
from search_space.standard_models import STANDARD_MODELS
from trainables.image.data import PROTOCOLS, make_protocol
from trainables.image.losses import OBJECTIVES, make_objective
from trainables.image.ood import SCORES, make_score
from trainables.text.beta_schedules import RAMPS, SCHEDULES, make_schedule
from trainables.text.data import DATASETS, load_text_data
from trainables.text.posteriors import POSTERIORS, make_posterior

ROOT = Path(__file__).resolve().parents[1]


def no_arguments(name):
    return (), {}


CASES = [
    (OPS, lambda name: ((3, 4), {})),
    (PREDICTORS, no_arguments),
    (OBJECTIVES, no_arguments),
    (SCORES, no_arguments),
    (PROTOCOLS, lambda name: ((), {}) if name == "digits" else None),
    (POSTERIORS, lambda name: ((), {"hidden_dim": 8, "latent_dim": 2})),
    (SCHEDULES, lambda name: ((10,), {})),
    (RAMPS, lambda name: ((0.5,), {})),
    (DATASETS, lambda name: ((None,), {}) if name == "toy" else None),
    (METHODS, no_arguments),
    (STANDARD_MODELS, lambda name: ((), {})),
    (SEARCHERS, no_arguments),
]
VALID_ARGUMENTS = {registry.kind: valid for registry, valid in CASES}
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def parameters(entry) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(entry).parameters.values() if p.kind not in VARIADIC]


def required(entry) -> list[str]:
    return [p.name for p in parameters(entry) if p.default is p.empty]


def takes_any_keyword(entry) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(entry).parameters.values())


def entries(keep=lambda entry: True) -> list:
    """``(registry, name)`` of every registered entry (that ``keep`` accepts), as pytest parameters."""
    return [pytest.param(registry, name, id=f"{registry.kind}:{name}")
            for registry, _ in CASES for name, entry in registry.items() if keep(entry)]


REGISTRIES = [pytest.param(registry, id=registry.kind) for registry, _ in CASES]


# ------------------------------------------------------------------------------------ every project entry
def test_every_registry_of_the_project_is_covered():
    pattern = re.compile(r"^\w+(?::\s*Registry)?\s*=\s*Registry\(\"([^\"]+)\"\)", re.MULTILINE)
    kinds = {kind for package in ("search_space", "trainables", "pipelines")
             for path in (ROOT / package).rglob("*.py") for kind in pattern.findall(path.read_text())}
    assert kinds == {registry.kind for registry, _ in CASES}


@pytest.mark.parametrize("registry, name", entries())
def test_build_with_valid_arguments(registry, name):
    valid = VALID_ARGUMENTS[registry.kind](name)
    if valid is None:
        pytest.skip(f"{registry.kind} {name!r} needs data files")
    args, kwargs = valid
    built = registry.build(name, *args, **kwargs)
    entry = registry[name]
    assert isinstance(built, entry) if isinstance(entry, type) else built is not None


@pytest.mark.parametrize("registry", REGISTRIES)
def test_unknown_entry_names_the_valid_entries(registry):
    for call in (registry.lookup, registry.build):
        with pytest.raises(RegistryError) as err:
            call("no-such-entry")
        assert str(err.value) == f"{registry.kind}: unknown 'no-such-entry'; valid: {', '.join(registry)}"


@pytest.mark.parametrize("registry, name", entries(keep=lambda entry: not takes_any_keyword(entry)))
def test_unknown_argument_names_the_valid_arguments(registry, name):
    entry = registry[name]
    # Checked against the signature before anything is built: entries that need data files are covered too.
    with pytest.raises(RegistryError) as err:
        registry.build(name, no_such_argument=1)
    message = str(err.value)
    assert message.startswith(f"{registry.kind} {name!r}: unknown argument(s) no_such_argument; valid arguments: ")
    assert "\n" not in message
    assert all(p.name in message.split("valid arguments: ")[1] for p in parameters(entry))


@pytest.mark.parametrize("registry, name", entries(keep=required))
def test_missing_required_arguments_are_named(registry, name):
    with pytest.raises(RegistryError) as err:
        registry.build(name)
    assert str(err.value).startswith(f"{registry.kind} {name!r}: missing required argument(s) "
                                     f"{', '.join(required(registry[name]))}; valid arguments: ")


@pytest.mark.parametrize("build", [
    lambda: make_objective("no-such-entry"), lambda: make_predictor("no-such-entry"),
    lambda: make_score("no-such-entry"), lambda: make_posterior("no-such-entry", 8, 2),
    lambda: make_protocol("no-such-entry"), lambda: make_schedule("no-such-entry", 10),
    lambda: load_text_data("no-such-entry"),
], ids=["objective", "predictor", "score", "posterior", "protocol", "schedule", "text dataset"])
def test_builders_go_through_the_contract(build):
    with pytest.raises(RegistryError, match="unknown 'no-such-entry'; valid: "):
        build()


# ------------------------------------------------------------------------------------ searchers by name
PRESET_SEARCHERS = sorted({load_config(name)["search"]["searcher"] for name in preset_names()})


def test_every_preset_names_a_registered_searcher():
    assert PRESET_SEARCHERS and set(PRESET_SEARCHERS) <= set(SEARCHERS)


@pytest.mark.parametrize("name", sorted({*PRESET_SEARCHERS, *SEARCHERS}))
@pytest.mark.parametrize("budget", [{}, {"full_budget": 2, "budget_attr": "epoch"}], ids=["full", "asha"])
def test_the_search_stage_builds_each_searcher_and_it_suggests(name, budget, tmp_path):
    """The search stage's construction path (``Workflow.searcher``) with the arguments the workflow gives,
    warm start (predictor-evolution) included; the searcher then proposes a genotype of the run's space."""
    cfg = load_config("ci", [f"search.searcher={name}"])
    wf = Workflow(RunDir.open(tmp_path / "run", cfg), cfg, f"sqlite:///{tmp_path / 'unused.db'}")
    space = SearchSpace(**cfg["space"])
    records = [{"genotype": g.to_json(), "arch_hash": g.arch_hash, cfg["metric"]: 0.5 + i / 100, "checkpoint": "/ck"}
               for i, g in enumerate(space.sample_many(6, seed=1))]
    searcher = wf.searcher(records, **budget)
    assert isinstance(searcher, SEARCHERS[name])
    proposal = Genotype.from_json(searcher.suggest("trial-0")["genotype"])
    assert proposal.k == space.k
    if name == "predictor-evolution":
        assert len(searcher.results) == len(records)  # the warm start


@pytest.mark.parametrize("method", ["random", "regularized-evolution"])
def test_table_4_1_baselines_build_their_searcher_through_the_registry(method):
    wf = types.SimpleNamespace(metric="auroc_msp", space=SearchSpace(k=4), cfg={"seed": 3})
    ctx = types.SimpleNamespace(exp={"regularized_evolution": {"population": 4, "sample_size": 2}})
    searcher = METHODS[method]().make_searcher(ctx, wf)
    assert isinstance(searcher, SEARCHERS[method]) and "genotype" in searcher.suggest("trial-0")


def test_an_unknown_searcher_is_refused_with_one_line_before_anything_starts():
    with pytest.raises(ConfigError) as err:
        load_config("ci", ["search.searcher=simulated-annealing"])
    assert str(err.value) == ("search.searcher: unknown 'simulated-annealing'; valid: "
                              "predictor-evolution, random, regularized-evolution")


def test_a_run_dir_from_before_search_searcher_resumes_at_its_default(tmp_path):
    """``search.searcher`` came after run directories were written: one whose settings lack it resumes with the
    default (``pipelines.common.rundir.ADDED_KEYS``), at any depth; another searcher is a difference."""
    cfg = load_config("ci")
    old = {**cfg, "search": {k: v for k, v in cfg["search"].items() if k != "searcher"}}
    for path, stored, current in ((tmp_path / "dcsod", old, cfg),
                                  (tmp_path / "experiments", {"dcsod": old}, {"dcsod": cfg})):
        RunDir.open(path, stored)
        assert RunDir.open(path, current).manifest["config"] == stored
    with pytest.raises(RunDirError, match=r"other settings \(first difference: search\.searcher\)"):
        RunDir.open(tmp_path / "dcsod", load_config("ci", ["search.searcher=random"]))


def test_text_vae_imports_no_search_code():
    code = ("import sys, trainables.text.vae_model, trainables.text.vae_tune; "
            "print(' '.join(m for m in sys.modules if m.startswith(('search_space.', 'trainables.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"search_space.network", "search_space.predictor", "search_space.evolution", "search_space.searcher",
             "trainables.image.train"}
    assert "trainables.text.vae_model" in loaded and not loaded & heavy, loaded & heavy


# ------------------------------------------------------------------------------------ the Registry itself
@pytest.fixture
def widgets():
    reg = Registry("widget")

    @reg.register("scale")
    def scale(x, factor=2):
        if factor == 0:
            raise ValueError("factor: expected != 0,\n  got 0")
        return factor * x

    @reg.register("box")
    class Box:
        def __init__(self, size: int, *, colour="red"):
            self.size, self.colour = size, colour

    reg.register("anything")(lambda **options: options)
    return reg


def test_register_lookup_and_duplicates(widgets):
    assert list(widgets) == ["scale", "box", "anything"] and widgets.lookup("scale") is widgets["scale"]
    with pytest.raises(ValueError, match="widget 'scale' is already registered"):
        widgets.register("scale")(len)
    assert issubclass(RegistryError, ValueError)


def test_build_passes_arguments_and_checks_a_class_against_its_init(widgets):
    assert widgets.build("scale", 3, factor=3) == 9
    box = widgets.build("box", 4, colour="blue")
    assert (box.size, box.colour) == (4, "blue")
    with pytest.raises(RegistryError, match=r"^widget 'box': unknown argument\(s\) shape; valid arguments: "
                                            r"size, colour$"):
        widgets.build("box", 4, shape="round")
    with pytest.raises(RegistryError, match=r"^widget 'box': missing required argument\(s\) size"):
        widgets.build("box", colour="blue")
    with pytest.raises(RegistryError, match="^widget 'scale': too many positional arguments; valid arguments: "):
        widgets.build("scale", 1, 2, 3)


def test_an_entry_taking_kwargs_accepts_any_keyword(widgets):
    assert widgets.build("anything", a=1, b=2) == {"a": 1, "b": 2}


def test_errors_of_the_entry_become_one_line_registry_errors_naming_it(widgets):
    with pytest.raises(RegistryError) as err:
        widgets.build("scale", 3, factor=0)
    assert str(err.value) == "widget 'scale': factor: expected != 0, got 0"
    with pytest.raises(RegistryError, match="^widget 'scale': can't multiply sequence"):
        widgets.build("scale", "x", factor=1.5)  # a TypeError inside the entry
