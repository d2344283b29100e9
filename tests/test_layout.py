"""The package's layout holds: no import cycle among its own modules, and reading a recipe, the
sweep and the report stay free of torch and transformers."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iml_hf"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and inside functions, but not under
    ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` (``from a import b`` counts as importing the
    module ``a.b`` when there is one, else ``a``)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package_name.split(".")[: len(package_name.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {t for t in map(known, targets) if t and t != name and t.split(".")[0] == package.name}
        graph[name] = edges
    return graph


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100  # the walk found the package and its imports
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "iml_hf"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from iml_hf.b import x\n")
    (package / "b.py").write_text("def x():\n    from .sub import a\n")  # inside a function: counted
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from iml_hf.b import x\n")
    graph = import_graph(package)
    assert (
        graph["iml_hf.sub.a"] == {"iml_hf.b"} and graph["iml_hf.b"] == {"iml_hf.sub.a"} and graph["iml_hf.c"] == set()
    )
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


LIGHT = {
    "parsing a recipe": "from iml_hf.config import parse_recipe; parse_recipe(['recipes/toy.yaml'])",
    "the Python API's load_recipe": "import iml_hf; iml_hf.load_recipe('recipes/entities_cpu.yaml', seed=3)",
    "iml_hf.sweep": "import iml_hf.sweep",
    "iml_hf.report": "import iml_hf.report",
}


@pytest.mark.parametrize("what", list(LIGHT))
def test_reading_recipes_sweeps_and_reports_imports_no_torch(what):
    code = f"import sys; {LIGHT[what]}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{what} imported {done.stdout.strip()}"
