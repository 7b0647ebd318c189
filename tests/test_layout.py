"""The product's layout (issue 27), read from the source with ``ast``, nothing imported but for the old-name tests.

Every ``.py`` under ``search_space/``, ``trainables/`` and ``pipelines/`` is a module; its imports are every
``import`` and ``from ... import`` in it, at module level or inside a function (``TYPE_CHECKING`` blocks included:
an import there is still an arrow between the modules), relative or absolute. ``from pkg import name`` imports the
submodule ``pkg.name`` when there is one, else the module that ``pkg``'s lazy exports (``_SUBMODULES`` in its
``__init__``) take ``name`` from, else ``pkg`` itself. Rules:

- no import cycle among product modules;
- ``trainables.image`` and ``trainables.text`` import nothing from each other, and ``trainables.text`` no search
  code but ``search_space.registry`` / ``lazy_exports`` / ``moved_modules``;
- layers: ``search_space`` -> ``trainables`` -> ``pipelines``; a lower layer never imports a higher one;
- ``pipelines/`` holds at its root only the five front doors and ``__init__.py``, and no sub-package named like a
  front door beside it; ``trainables/`` only ``__init__``, ``__main__``, ``errors`` and ``overrides``;
- no function in ``pipelines/`` is longer than :data:`MAX_FUNCTION_LINES` lines, and none checks
  ``isinstance(x, int)`` but ``pipelines/common/settings.py::is_int`` (a bool is an int: status codes and
  settings go through ``is_int``).

Modules moved by the re-lay keep their old names (``MOVED`` of ``trainables`` and ``pipelines``,
:mod:`search_space.moved_modules`): they import, and pickles naming them load.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pickle
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_space", "trainables", "pipelines")
LAYER = {package: rank for rank, package in enumerate(PACKAGES)}
FRONT_DOORS = {"dcsod", "experiments", "text_vae", "dialog", "score"}
TRAINABLES_ROOT = {"__init__", "__main__", "errors", "overrides"}
TEXT_MAY_IMPORT = {"search_space.registry", "search_space.lazy_exports", "search_space.moved_modules"}
MAX_FUNCTION_LINES = 80
IS_INT = ("pipelines/common/settings.py", "is_int")


# ------------------------------------------------------------------------------------ reading the source
def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Module name -> file, for every product module (a package is its ``__init__.py``)."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(), str(path))


@cache
def lazy_names(package: str) -> dict[str, str]:
    """``name -> submodule`` of a package whose ``__init__`` assigns ``_SUBMODULES = {submodule: (names...)}``."""
    if package not in modules() or modules()[package].name != "__init__.py":
        return {}
    for node in tree(package).body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_SUBMODULES"
                                                 for t in node.targets)):
            submodules = ast.literal_eval(node.value)
            return {name: f"{package}.{sub}" for sub, names in submodules.items() for name in names}
    return {}


def product_module(dotted: str) -> str | None:
    """The product module that importing ``dotted`` runs last: ``dotted`` or its longest product prefix."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules():
            return ".".join(parts[:n])
    return None


def resolve_from(base: str, name: str) -> str | None:
    """What ``from base import name`` imports among product modules."""
    if f"{base}.{name}" in modules():
        return f"{base}.{name}"
    return lazy_names(base).get(name) or product_module(base)


def imports(name: str) -> dict[str, int]:
    """Product modules that module ``name`` imports -> the first line doing so."""
    is_package = modules()[name].name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(tree(name)):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [product_module(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module
            targets = [resolve_from(base, alias.name) for alias in node.names]
        for target in targets:
            if target is not None and target != name:
                found.setdefault(target, node.lineno)
    return found


@cache
def graph() -> dict[str, dict[str, int]]:
    return {name: imports(name) for name in modules()}


def where(source: str, target: str) -> str:
    return f"{modules()[source].relative_to(ROOT)}:{graph()[source][target]} imports {target}"


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


# ------------------------------------------------------------------------------------ imports
def cycles() -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module (Tarjan)."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [shortest_cycle(sorted(c)[0], c) for c in components]


def shortest_cycle(start: str, component: set[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside ``component`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph()[v]):
                if w == start:  # v != start: a module never counts as importing itself
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in component and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_import_graph_is_read():
    """The reader sees module-level, function-level, relative and lazily exported imports."""
    edges = graph()
    assert "search_space.registry" in edges["trainables.text.posteriors"]  # absolute, module level
    assert "search_space.genotype" in edges["search_space.network"]  # relative
    assert "search_space.searchers" in edges["pipelines.nas.workflow"]  # inside a method
    assert "search_space.architecture" in edges["trainables.image.train"]  # `from search_space import build_model`
    assert "trainables.image.cuda_graph" in edges["trainables.image.train"]


def test_no_import_cycles():
    found = [" -> ".join(cycle) + "".join(f"\n    {where(a, b)}" for a, b in zip(cycle, cycle[1:]))
             for cycle in cycles()]
    assert not found, "import cycles among product modules:\n" + "\n".join(found)


def test_image_and_text_trainables_import_nothing_from_each_other():
    bad = [where(source, target) for source, targets in graph().items() for target in targets
           for a, b in (("trainables.image", "trainables.text"), ("trainables.text", "trainables.image"))
           if in_package(source, a) and in_package(target, b)]
    assert not bad, "\n".join(bad)


#: Rooms that share a floor and import nothing from each other (what both need lives one floor down).
SIBLING_ROOMS = (("pipelines.sweeps.text_vae", "pipelines.sweeps.dialog"),
                 ("pipelines.nas", "pipelines.sweeps"), ("pipelines.thesis", "pipelines.sweeps"))


@pytest.mark.parametrize("rooms", SIBLING_ROOMS, ids=lambda rooms: " | ".join(rooms))
def test_sibling_rooms_import_nothing_from_each_other(rooms):
    a, b = rooms
    bad = [where(source, target) for source, targets in graph().items() for target in targets
           if (in_package(source, a) and in_package(target, b)) or (in_package(source, b) and in_package(target, a))]
    assert not bad, "\n".join(bad)


def test_text_trainables_import_no_search_code_beyond_the_registry():
    bad = [where(source, target) for source, targets in graph().items() for target in targets
           if in_package(source, "trainables.text") and in_package(target, "search_space")
           and target not in TEXT_MAY_IMPORT]
    assert not bad, "\n".join(bad)


def test_a_lower_layer_never_imports_a_higher_one():
    bad = [where(source, target) for source, targets in graph().items() for target in targets
           if LAYER[target.split(".")[0]] > LAYER[source.split(".")[0]]]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------ files
def test_pipelines_root_holds_only_the_front_doors():
    root = ROOT / "pipelines"
    scripts = {p.stem for p in root.glob("*.py")}
    assert scripts == FRONT_DOORS | {"__init__"}, f"unexpected: {sorted(scripts - FRONT_DOORS - {'__init__'})}"
    clashes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in FRONT_DOORS)
    assert not clashes, f"sub-packages named like the front door beside them: {clashes}"


def test_trainables_root_holds_only_what_both_rooms_share():
    extra = sorted({p.stem for p in (ROOT / "trainables").glob("*.py")} - TRAINABLES_ROOT)
    assert not extra, f"trainables/ root: {extra}; move them into trainables/image or trainables/text"


# ------------------------------------------------------------------------------------ pipelines' code
def pipeline_functions() -> list[tuple[str, str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """``(file, qualified name, node)`` of every function and method in ``pipelines/``."""
    out = []

    def visit(node: ast.AST, path: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((path, f"{prefix}{child.name}", child))
                visit(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, path, f"{prefix}{child.name}.")
            else:
                visit(child, path, prefix)

    for name, path in modules().items():
        if in_package(name, "pipelines"):
            visit(tree(name), str(path.relative_to(ROOT)), "")
    return out


def test_no_function_in_pipelines_is_longer_than_80_lines():
    long = [f"{path}:{node.lineno} {qualname} ({node.end_lineno - node.lineno + 1} lines)"
            for path, qualname, node in pipeline_functions()
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def int_checks(node: ast.AST) -> list[int]:
    """Lines of ``isinstance(<x>, int)`` calls under ``node``."""
    return [call.lineno for call in ast.walk(node)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "isinstance"
            and len(call.args) == 2 and isinstance(call.args[1], ast.Name) and call.args[1].id == "int"]


def test_pipelines_check_integers_only_through_is_int():
    allowed = {line for path, qualname, node in pipeline_functions() if (path, qualname) == IS_INT
               for line in int_checks(node)}
    assert allowed, "pipelines/common/settings.py::is_int is where integers are checked"
    bad = [f"{modules()[name].relative_to(ROOT)}:{line}" for name in modules() if in_package(name, "pipelines")
           for line in int_checks(tree(name))
           if not (modules()[name] == ROOT / IS_INT[0] and line in allowed)]
    assert not bad, "isinstance(x, int) outside is_int (use pipelines.common.settings.is_int):\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------ old module names
@pytest.mark.parametrize("old", ["trainables.export", "pipelines.model_registry", "trainables.tune_trainable"])
def test_old_module_names_still_import(old):
    module = importlib.import_module(old)
    new = importlib.util.find_spec(old).loader.new
    assert dir(importlib.import_module(new)) and module.__doc__ == importlib.import_module(new).__doc__


def moved() -> list:
    import pipelines
    import trainables

    return [pytest.param(f"{package.__name__}.{old}", f"{package.__name__}.{new}", id=old)
            for package in (trainables, pipelines) for old, new in package.MOVED.items()]


@pytest.mark.parametrize("old, new", moved())
def test_every_old_name_points_at_a_module(old, new):
    assert importlib.util.find_spec(old).loader.new == new
    assert new in modules(), f"{old} forwards to {new}, which is no module of the product"


def test_pickles_naming_an_old_module_load_and_new_ones_round_trip():
    from trainables.image.train import TrainConfig

    config = TrainConfig(epochs=3, width=8)
    data = pickle.dumps(config, protocol=2)  # protocol 2 names a class as text lines: `c<module>\n<name>\n`
    assert b"ctrainables.image.train\nTrainConfig\n" in data
    old = data.replace(b"ctrainables.image.train\n", b"ctrainables.train\n")  # as written before the re-lay
    loaded = pickle.loads(old)
    assert type(loaded) is TrainConfig and loaded == config
    from trainables.train import TrainConfig as ByOldName

    assert ByOldName is TrainConfig and pickle.loads(pickle.dumps(ByOldName(epochs=2))) == TrainConfig(epochs=2)
