"""The docs describe the code that exists: docs/SWEEPS.md's "Where things live" and each package's
docstring name every module of the package and no module that is gone; README and the docs link only
to files that exist; README stays a door (install and the two commands first, lines of normal length)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "models", "training", "sweep", "sweep/planning", "analysis", "deploy")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def modules(package: str) -> set[str]:
    return {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}


def layout() -> str:
    text = (ROOT / "docs" / "SWEEPS.md").read_text()
    return text.split("## Where things live", 1)[1].split("\n## ", 1)[0]


def layout_rows(package: str) -> str:
    """The table rows about `package`: its own row (`pkg/`) and its modules' rows (`pkg/x.py`), not
    those of a package inside it (`pkg/inner/`)."""
    inner = tuple(f"| `{package}/{p.name}/" for p in (ROOT / package).iterdir() if (p / "__init__.py").is_file())
    return "\n".join(line for line in layout().splitlines()
                     if line.startswith(f"| `{package}/") and not line.startswith(inner))


@pytest.mark.parametrize("package", PACKAGES)
def test_the_layout_table_names_every_module_and_no_other(package):
    rows = layout_rows(package)
    named = set(re.findall(r"`(?:%s/)?(\w+)\.py`" % package, rows))
    assert named == modules(package), f"docs/SWEEPS.md's layout table and {package}/ differ"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_docstring_names_every_module(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    missing = {m for m in modules(package) if not re.search(r"\b%s\b" % m, doc)}
    assert not missing, f"{package}/__init__.py's docstring does not name {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_go_to_files_that_exist(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_the_readme_is_a_door():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 150 and "make test" in text
    assert max(map(len, lines)) <= 110, max(lines, key=len)
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first].startswith("## Install"), "README opens with install and the two commands"
