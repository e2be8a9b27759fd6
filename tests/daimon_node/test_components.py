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


@pytest.mark.trio
async def test_a_slow_component_does_not_hold_up_the_others() -> None:
    """A PROVE or VERIFY takes seconds under load; in one shared loop it held up the committer's
    seal and the improver's reveal past their period (an honest proof voided as not revealed).
    Each component now steps in its own task."""
    from types import SimpleNamespace

    import trio

    from daimon_node.daemon.node import TICK_S, Node

    class Slow:
        name = "slow"

        async def step(self, ctx: object, handle: object) -> None:
            await trio.sleep_forever()  # a PROVE that never ends

    class Quick:
        name = "quick"
        steps = 0

        async def step(self, ctx: object, handle: object) -> None:
            self.steps += 1

    quick = Quick()
    fake = SimpleNamespace(chains=SimpleNamespace(chains={b"c": object()}), context=None, components=[Slow(), quick],
                           periodic=[], p2p=SimpleNamespace(rejudge=lambda: trio.sleep(0)))
    fake._component_loop = lambda c: Node._component_loop(fake, c)  # type: ignore[arg-type]
    fake._step_component = lambda c, h: Node._step_component(fake, c, h)  # type: ignore[arg-type]
    with trio.move_on_after(8 * TICK_S):
        await Node._tick_loop(fake)  # type: ignore[arg-type]
    assert quick.steps >= 4  # about one step a tick while the slow one never returns


def test_the_improver_is_two_components_sharing_one_role(tmp_path: Path) -> None:
    from daimon_node.daemon.components import build_components
    from daimon_node.daemon.roles import ImproverReveal

    cfg = load_config(None, {"roles.improver.enabled": True, "roles.validator.enabled": False,
                             "roles.committer.enabled": False})
    built = {c.name: c for c in build_components(cfg, None)}  # type: ignore[arg-type]
    assert isinstance(built["improver-reveal"].role, ImproverReveal)  # type: ignore[attr-defined]
    assert built["improver-reveal"].role.improver is built["improver"].role  # type: ignore[attr-defined]
