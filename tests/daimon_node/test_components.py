"""The node only assembles (issue 15): components come from the config, the daemon imports no
harness, and the RPC backend sees the node only through ``NodeAPI``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daimon_node.config import load_config
from daimon_node.daemon.components import BUILTIN, RoleComponent, load_spec
from daimon_node.errors import ConfigError
from daimon_node.harness.cheater import COMPONENT_PATH, CheaterRole

DAEMON = Path(__file__).resolve().parents[2] / "daimon_node" / "daemon"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DAEMON.glob("*.py")), ids=lambda p: p.name)
def test_the_daemon_imports_no_harness_and_no_cli(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.startswith(("daimon_node.harness", "daimon_node.cli"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_backend_does_not_import_the_node() -> None:
    assert "daimon_node.daemon.node" not in imported_modules(DAEMON / "backend.py")
    assert "daimon_node.daemon.node" not in imported_modules(DAEMON / "nodeapi.py")


def test_the_cheater_is_a_component_named_by_import_path(tmp_path: Path) -> None:
    config = load_config(None, {"roles.cheater.enabled": True, "roles.cheater.chain": "ab",
                                "node.components": [COMPONENT_PATH]})
    spec = load_spec(COMPONENT_PATH)
    assert spec.is_enabled(config) and not any(s.is_enabled(config) for s in BUILTIN)

    class Ctx:
        data_dir = tmp_path

    component = spec.from_config(config, Ctx())  # type: ignore[arg-type]
    assert isinstance(component, RoleComponent) and isinstance(component.role, CheaterRole)
    assert component.chain == "ab" and component.role.out_dir == tmp_path / "cheater"
    assert not spec.is_enabled(load_config(None))


@pytest.mark.parametrize("path", ["daimon_node.harness.cheater:NOPE", "no.such.module:X",
                                  "daimon_node.harness.cheater:CheaterRole"])
def test_a_bad_component_path_is_a_config_error(path: str) -> None:
    with pytest.raises(ConfigError):
        load_spec(path)
