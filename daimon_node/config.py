"""Node configuration: TOML files in ``configs/``, overridable by CLI flags.

Every key has a default here; a config file need only set what differs. Unknown
keys are an error (a typo should not be silently ignored).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from daimon_node.errors import ConfigError


@dataclass
class NodeSection:
    data_dir: str = ".daimon/node"  # node key, chain stores, content store
    log_level: str = "info"
    # extra components by import path, "package.module:SPEC" (a test harness's cheater)
    components: list[str] = field(default_factory=list)


@dataclass
class P2PSection:
    listen: str = "/ip4/127.0.0.1/tcp/0"  # libp2p listen multiaddr
    bootstrap: list[str] = field(default_factory=list)  # peers' multiaddrs with /p2p/<id>; one is enough with the DHT
    announce: list[str] = field(default_factory=list)  # what peers learn instead of `listen` (NAT, port map, proxy)
    dht: bool = True  # Kademlia DHT: peers beyond the bootstrap list, content holders by provider records
    mdns: bool = False  # find peers on the LAN by multicast DNS (every interface)
    target_peers: int = 8  # dial discovered peers while fewer are connected


@dataclass
class RpcSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8545  # 0 = any free port (written to <data_dir>/rpc.port)


@dataclass
class ChainSection:
    follow: list[str] = field(default_factory=lambda: ["*"])  # chain ids (hex), or "*" for all problems
    clock_drift_s: float = 2.0  # allowance for gossip just outside its period


@dataclass
class ContributorSection:
    enabled: bool = False
    problem_dir: str = ""  # made by `daimon-node problem create`
    secret_file: str = ""  # salt and holdout labels; "" = <problem_dir>.secret.json beside the problem dir
    reveal: bool = True  # open each season's holdout in its reveal window and seal the next one


@dataclass
class ImproverSection:
    enabled: bool = False
    models: list[str] = field(default_factory=list)  # ONNX files, submitted one per round, in order
    chain: str = ""  # chain id hex; "" = the first problem followed


@dataclass
class CheaterSection:
    """A lookup-table cheater (tests and the demo, issue 9): attacks the DEL, fails the holdout."""

    enabled: bool = False
    rounds: int = 1  # lookup tables built, one per new public best model
    max_seconds: float = 30.0  # attack time per table
    wait_for_best: bool = True  # false: attack random labels if no model has settled yet
    after_period: int = 0  # cheat only from this competition period on (let honest models settle first)
    chain: str = ""  # chain id hex; "" = the first problem followed


@dataclass
class RunnerSection:
    """A model runner (docs/market.md): serves the chain's best model over /daimon/infer/1."""

    enabled: bool = False
    price: int = 1  # base units of the problem's token per input; a call of N inputs costs N x price
    chain: str = ""  # chain id hex; "" = every followed chain
    model: str = ""  # serve this ONNX file instead of following the best model (tests a stale runner)
    # "confirmed": the last model past its season's holdout (never burns: a paying user gets what
    # stays); "provisional": the newest settled one, which its season's judge may still burn.
    serve: str = field(default="confirmed", metadata={"choices": ("confirmed", "provisional")})


@dataclass
class ValidatorSection:
    enabled: bool = False


@dataclass
class CommitterSection:
    enabled: bool = False


@dataclass
class RolesSection:
    contributor: ContributorSection = field(default_factory=ContributorSection)
    improver: ImproverSection = field(default_factory=ImproverSection)
    cheater: CheaterSection = field(default_factory=CheaterSection)
    validator: ValidatorSection = field(default_factory=ValidatorSection)
    committer: CommitterSection = field(default_factory=CommitterSection)
    runner: RunnerSection = field(default_factory=RunnerSection)


@dataclass
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    rpc: RpcSection = field(default_factory=RpcSection)
    chain: ChainSection = field(default_factory=ChainSection)
    roles: RolesSection = field(default_factory=RolesSection)

    @property
    def data_dir(self) -> Path:
        return Path(self.node.data_dir)


def _fill(cls: type, values: dict[str, Any], where: str) -> Any:
    obj = cls()
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown config key {where}{key}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} must be a table")
            setattr(obj, key, _fill(type(current), value, f"{where}{key}."))
            continue
        if isinstance(current, bool) != isinstance(value, bool) or (
            not isinstance(value, type(current)) and not (isinstance(current, float) and isinstance(value, int))
        ):
            raise ConfigError(f"config key {where}{key} must be {type(current).__name__}, not {type(value).__name__}")
        choices = known[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"config key {where}{key} must be one of {', '.join(map(repr, choices))}, not {value!r}")
        setattr(obj, key, float(value) if isinstance(current, float) else value)
    return obj


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read ``path`` (if given), then apply ``overrides`` (dotted keys, e.g. ``rpc.port``)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _fill(NodeConfig, values, "")
