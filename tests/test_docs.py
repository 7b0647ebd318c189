"""The repository stands alone: every citation of its design document names a section that exists."""
import ast
import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for pattern in ("*.md", "*/*.py", "*/*.md", "*/*.yaml", "*/*/*.yaml") for p in ROOT.glob(pattern)
           if ".git" not in p.parts and "egg-info" not in str(p) and p != Path(__file__).resolve()]


def headings() -> list[str]:
    return [line.lstrip("#").strip() for line in (ROOT / "DESIGN.md").read_text().splitlines()
            if line.startswith("#")]


def test_the_design_document_is_in_the_repository_and_every_cited_section_exists():
    sections = headings()
    assert "Methods as implemented" in sections and "Output contract" in sections
    cited, vague = [], []
    for path in SOURCES:
        text = path.read_text(errors="replace")
        for match in re.finditer(r"DESIGN\.md(,\s*(\S[^\n]{0,40}))?", text):
            follow = match.group(2)
            if follow and not follow.startswith('"') and path.name != "DESIGN.md":
                vague.append(f"{path.relative_to(ROOT)}: {match.group(0)}")  # e.g. "DESIGN.md, seed §4.3"
            quoted = re.match(r'"([^"]+)"', follow or "")
            if quoted:
                cited.append((path.relative_to(ROOT), quoted.group(1)))
    assert not vague, f"cite a section by its heading in quotes: {vague}"
    missing = [(str(p), name) for p, name in cited if not any(h.startswith(name) for h in sections)]
    assert cited and not missing, missing


# README.md is a newcomer's page; docs/*.md hold the rest. Both name paths, commands and presets that must exist.
README = ROOT / "README.md"
GUIDES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("search_space", "trainables", "pipelines")
REPO_PATH = re.compile(r"^(?:(?:\.ci|search_space|trainables|pipelines|platform|tests|benchmarks|docs)(?:/[\w.\-/]*)?"
                       r"|README\.md|DESIGN\.md|pyproject\.toml)$")


def spans(text: str) -> list[str]:
    """The contents of every `code span` and fenced block (code and commands live there)."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return fenced + inline


def named_paths(text: str) -> set[str]:
    """Repository paths named in code spans (each word of them) or as link targets; placeholders are skipped."""
    words = [w for span in spans(text) for w in span.split()]
    words += re.findall(r"\]\(([^)\s]+)\)", text)
    found = set()
    for word in words:
        word = word.strip("'\"(),;:").split("::")[0].split("#")[0]
        if REPO_PATH.match(word) and not re.search(r"[<>*{}$]", word):
            found.add(word)
    return found


def moved(package: str) -> dict[str, str]:
    """The package's MOVED table (old module name -> new), read without importing the package."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MOVED" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def module_file(name: str) -> Path | None:
    """The file `python -m name` runs, inside the repository, following old names kept by MOVED."""
    parts = name.split(".")
    path = ROOT.joinpath(*parts)
    if len(parts) > 1 and path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__main__.py").is_file():
        return path / "__main__.py"
    old = moved(parts[0]).get(".".join(parts[1:])) if len(parts) > 1 else None
    return module_file(f"{parts[0]}.{old}") if old else None


def commands(text: str) -> list[tuple[str, str, str]]:
    """(`-m` or '', module or script, the rest of its line) for every `python ...` command in the text."""
    return re.findall(r"\bpython3?[ \t]+(-m[ \t]+)?([\w./\-<>]+)([^`\n]*)", text)


def test_readme_is_a_page_and_every_path_it_names_exists():
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md is a newcomer's page: at most 150 lines, the rest in docs/"
    paths = named_paths(text)
    assert {"pipelines/dcsod.py", "docs/dcsod.md", "pipelines/nas/"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"
    rooms = {p.rstrip("/") for p in paths if (ROOT / p).is_dir()}
    packages = {str(d.parent.relative_to(ROOT)) for pkg in PACKAGES for d in (ROOT / pkg).rglob("__init__.py")}
    assert not packages - rooms, f"README.md's layout map leaves out {sorted(packages - rooms)}"


def test_every_guide_links_and_names_existing_paths():
    assert {"dcsod.md", "text_vae.md", "dialog.md", "experiments.md", "cluster.md"} <= {
        p.name for p in GUIDES}
    problems = []
    for guide in GUIDES:
        text = guide.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+:", target) and not (guide.parent / target.split("#")[0]).exists():
                problems.append(f"{guide.name}: link {target}")
        problems += [f"{guide.name}: {p}" for p in named_paths(text) if not (ROOT / p).exists()]
    assert not problems, problems


def test_every_command_in_the_guides_names_an_existing_script_or_module():
    problems, seen = [], 0
    for guide in GUIDES:
        for dash_m, target, _ in commands(guide.read_text()):
            if target in ("-c", "-") or "<" in target:  # python -c ..., python benchmarks/<name>.py
                continue
            seen += 1
            if dash_m and target.split(".")[0] in PACKAGES:
                ok = module_file(target) is not None
            elif dash_m:
                ok = importlib.util.find_spec(target.split(".")[0]) is not None
            else:
                ok = target.endswith(".py") and (ROOT / target).is_file()
            if not ok:
                problems.append(f"{guide.name}: python {dash_m}{target}")
    assert seen and not problems, problems


def test_old_module_names_resolve_to_the_moved_files():
    assert module_file("pipelines.model_registry") == ROOT / "pipelines" / "nas" / "model_registry.py"
    assert module_file("trainables.text_vae_model") == ROOT / "trainables" / "text" / "vae_model.py"
    assert module_file("trainables") == ROOT / "trainables" / "__main__.py"
    assert module_file("pipelines.no_such_module") is None


def test_every_preset_a_guide_runs_a_pipeline_with_is_in_its_presets_file():
    problems, seen = [], 0
    for guide in GUIDES:
        for match in re.finditer(r"\bpipelines/(\w+)\.py([^`\n#|]*)", guide.read_text()):
            for name in re.findall(r"--preset[ =]+['\"]?([\w.\-]+)", match.group(2)):
                seen += 1
                presets_file = ROOT / "pipelines" / "presets" / f"{match.group(1)}.yaml"
                presets = yaml.safe_load(presets_file.read_text())["presets"] if presets_file.is_file() else {}
                if name not in presets:
                    problems.append(f"{guide.name}: pipelines/{match.group(1)}.py --preset {name}")
    assert seen and not problems, problems


def test_results_open_with_a_one_screen_summary():
    lines = (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()
    headings = [i for i, line in enumerate(lines) if re.match(r"#{1,2} ", line)]
    first = headings[1]  # the one after the title
    assert lines[first].startswith("## Summary") and first < 10, lines[first]
    assert headings[2] - first <= 40, "the summary fits one screen (at most 40 lines)"


def quoted_numbers(text: str) -> list[str]:
    """The measured numbers a page quotes: decimals (0.345, 9.2), durations (1 min 09 s), dates (2026-11-30) and
    counts (9 of 16). Left out, and only these: code spans and blocks (commands, version pins, preset names),
    references to the thesis's numbered tables, figures and algorithms (Tables 4.1–4.3, Alg. 2) and the Python
    version; sizes (24 GiB) and other integers are not matched."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\b(?:Tables?|Figures?|Fig\.|Alg\.)\s+\d+(?:\.\d+)?(?:\s*(?:[–,/]|and)\s*\d+(?:\.\d+)?)*", " ", text)
    text = re.sub(r"Python ≥ \d+\.\d+", " ", text)
    found = []
    for pattern in (r"\d+ min \d+ s", r"\b20\d\d-\d\d-\d\d\b", r"\b\d+ of \d+\b"):
        found += re.findall(pattern, text)
        text = re.sub(pattern, " ", text)
    return found + re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)


def missing_from_results(readme: str, results: str) -> list[str]:
    """README's quoted numbers that RESULTS.md does not hold verbatim (as a whole number, not inside a longer one)."""
    return [n for n in quoted_numbers(readme)
            if not re.search(rf"(?<![\w.]){re.escape(n)}(?![\w]|\.\d)", results)]


def test_every_number_the_readme_quotes_is_in_results():
    readme, results = README.read_text(), (ROOT / "benchmarks" / "RESULTS.md").read_text()
    numbers = quoted_numbers(readme)
    for kind in (r"\d+ min \d+ s", r"20\d\d-\d\d-\d\d", r"\d+ of \d+", r"\d+\.\d+"):  # each kind is found
        assert any(re.fullmatch(kind, n) for n in numbers), kind
    assert not {"4.1", "3.10", "2.4", "2.15"} & set(numbers)  # tables, the Python version, torch pins: left out
    assert not missing_from_results(readme, results), missing_from_results(readme, results)
    assert missing_from_results(readme.replace("0.345 ± 0.014", "0.346 ± 0.014"), results) == ["0.346"]
    assert missing_from_results(readme.replace("1 min 09 s", "1 min 08 s"), results) == ["1 min 08 s"]
