"""The shape the codebase keeps: no import cycle, dependencies one way, short functions, and no
first-party import hidden inside a function (only the heavy SDKs the import-cost test guards are
imported lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("shared", "ops", "tools")
MAX_FUNCTION_LINES = 50


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _runtime_imports(tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """First-party modules imported at run time (``if TYPE_CHECKING:`` blocks are for the checker)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in modules}


def test_no_import_cycle_anywhere() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(ast.parse(path.read_text()), modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def _unit(name: str) -> str:
    """The package a module belongs to: a subpackage of ``shared`` (``shared.delivery``) counts as one
    unit, a top-level module (``shared.storage``) as its own."""
    parts = name.split(".")
    if len(parts) >= 3:
        return ".".join(parts[:2])
    return name


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    return cycles


def test_no_package_imports_another_that_imports_it_back() -> None:
    """Module cycles are not the only tangle: ``shared.delivery`` importing ``shared.response`` while
    ``shared.response`` imports ``shared.delivery`` is a cycle between packages, even when no two
    modules import each other. Each subpackage is one node here; a top-level module its own."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        unit = _unit(name)
        imports = {_unit(i) for i in _runtime_imports(ast.parse(path.read_text()), modules)}
        graph.setdefault(unit, set()).update(imports - {unit})
    for unit in {u for targets in graph.values() for u in targets}:
        graph.setdefault(unit, set())
    assert _cycles(graph) == []


def test_dependencies_point_one_way() -> None:
    """The rest of ``shared`` never reaches back to the composition root or the triggers, and the
    API clients never import the delivery package."""
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if not name.startswith("shared.") or name.startswith(("shared.functions", "shared.__main__")):
            continue
        imports = _runtime_imports(ast.parse(path.read_text()), modules)
        if name != "shared.wiring" and any(i == "shared.wiring" or i.startswith("shared.functions") for i in imports):
            offenders.append(f"{name} imports the wiring or a trigger")
        if name.startswith("shared.defender") and any(i.startswith("shared.delivery") for i in imports):
            offenders.append(f"{name} imports the delivery package")
    assert offenders == []


def test_no_function_in_shared_is_longer_than_fifty_lines() -> None:
    long = []
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "ops").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


BLUEPRINTS = ROOT / "shared" / "functions"


def test_first_party_modules_are_imported_at_module_level() -> None:
    """A function-local import of our own module hides a dependency (and, often, a cycle). The one
    exception is the blueprints: the host imports them to index the functions (cold start), so
    they load the app's machinery when a function first runs — at the top of that function."""
    hidden = []
    paths = [
        *(ROOT / "shared").rglob("*.py"),
        *(ROOT / "ops").rglob("*.py"),
        *(p for p in (ROOT / "tools").rglob("*.py") if "node_modules" not in p.parts),
    ]
    for path in paths:
        if path.parent == BLUEPRINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(("shared", "ops", "tools")):
                    hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno} {inner.module}")
    assert hidden == []


def test_readme_is_a_front_door_and_every_link_resolves() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    broken = []
    for doc in [ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if not target.startswith(("http://", "https://")) and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert broken == []


def test_nothing_points_outside_the_repository() -> None:
    """The reference material this product was built against is copied into docs/reference."""
    offenders = []
    for path in ROOT.rglob("*"):
        if path.is_dir() or path.suffix not in (".py", ".md", ".sh", ".json", ".bicep", ".tf", ".toml", ".kql"):
            continue
        if any(p in path.parts for p in (".venv", ".venv-infra", "node_modules", ".git", ".local")):
            continue
        text = path.read_text(errors="replace")
        if "../" + "shared" in text or "shared/" + "reference" in text:  # split: this file is scanned too
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_delivery_depends_on_protocols_only() -> None:
    """Every port of ``Deps`` is a Protocol (a fake or another store can stand in, and the delivery
    package imports no concrete adapter of another package); the rest are plain values."""
    import typing

    from shared.delivery.ports import Deps

    values = {"settings", "risk", "rules", "audit"}  # settings, weights, the rules file, a callback
    concrete = []
    for name, hint in typing.get_type_hints(Deps).items():
        members = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if name not in values and not all(getattr(m, "_is_protocol", False) for m in members):
            concrete.append(f"{name}: {hint}")
    assert concrete == []
