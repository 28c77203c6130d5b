"""docs/RESULTS.md against the frames its sweeps left (results/<sweep>/: trials.csv, epochs.csv,
sweep.json, as analysis.report writes them): every table the document marks with
``<!-- report SWEEP NAME -->`` is the report's table NAME regenerated from results/SWEEP, cell for
cell, and every quoted line marked ``<!-- report SWEEP text -->`` is a sentence of that report."""
import re
from functools import cache
from pathlib import Path

import pytest

from analysis.confirm import confirmed
from analysis.render import to_markdown
from analysis.report import sections
from analysis.stages import stage_steps
from study.load import load

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


@pytest.mark.parametrize("sweep", ["stages", "ablation"])
def test_the_notebook_runs_on_a_committed_frames_directory(monkeypatch, sweep):
    """analysis/trials.ipynb on results/stages (no trial files: the stage table and the steps) and
    results/ablation (a confirm phase: its tables and figures), its tables rounded as the report's."""
    import re

    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ABLATION_RUN_DIR", str(RESULTS / sweep))
    notebook = nbformat.read(ROOT / "analysis" / "trials.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    shown = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    tables = [o.get("data", {}).get(kind, "") for o in outputs for kind in ("text/markdown", "text/html", "text/plain")]
    assert not any(re.search(r"\d\.\d{6,}", text) for text in tables)  # no unrounded floats (78.69994440465088)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    if sweep == "stages":
        steps = to_markdown(stage_steps(load(RESULTS / "stages").trials)[0])
        assert any(steps in text for text in shown) and any("| holistic" in text for text in shown)
    else:
        means = to_markdown(confirmed(load(RESULTS / "ablation")).means)
        assert any(means in text for text in shown) and images >= 8  # the declared questions' and the confirmed arms' too
