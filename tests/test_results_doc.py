"""docs/RESULTS.md against the frames its sweeps left (results/<sweep>/: trials.csv, epochs.csv,
sweep.json, as analysis.report writes them): every table the document marks with
``<!-- report SWEEP NAME -->`` is the report's table NAME regenerated from results/SWEEP, cell for
cell, and every quoted line marked ``<!-- report SWEEP text -->`` is a sentence of that report. And
analysis/trials.ipynb, executed on two of those directories, shows the report's sections, its tables
the report's frames."""
import re
from functools import cache
from pathlib import Path

import pytest

from analysis.effects import EQUIVALENCE_MARGIN
from analysis.render import to_markdown
from analysis.report import sections
from study.load import load
from tests.helpers import assert_notebook_is_the_report, execute_notebook

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "RESULTS.md"
RESULTS = ROOT / "results"
MARK = re.compile(r"^<!-- report (\S+) (\S+) -->$")


def marked_blocks(text: str) -> list[tuple[str, str, str]]:
    """(sweep, name, block) per marker: the lines after it up to the first blank line."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        found = MARK.match(line.strip())
        if found:
            block = []
            for following in lines[i + 1:]:
                if not following.strip():
                    break
                block.append(following)
            out.append((found.group(1), found.group(2), "\n".join(block)))
    return out


@cache
def report(sweep: str):
    return sections(load(RESULTS / sweep))


BLOCKS = marked_blocks(DOC.read_text())


def test_the_document_marks_tables_of_every_committed_sweep():
    sweeps = sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
    assert sweeps and sorted({sweep for sweep, _, _ in BLOCKS}) == sweeps
    for sweep in sweeps:
        assert all((RESULTS / sweep / name).is_file() for name in ("trials.csv", "epochs.csv", "sweep.json"))
        assert any(name != "text" for s, name, _ in BLOCKS if s == sweep)
    assert "docs/RESULTS.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("sweep,name,block", BLOCKS, ids=[f"{s}-{n}-{i}" for i, (s, n, _) in enumerate(BLOCKS)])
def test_each_marked_block_is_what_the_report_prints_from_the_frames(sweep, name, block):
    found = report(sweep)
    if name == "text":
        texts = " ".join(section.text for section in found)
        for line in block.splitlines():
            assert line.startswith("> ") and line[2:] in texts, f"not in the {sweep} report: {line}"
        return
    tables = {section.name: section.table for section in found if section.table is not None}
    assert name in tables, f"the {sweep} report has no table {name!r}: {sorted(tables)}"
    assert block == to_markdown(tables[name])


def test_the_notebook_shows_the_reports_sections_on_the_run_chosen_by_the_environment(tmp_path):
    """analysis/trials.ipynb on results/stages (a screen: the stage table and steps), chosen by
    ABLATION_RUN_DIR: the report's sections, tables equal to its frames."""
    notebook, shown = execute_notebook(tmp_path / "shown.pkl", run_dir=RESULTS / "stages")
    assert shown["margin"] == EQUIVALENCE_MARGIN
    assert_notebook_is_the_report(notebook, shown, report("stages"))


def test_the_notebook_shows_the_reports_sections_on_the_run_and_margin_of_its_first_cell(tmp_path):
    """results/ablation (a screen, then a confirm phase) as the notebook's first cell names it (a path
    from the checkout's root) with a margin of 1 point: the report's sections at that margin."""
    edits = {"RUN_DIR = None": 'RUN_DIR = "results/ablation"', "MARGIN = None": "MARGIN = 1.0"}
    notebook, shown = execute_notebook(tmp_path / "shown.pkl", edits=edits)
    assert shown["margin"] == 1.0 != EQUIVALENCE_MARGIN
    assert_notebook_is_the_report(notebook, shown, sections(load(RESULTS / "ablation"), 1.0))
