"""The project's import graph: no cycle among its modules, and nothing a Ray trial worker loads
imports the analysis (the experiment record, sweep.record, is the one module both sides share).

The graph is read from the source (every import statement, those inside functions too, but not
those under ``if TYPE_CHECKING:``, which never run); the worker's side is also checked for real, in a
fresh interpreter that imports the trainable as Ray's worker does.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("training", "models", "sweep", "analysis", "deploy", "benchmarks")
WORKER_ENTRY = "sweep.trainable"  # the module of the function Ray ships to every trial (train_trial)


def project_modules() -> dict[str, Path]:
    modules = {"train": ROOT / "train.py"}
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            name = f"{package}.{path.stem}" if path.stem != "__init__" else package
            modules[name] = path
    return modules


def runtime_imports(tree: ast.AST) -> list[str]:
    """Every module an import statement names (``from a import b`` names a and, if b is a module,
    a.b), skipping the bodies of ``if TYPE_CHECKING:``."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in runtime_imports(ast.parse(path.read_text())) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def test_the_reader_finds_a_planted_cycle_and_skips_type_checking_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
                     "def f():\n    from p import q\n")
    assert runtime_imports(tree) == ["typing", "typing.TYPE_CHECKING", "y", "p", "p.q"]


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert {"sweep.record", "analysis.load", "sweep.driver", "deploy.export"} <= set(graph)
    assert cycles(graph) == []


def test_the_analysis_reads_the_record_not_the_sweep_driver():
    graph = import_graph()
    allowed = ("analysis", "sweep.record", "sweep.spaces", "training")
    assert graph["sweep"] == set()  # the package's __init__ (``from sweep import record``) imports nothing
    for name, imports in graph.items():
        if name.startswith("analysis"):
            assert [m for m in imports if m != "sweep" and not m.startswith(allowed)] == [], name


def test_nothing_a_trial_worker_loads_imports_the_analysis():
    loaded = reachable(import_graph(), WORKER_ENTRY)
    assert "sweep.record" in loaded and not [m for m in loaded if m.startswith(("analysis", "deploy"))]
    code = ("import sys, sweep.trainable; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('analysis', 'deploy')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
