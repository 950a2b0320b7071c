"""Layer rules of the pure packages.

- ``training/`` (torch + transformers) and ``monitoring/`` (pure statistics) never import Airflow;
- ``monitoring/`` imports nothing from ``training/``;
- modules inside ``monitoring/`` do not import each other in a cycle;
- ``pretrained/`` is a leaf: it imports neither ``training`` nor ``monitoring``.

Modules are discovered (``pkgutil.walk_packages`` in the subprocess, the file tree here), never listed,
so a new module is covered without touching this file. Static checks walk the whole syntax tree, so
function-level (lazy) imports count as much as module-level ones.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE = ("monitoring", "training")  # monitoring first: its check of sys.modules must not see training

# Run in a fresh interpreter: blocks Airflow, imports every module of each package, reports per package the
# modules found, the ones that failed (with the module that asked for Airflow, if any) and, right after the
# package, which training modules sys.modules holds.
_IMPORT_ALL = r"""
import importlib
import importlib.abc
import json
import pkgutil
import sys

attempts = []


def _importer():
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")) and name != "__main__":
            return name
        frame = frame.f_back
    return "?"


class BlockAirflow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "airflow" or fullname.startswith("airflow."):
            who = _importer()
            attempts.append({"module": who, "imports": fullname})
            raise ImportError(f"{who} imports {fullname}: Airflow is blocked in the pure packages")
        return None


sys.meta_path.insert(0, BlockAirflow())
report = {}
for package in sys.argv[1:]:
    found, failures = [package], {}
    try:
        root = importlib.import_module(package)
        found += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".",
                                                         onerror=lambda name: failures.setdefault(name, "walk failed"))]
    except BaseException as exc:
        failures[package] = f"{type(exc).__name__}: {exc}"
    for name in found:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    report[package] = {
        "modules": found,
        "failures": failures,
        "training_loaded": sorted(m for m in sys.modules if m == "training" or m.startswith("training.")),
    }
report["airflow_attempts"] = attempts
print(json.dumps(report))
"""


def _modules(package: str) -> dict[str, Path]:
    """Module name → file, from the file tree of ``package`` (subpackages included)."""
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, *, is_package: bool) -> list[tuple[str, int, str]]:
    """Every import in the file (module level, function level, under ``if``): (absolute target, line, statement).

    ``from a import b`` yields ``a.b``: callers decide whether that is a module or a name in ``a``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, ast.unparse(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += [
                (base if alias.name == "*" else f"{base}.{alias.name}", node.lineno, ast.unparse(node))
                for alias in node.names
            ]
    return found


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for module, path in _modules(package).items():
        for target, line, statement in _imports(module, path, is_package=path.name == "__init__.py"):
            if any(_is_under(target, f) for f in forbidden):
                problems.append(f"{module} ({path.relative_to(REPO)}:{line}): {statement}")
    return sorted(set(problems))


def _import_graph(package: str) -> dict[str, dict[str, int]]:
    """Intra-package edges: module → {imported module: first line}; targets resolve to the deepest module."""
    modules = _modules(package)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for target, line, _ in _imports(module, path, is_package=path.name == "__init__.py"):
            if not _is_under(target, package):
                continue
            while target not in modules and "." in target:  # a name inside a module, or a missing module
                target = target.rpartition(".")[0]
            if target in modules and target != module:
                graph[module].setdefault(target, line)
    return graph


def _find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per back edge of a depth-first search."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


@pytest.fixture(scope="module")
def imported() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *PURE], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"the import subprocess failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", PURE)
def test_every_module_imports_without_airflow(imported: dict, package: str) -> None:
    result = imported[package]
    assert set(result["modules"]) == set(_modules(package)), (
        f"walk_packages found {sorted(result['modules'])}, the file tree {sorted(_modules(package))}"
    )
    failures = "\n".join(f"  {module}: {error}" for module, error in sorted(result["failures"].items()))
    assert not result["failures"], f"{package} module(s) fail to import with Airflow blocked:\n{failures}"
    attempts = [a for a in imported["airflow_attempts"] if _is_under(a["module"], package)]
    assert not attempts, "Airflow imported by " + ", ".join(
        f"{a['module']} ({a['imports']})" for a in attempts
    )


def test_importing_monitoring_loads_no_training_module(imported: dict) -> None:
    loaded = imported["monitoring"]["training_loaded"]
    assert not loaded, (
        f"importing every monitoring module loaded {', '.join(loaded)}; "
        f"static imports of training: {_forbidden_imports('monitoring', ('training',)) or 'none (look for dynamic ones)'}"
    )


def test_monitoring_never_imports_training() -> None:
    problems = _forbidden_imports("monitoring", ("training",))
    assert not problems, "monitoring must not import training:\n  " + "\n  ".join(problems)


def test_pretrained_is_a_leaf() -> None:
    problems = _forbidden_imports("pretrained", ("training", "monitoring", "airflow"))
    assert not problems, "pretrained must import neither training, monitoring nor Airflow:\n  " + "\n  ".join(
        problems
    )


def test_monitoring_import_graph_is_acyclic() -> None:
    graph = _import_graph("monitoring")
    assert any(graph.values()), "no intra-package import found: the graph builder is broken"
    cycles = _find_cycles(graph)
    assert not cycles, "import cycle(s) in monitoring:\n  " + "\n  ".join(_describe(c, graph) for c in cycles)


# The checks above must not pass vacuously: the helpers do see what they are meant to find.
def test_static_helpers_find_lazy_imports_and_cycles(tmp_path, monkeypatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def f():\n    from . import a\n    from training.tiny import x\n")
    (package / "c.py").write_text("import pkg.a\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _forbidden_imports("pkg", ("training",)) == ["pkg.b (pkg/b.py:3): from training.tiny import x"]
    graph = _import_graph("pkg")
    assert graph == {"pkg": {}, "pkg.a": {"pkg.b": 1}, "pkg.b": {"pkg.a": 2}, "pkg.c": {"pkg.a": 1}}
    cycles = _find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"]]
    assert _describe(cycles[0], graph) == "pkg.a (line 1) -> pkg.b (line 2) -> pkg.a"
