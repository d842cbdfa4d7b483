"""The package's shape: no import cycles between chatsync's modules (deferred imports inside
functions count too), the product never imports the development package, the DAG files are one
import and one call, and every SQL statement has one name."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "chatsync"
DEVTOOLS = REPO / "devtools" / "chatsync_devtools"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The chatsync modules a file imports (a `from package import module` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in ("chatsync", "chatsync_devtools"))
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    return {name: {m for m in _imports(path, modules) if m in modules and m != name and not name.startswith(m + ".")}
            for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_in_the_product_or_the_devtools():
    assert _cycle(_graph(PACKAGE)) is None
    assert _cycle(_graph(DEVTOOLS)) is None


def test_the_product_never_imports_the_development_package():
    offenders = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "chatsync_devtools" in p.read_text())
    assert offenders == []


def test_the_dag_files_are_an_import_and_a_call():
    for path in sorted((REPO / "dags").glob("*.py")):
        body = [n for n in ast.parse(path.read_text()).body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert len(body) == 2, path.name
        imported, called = body
        assert isinstance(imported, ast.ImportFrom) and imported.module == f"chatsync.airflow.dags.{path.stem}"
        assert isinstance(called, ast.Expr) and isinstance(called.value, ast.Call)
        assert called.value.func.id == path.stem  # type: ignore[attr-defined]


def test_every_statement_is_found_by_its_name_alone():
    from chatsync.db.statements import STATEMENTS
    from chatsync_devtools.statements import STATEMENTS as DEVTOOLS_STATEMENTS

    product = set(STATEMENTS.paths)
    devtools = set(DEVTOOLS_STATEMENTS.paths)
    on_disk = [p for p in (PACKAGE / "sql").rglob("*.sql") if "migrations" not in p.parts]
    assert len(product) == len(on_disk) and not product & devtools
    assert "repair_batch" in product and "simulate_fill_rooms" in devtools
