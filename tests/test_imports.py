"""The project's import graph: its packages stand on each other without a loop (study/ at the bottom,
free of torch and Ray; models/ on it; training/ on both; analysis/ on study/ alone; deploy/ and
sweep/ on top, sweep/ calling into analysis/ and deploy/ from its closing printout only), no cycle
among its modules, and nothing a Ray trial worker loads imports the analysis.

The graph is read from the source (every import statement, those inside functions too; the module
test also reads those under ``if TYPE_CHECKING:``, which never run, so that a cycle cannot hide
there); the worker's side and study/'s are also checked for real, in a fresh interpreter.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "models", "training", "analysis", "deploy", "sweep", "benchmarks")
WORKER_ENTRY = "sweep.trainable"  # the module of the function Ray ships to every trial (train_trial)


def project_modules() -> dict[str, Path]:
    modules = {"train": ROOT / "train.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def runtime_imports(tree: ast.AST, type_checking: bool = False) -> list[str]:
    """Every module an import statement names (``from a import b`` names a and, if b is a module,
    a.b), skipping the bodies of ``if TYPE_CHECKING:`` unless `type_checking`."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not type_checking:
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


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in runtime_imports(ast.parse(path.read_text()), type_checking) if m in modules and m != name}
            for name, path in modules.items()}


def package_graph(graph: dict[str, set[str]], leave_out: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """The packages' graph (train.py is the package "train"): an arrow from a package to each other
    package one of its modules imports; the modules in `leave_out` draw none."""
    out: dict[str, set[str]] = {}
    for module, imports in graph.items():
        package = module.split(".")[0]
        out.setdefault(package, set())
        if module not in leave_out:
            out[package] |= {m.split(".")[0] for m in imports} - {package}
    return out


# The package graph, bottom up: each package and the packages it may import. sweep.closing, the
# sweep's closing printout, is the one module that also reaches analysis/ and deploy/.
FLOORS = {"study": set(), "models": {"study"}, "training": {"study", "models"}, "analysis": {"study"},
          "deploy": {"study", "models", "training"}, "sweep": {"study", "models", "training"},
          "train": {"study", "training", "sweep", "models"}}
TOP_FLOOR = "sweep.closing"


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


def test_no_import_cycle_among_the_projects_modules_type_checking_imports_included():
    for type_checking in (False, True):
        graph = import_graph(type_checking)
        assert {"study.layout", "study.load", "sweep.driver", "sweep.planning.plan", "deploy.export"} <= set(graph)
        assert cycles(graph) == []


def test_the_packages_stand_on_each_other_without_a_loop():
    graph = import_graph()
    packages = package_graph(graph, leave_out=(TOP_FLOOR,))
    for package, imports in packages.items():
        if package != "benchmarks":
            assert imports <= FLOORS[package], f"{package} imports {sorted(imports - FLOORS[package])}"
    assert cycles(package_graph(graph)) == []  # the closing printout's arrows too: still no loop
    assert {m.split(".")[0] for m in graph[TOP_FLOOR]} >= {"analysis", "deploy"}


def test_the_package_check_finds_a_planted_loop():
    graph = {"study.a": {"models.b"}, "models.b": {"study.c"}, "study.c": set()}
    assert cycles(graph) == [] and cycles(package_graph(graph)) == [["models", "study"]]


def test_the_bottom_package_loads_without_torch_ray_or_any_other_package():
    code = ("import pkgutil, importlib, sys, study\n"
            "[importlib.import_module(f'study.{m.name}') for m in pkgutil.iter_modules(study.__path__)]\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'models', 'training', 'sweep', 'analysis', 'deploy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_nothing_a_trial_worker_loads_imports_the_analysis():
    loaded = reachable(import_graph(), WORKER_ENTRY)
    assert "study.layout" in loaded and not [m for m in loaded if m.startswith(("analysis", "deploy"))]
    code = ("import sys, sweep.trainable; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('analysis', 'deploy')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
