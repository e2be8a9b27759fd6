"""The RPC surface: what the node implements (``RpcBackend``), the method table, result shapes.

Conventions, chosen once so that every method follows them:

- Backend methods are ``async def``: the node may await its mempool, store or peers
  without blocking the server, and a method that needs no await costs one coroutine.
- Params reach the backend already validated and decoded: chain ids, hashes and
  addresses as ``bytes`` of the exact size, raw payloads as ``bytes``, numbers as
  ``int``. The dispatcher does this from the ``METHODS`` table before the backend
  runs, so the node never parses hex or checks types itself.
- Results are JSON-friendly: bytes as ``0x``-prefixed lowercase hex; counts, heights,
  periods and timestamps as JSON numbers; token amounts as decimal strings because
  they reach 2^128 and JSON numbers lose precision above 2^53. ``None`` becomes ``null``.
- Failures are the typed errors of ``daimon_node.rpc.errors``: ``NotFound`` for an
  unknown chain (a missing block is ``None``, as in Ethereum's API), ``Rejected(reason)``
  for a submission the node refuses, ``Unavailable`` while the node cannot answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal, NotRequired, Protocol, TypedDict, runtime_checkable

from daimon_node.rpc.errors import InvalidParams


# --- Result shapes ---------------------------------------------------------------------
class HolderInfo(TypedDict):
    """A peer that said (over ``/daimon/problems/1``) it follows a chain, and its height."""

    peer_id: str
    height: int  # -1 before the Problem block


class ProblemSummary(TypedDict):
    """One entry of ``daimon_listProblems``: the chains the node follows, then the ones peers
    serve that it verified but does not follow (``followed`` false, ``height`` -1)."""

    chain: str  # 0x + 32-byte chain id
    name: str
    height: int  # our head height, -1 before the Problem block (or when not followed)
    head: str  # 0x + head block hash
    followed: bool
    holders: list[HolderInfo]  # peers heard from lately, highest first


class Balance(TypedDict):
    """``daimon_getBalance``: both amounts are decimal strings of base units."""

    spendable: str
    locked: str  # bonds (validator, improver, contributor), including unbonding


class LockedPart(TypedDict):
    """One part of ``daimon_getLocks``: why an amount is locked and when it can come back."""

    kind: str  # validator_bond | unbonding | channel_deposit | season_reward | improver_bond | contributor_bond
    amount: str  # decimal base units
    free_from: int | None  # first period it can come back; null: not before the owner acts (an active bond)
    action: str  # the command that returns it ("" when the chain returns it by itself)
    ref: str | None  # 0x runner address (channel) or validator key (bond); null otherwise
    season: int | None  # the season it waits for, or null


class Locks(TypedDict):
    """``daimon_getLocks``: an address's balance and what its locked part is made of."""

    address: str
    period: int  # the chain clock's current period
    spendable: str
    locked: str  # on a node, the sum of ``parts``
    parts: list[LockedPart]


class BondInfo(TypedDict):
    """``daimon_getBond``: a validator key's bond."""

    validator: str  # 0x + 32-byte public key
    address: str
    amount: str
    since_height: int  # votes count from blocks after this one
    unbond_period: int  # 0 while active; else the period from which ``WithdrawBond`` returns it


class BestModel(TypedDict):
    """``daimon_bestModel``: the best settled model of a chain."""

    model_digest: str  # 0x + 32 bytes
    prover: str  # 0x + 20-byte address of the improver who proved it
    distance_ppb: int  # mean distance d_c in parts per billion
    period: int
    height: int  # block that settled it


class PeriodInfo(TypedDict):
    """``daimon_period``: where the chain's clock is now (seconds since the epoch)."""

    period: int  # 0 is T_p; 1, 2, ... are competition periods of length T_b
    start: int
    end: int
    remaining: float  # seconds until ``end``, >= 0


class SyncStatus(TypedDict):
    """One chain being synced (``daimon_syncing`` returns a list of these, or ``False``)."""

    chain: str
    current: int
    highest: int


class ChainHead(TypedDict):
    chain: str
    height: int
    head: str
    gossip_peers: int  # peers subscribed to the chain's blocks topic


class Discovery(TypedDict):
    """How the node finds peers and content holders (p2p/discovery.py), counted since start."""

    dht: bool
    mdns: bool
    routing_table: int  # peers in the DHT routing table
    provided: int  # content ids announced as provider records
    provider_lookups: int  # fetches that asked the DHT for holders
    dials: int  # dials of peers the DHT or mDNS found
    dial_failures: int
    mdns_found: int


class NodeInfo(TypedDict):
    """``daimon_nodeInfo``; ``/health`` reads ``healthy``, ``peers`` and ``chains``."""

    version: str
    peer_id: str
    peers: int
    healthy: bool  # False makes /health answer 503
    chains: list[ChainHead]
    discovery: NotRequired[Discovery]
    reason: NotRequired[str]  # why unhealthy, shown by /health


class PeerInfo(TypedDict):
    """One entry of ``daimon_peers``: what this node knows of a peer it has met."""

    peer_id: str
    connected: bool
    accepted: int  # gossip messages of this peer our validators accepted
    rejected: int  # ... rejected (each also a penalty unit)
    ignored: int
    deferred: int
    penalty: float  # current decayed penalty; a ban starts at the node's threshold
    banned_for_s: float  # seconds of ban left, 0 if not banned


class Offer(TypedDict):
    """One entry of ``daimon_getOffers``: a model runner's inference offer."""

    provider: str  # 0x + 20-byte address
    price: str  # decimal base units
    peer_id: str
    model_digest: str


class Reputation(TypedDict):
    """``daimon_getReputation``."""

    address: str
    score: int  # sum of the ratings received
    ratings: int  # how many ratings


# --- The backend ---------------------------------------------------------------------
@runtime_checkable
class RpcBackend(Protocol):
    """What the node implements for the RPC server. See the module docstring for conventions."""

    async def list_problems(self) -> list[ProblemSummary]: ...

    async def get_problem(self, chain: bytes) -> dict[str, Any]:
        """The problem's proposal (params, first tuple, holdout, creator) as JSON, plus ``chain``."""
        ...

    async def block_number(self, chain: bytes) -> int: ...

    async def get_block_by_number(self, chain: bytes, number: int) -> dict[str, Any] | None:
        """Canonical block at ``number`` as ``daimon_node.rpc.render.block_json`` renders it, or None."""
        ...

    async def get_block_by_hash(self, chain: bytes, block_hash: bytes) -> dict[str, Any] | None: ...

    async def get_balance(self, chain: bytes, address: bytes) -> Balance: ...

    async def get_nonce(self, chain: bytes, address: bytes) -> int:
        """The next nonce the account must use (pending transactions included if the node counts them)."""
        ...

    async def best_model(self, chain: bytes) -> BestModel | None: ...

    async def confirmed_model(self, chain: bytes) -> BestModel | None:
        """The last model past every check that can burn it (its season's holdout, when there is
        one): what runners serve by default (``runner.serve``)."""
        ...

    async def get_locks(self, chain: bytes, address: bytes) -> Locks:
        """What ``address`` holds locked, why, and from which period each part can come back."""
        ...

    async def get_bond(self, chain: bytes, validator: bytes) -> BondInfo | None:
        """The bond of a validator public key, or None."""
        ...

    async def period(self, chain: bytes) -> PeriodInfo: ...

    async def send_raw_transaction(self, chain: bytes, raw: bytes) -> str:
        """Admit an encoded ``Transaction`` to the mempool; returns its hash (hex) or raises ``Rejected``."""
        ...

    async def submit_proof(self, chain: bytes, raw: bytes) -> str:
        """Admit an encoded ``PoI``; returns its hash (hex) or raises ``Rejected``."""
        ...

    async def submit_vote(self, chain: bytes, raw: bytes) -> str:
        """Admit an encoded ``Vote``; returns SHA-256 of its encoding (hex) or raises ``Rejected``."""
        ...

    async def submit_model(self, chain: bytes, raw: bytes, prover: bytes) -> str:
        """Store and serve an ONNX model that ``prover`` (a public key) has claimed on chain or in a
        pooled ``RegisterDigest``; returns its digest."""
        ...

    async def submit_reveal(self, chain: bytes, raw: bytes) -> str:
        """Admit an encoded ``Reveal`` (or a contributor's ``SeasonReveal``); returns the hash of the
        PoI it opens (hex), or raises ``Rejected``."""
        ...

    async def submit_test_tuple(self, chain: bytes, raw: bytes) -> str:
        """Admit an encoded extra ``TestTuple`` during T_p (signed by the problem's contributor for
        this chain; ``chain.tuples.check_extra_tuple``); returns SHA-256 of its encoding (hex) or
        raises ``Rejected``. The committer of period 0 puts it in the Problem block."""
        ...

    async def get_content(self, content_id: bytes) -> str:
        """The bytes of a content object this node holds (test inputs, holdout inputs, DEL
        artifacts, models), as 0x-hex; ``NotFound`` if it has none by that id."""
        ...

    async def peer_count(self) -> int: ...

    async def peers(self) -> list[PeerInfo]:
        """Every peer the node tracks, with its gossip verdict counts, penalty and ban."""
        ...

    async def syncing(self) -> Literal[False] | list[SyncStatus]: ...

    async def node_info(self) -> NodeInfo: ...

    async def get_offers(self, chain: bytes) -> list[Offer]: ...

    async def get_reputation(self, chain: bytes, address: bytes) -> Reputation: ...

    async def get_committers(self, chain: bytes) -> dict[str, Any]:
        """The committer set in force now, the next in-turn key, scheduled changes and bonded
        keys' records (docs/protocol.md, "Committers by transaction")."""
        ...

    async def get_channel(self, chain: bytes, payer: bytes, runner: bytes) -> dict[str, Any] | None:
        """The payment channel from ``payer`` to ``runner`` (docs/market.md), or None."""
        ...

    async def infer_quote(self, chain: bytes, runner: bytes, payer: bytes) -> dict[str, Any]:
        """Ask the runner with that address (over ``/daimon/infer/1``) for its price, model digest
        and what ``payer`` has paid so far."""
        ...

    async def infer(self, chain: bytes, runner: bytes, voucher: bytes, inputs: bytes) -> dict[str, Any]:
        """Relay a paid call (an encoded ``Voucher`` and ``.npy`` inputs) to the runner; its
        model digest, labels and scores (``.npy`` hex)."""
        ...

    async def dashboard(self, chain: bytes) -> dict[str, Any]:
        """Everything the web page shows of a chain: period, best-distance history, recent blocks
        with proofs, votes and rewards, top improvers and validators, offers with reputation."""
        ...


# --- Param validation ------------------------------------------------------------------
_HEX_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
MAX_UINT64: Final[int] = (1 << 64) - 1


@dataclass(frozen=True)
class Hex:
    """A ``0x`` hex string decoded to bytes; ``size`` fixes the decoded length."""

    size: int | None = None

    def parse(self, name: str, value: Any) -> bytes:
        if type(value) is not str:
            raise InvalidParams(f"{name}: expected a 0x-prefixed hex string, got {_json_type(value)}")
        if _HEX_RE.fullmatch(value) is None:
            raise InvalidParams(f"{name}: not an even-length 0x-prefixed hex string: {value[:24]!r}")
        if self.size is not None and len(value) != 2 + 2 * self.size:
            raise InvalidParams(f"{name}: expected {self.size} bytes, got {(len(value) - 2) // 2}")
        return bytes.fromhex(value[2:])

    def describe(self) -> str:
        return f"hex, {self.size} bytes" if self.size is not None else "hex bytes"


@dataclass(frozen=True)
class UInt:
    """A JSON integer in ``0..high`` (booleans and floats are refused)."""

    high: int = MAX_UINT64

    def parse(self, name: str, value: Any) -> int:
        if type(value) is not int:
            raise InvalidParams(f"{name}: expected an integer, got {_json_type(value)}")
        if not 0 <= value <= self.high:
            shown = str(value) if abs(value) < 10**24 else f"an integer of {len(str(value))} characters"
            raise InvalidParams(f"{name}: {shown} is outside 0..{self.high}")
        return value

    def describe(self) -> str:
        return f"integer 0..{self.high}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


CHAIN: Final = Hex(32)
HASH: Final = Hex(32)
ADDRESS: Final = Hex(20)
RAW: Final = Hex()
PUBKEY: Final = Hex(32)
BLOCK_NUMBER: Final = UInt()


@dataclass(frozen=True)
class Param:
    name: str
    kind: Hex | UInt


@dataclass(frozen=True)
class MethodSpec:
    """One RPC method: the backend attribute it calls and its params in order."""

    backend_name: str
    params: tuple[Param, ...] = ()

    @property
    def rpc_name(self) -> str:
        return rpc_method_name(self.backend_name)


def rpc_method_name(backend_name: str) -> str:
    """``block_number`` -> ``daimon_blockNumber``."""
    head, *rest = backend_name.split("_")
    return "daimon_" + head + "".join(w.capitalize() for w in rest)


_C, _A = Param("chain", CHAIN), Param("address", ADDRESS)
METHODS: Final[dict[str, MethodSpec]] = {
    spec.rpc_name: spec
    for spec in (
        MethodSpec("list_problems"),
        MethodSpec("get_problem", (_C,)),
        MethodSpec("block_number", (_C,)),
        MethodSpec("get_block_by_number", (_C, Param("number", BLOCK_NUMBER))),
        MethodSpec("get_block_by_hash", (_C, Param("block_hash", HASH))),
        MethodSpec("get_balance", (_C, _A)),
        MethodSpec("get_nonce", (_C, _A)),
        MethodSpec("best_model", (_C,)),
        MethodSpec("confirmed_model", (_C,)),
        MethodSpec("get_locks", (_C, _A)),
        MethodSpec("get_bond", (_C, Param("validator", PUBKEY))),
        MethodSpec("period", (_C,)),
        MethodSpec("send_raw_transaction", (_C, Param("raw", RAW))),
        MethodSpec("submit_proof", (_C, Param("raw", RAW))),
        MethodSpec("submit_vote", (_C, Param("raw", RAW))),
        MethodSpec("submit_reveal", (_C, Param("raw", RAW))),
        MethodSpec("submit_model", (_C, Param("raw", RAW), Param("prover", PUBKEY))),
        MethodSpec("submit_test_tuple", (_C, Param("raw", RAW))),
        MethodSpec("get_content", (Param("content_id", HASH),)),
        MethodSpec("peer_count"),
        MethodSpec("peers"),
        MethodSpec("syncing"),
        MethodSpec("node_info"),
        MethodSpec("get_offers", (_C,)),
        MethodSpec("get_reputation", (_C, _A)),
        MethodSpec("get_committers", (_C,)),
        MethodSpec("get_channel", (_C, Param("payer", ADDRESS), Param("runner", ADDRESS))),
        MethodSpec("infer_quote", (_C, Param("runner", ADDRESS), Param("payer", ADDRESS))),
        MethodSpec("infer", (_C, Param("runner", ADDRESS), Param("voucher", RAW), Param("inputs", RAW))),
        MethodSpec("dashboard", (_C,)),
    )
}

# Subscriptions over WebSocket: ``daimon_subscribe`` params are ``[topic, chain]``.
SUBSCRIPTION_TOPICS: Final[tuple[str, ...]] = ("newHeads", "proofs", "votes", "txs")


# --- Rendering (objects of the chain are rendered by ``daimon_node.rpc.render``) ----------
def hex0x(data: bytes) -> str:
    """Bytes as the RPC writes them."""
    return "0x" + data.hex()


__all__ = [
    "RpcBackend", "ProblemSummary", "Balance", "BestModel", "PeriodInfo", "SyncStatus", "ChainHead",
    "NodeInfo", "PeerInfo", "Offer", "Reputation", "Locks", "LockedPart", "BondInfo", "Hex", "UInt", "Param", "MethodSpec", "METHODS",
    "SUBSCRIPTION_TOPICS", "rpc_method_name", "hex0x",
]
