"""The architecture of docs/architecture.md, checked by reading the code (an AST walk, no imports).

A rule that only lives in a document drifts; this file is where the layout is enforced:
- the arrows allowed between the packages of ``daimon_node`` (the daemon never imports the CLI
  or the test harnesses, the RPC layer never imports the daemon...);
- no import circle between modules inside ``daimon_node``;
- no function over ``MAX_FUNCTION_LINES`` and no module over ``MAX_MODULE_LINES`` in the
  shipped packages (tests and benchmarks are exempt).

Imports inside ``if TYPE_CHECKING:`` do not count: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("chain", "p2p", "del_embed", "daimon_node")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500

# Group of each daimon_node module: its subpackage, or "basics" for the top-level modules.
BASICS = "basics"
# For each group, the groups it may import (itself always allowed). docs/architecture.md draws it.
ALLOWED: dict[str, set[str]] = {
    BASICS: set(),
    "rpc": {BASICS},
    "proofs": {BASICS},
    "market": {BASICS, "proofs"},
    "daemon": {BASICS, "rpc", "proofs", "market"},
    "harness": {BASICS, "rpc", "proofs", "market", "daemon"},
    "cli": {BASICS, "rpc", "proofs", "market", "daemon", "harness"},
}


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED:
        return parts[1]
    return BASICS


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The daimon_node modules that ``path`` imports at run time (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if is_type_checking_block(node):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in python_files("daimon_node")}
    known = set(paths)
    return {name: imported_modules(path, known) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_package_arrows_follow_the_architecture() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{src} -> {dst}"
        for src, targets in graph.items()
        for dst in targets
        if group_of(dst) != group_of(src) and group_of(dst) not in ALLOWED[group_of(src)]
        and dst != "daimon_node"  # the package's own empty __init__
    )
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_no_import_circle_inside_daimon_node() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def long_functions() -> list[str]:
    found = []
    for package in SHIPPED:
        for path in python_files(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_over_the_limit() -> None:
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def test_no_module_over_the_limit() -> None:
    found = [
        f"{path.relative_to(ROOT)} ({n} lines)"
        for package in SHIPPED
        for path in python_files(package)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not found, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_circle_finder_finds_circles(source: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(source) == expected


def test_libraries_never_import_the_daemon_package() -> None:
    wrong = []
    for package in ("chain", "p2p", "del_embed"):
        for path in python_files(package):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                wrong += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] == "daimon_node"]
    assert not wrong, "\n".join(wrong)
