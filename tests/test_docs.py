"""The repository stands alone: every citation of its design document names a section that exists."""
import re
from pathlib import Path

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
