"""The node's components: each says from the config whether it is on, and builds itself.

Trinity-style: a ``ComponentSpec`` has a ``name``, ``is_enabled(config)`` and
``from_config(config, ctx)``; what it builds (one component, or a tuple of them sharing a role)
has ``async step(ctx, handle)`` (called on every followed chain each tick) and ``close()``, and
may have ``async run(ctx)`` (started once in the node's nursery). The node steps each enabled
component in a task of its own, with no knowledge of any role.
Components beyond the built-in ones are named in the config by import path
(``node.components = ["package.module:SPEC"]``): that is how a test harness adds its
lookup-table cheater without the daemon importing it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from p2p import PROBLEMS_TOPIC

from daimon_node.config import NodeConfig
from daimon_node.daemon.chains import ChainHandle, decode_proposal
from daimon_node.daemon.context import RoleContext
from daimon_node.daemon.roles import ContributorRole, ImproverReveal, ImproverRole, ValidatorRole, step_committer
from daimon_node.errors import ConfigError

PROPOSAL_REPUBLISH_S = 5.0  # a contributor regossips its proposal so late joiners learn the problem


@runtime_checkable
class Component(Protocol):
    name: str

    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    is_enabled: Callable[[NodeConfig], bool]
    from_config: Callable[[NodeConfig, RoleContext], "Component | tuple[Component, ...]"]


@dataclass
class RoleComponent:
    """A role stepped on every chain, or on one chain only (``chain``: its id in hex)."""

    name: str
    role: Any  # has ``async step(ctx, handle)``
    chain: str = ""

    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None:
        if not self.chain or self.chain == handle.chain_id.hex():
            await self.role.step(ctx, handle)

    def close(self) -> None:
        close = getattr(self.role, "close", None)
        if close is not None:
            close()


class CommitterRole:
    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None:
        await step_committer(ctx, handle)


@dataclass
class ContributorComponent:
    """Serves its problem's content, regossips the proposal, runs the seasons."""

    role: ContributorRole
    name: str = "contributor"
    last_publish: float = 0.0  # monotonic seconds

    async def step(self, ctx: RoleContext, handle: ChainHandle) -> None:
        own = handle.proposal.creator == ctx.keys.public_key
        if own and time.monotonic() - self.last_publish > PROPOSAL_REPUBLISH_S:
            self.last_publish = time.monotonic()
            await ctx.publish_raw(PROBLEMS_TOPIC, handle.proposal.encode())
        await self.role.step(ctx, handle)

    def close(self) -> None:
        return None


def contributor(config: NodeConfig, ctx: RoleContext) -> Component:
    section = config.roles.contributor
    role = ContributorRole(Path(section.problem_dir),
                           secret_file=Path(section.secret_file) if section.secret_file else None,
                           reveal=section.reveal)
    role.load_content(ctx.content)
    ctx.chains.add_proposal(decode_proposal((role.problem_dir / "proposal.bin").read_bytes()))
    return ContributorComponent(role)


def improver(config: NodeConfig, ctx: RoleContext) -> tuple[Component, ...]:
    """Proving and revealing as two components of one role: each runs in its own task, so a
    reveal due now never waits for a PROVE of the next model."""
    section = config.roles.improver
    role = ImproverRole([Path(p) for p in section.models])
    return RoleComponent("improver", role, section.chain), RoleComponent("improver-reveal", ImproverReveal(role),
                                                                          section.chain)


def runner(config: NodeConfig, ctx: RoleContext) -> Component:
    """A model runner (issue 8, docs/market.md): serves ``/daimon/infer/1`` besides its role."""
    from daimon_node.daemon.runner import RunnerRole

    section = config.roles.runner
    role = RunnerRole(section.price, section.chain, Path(section.model) if section.model else None,
                      serve=section.serve)
    role.attach(ctx)
    return RoleComponent("runner", role)


BUILTIN: tuple[ComponentSpec, ...] = (
    ComponentSpec("contributor", lambda c: c.roles.contributor.enabled, contributor),
    ComponentSpec("committer", lambda c: c.roles.committer.enabled,
                  lambda c, ctx: RoleComponent("committer", CommitterRole())),
    ComponentSpec("validator", lambda c: c.roles.validator.enabled,
                  lambda c, ctx: RoleComponent("validator", ValidatorRole())),
    ComponentSpec("improver", lambda c: c.roles.improver.enabled, improver),
    ComponentSpec("runner", lambda c: c.roles.runner.enabled, runner),
)


def load_spec(path: str) -> ComponentSpec:
    """``package.module:NAME`` -> the ``ComponentSpec`` it names."""
    module_name, _, attr = path.partition(":")
    try:
        spec = getattr(importlib.import_module(module_name), attr or "COMPONENT")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"node.components: cannot load {path!r}: {exc}") from None
    if not isinstance(spec, ComponentSpec):
        raise ConfigError(f"node.components: {path!r} is not a ComponentSpec")
    return spec


def build_components(config: NodeConfig, ctx: RoleContext) -> list[Component]:
    """The enabled components, built-in ones first, then those the config names."""
    specs = [*BUILTIN, *(load_spec(p) for p in config.node.components)]
    built: list[Component] = []
    for spec in specs:
        if spec.is_enabled(config):
            made = spec.from_config(config, ctx)
            built.extend(made if isinstance(made, tuple) else (made,))
    return built
