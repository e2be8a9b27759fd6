"""An in-memory ``RpcBackend`` over real chain objects, for tests, benchmarks and demos.

It is faithful where the RPC layer can tell: blocks are real ``chain.types.Block``
objects rendered with ``block_to_json``; submissions are decoded with the chain
codec and checked against the chain id and the account nonce, so a garbage or
misdirected payload is ``Rejected`` with the codec's reason, as the node's mempool
would; accepted proofs, votes and blocks are published to the ``EventHub``.
What it does not do is consensus: nothing it accepts ever lands in a block.
"""

from __future__ import annotations

import hashlib

from dataclasses import dataclass, field
from typing import Any, Literal

from chain.crypto import address_bytes, sha256
from chain.errors import ChainError
from chain.payloads import Transaction
from chain.proofs import PoI, Reveal, Vote
from chain.types import Block, TestTuple

from daimon_node.rpc.api import (
    Balance,
    BestModel,
    BondInfo,
    Locks,
    NodeInfo,
    Offer,
    PeerInfo,
    PeriodInfo,
    ProblemSummary,
    Reputation,
    SyncStatus,
    block_to_json,
    hex0x,
    to_json,
)
from daimon_node.rpc.errors import NotFound, Rejected
from daimon_node.rpc.events import EventHub


@dataclass
class MemoryChain:
    """One problem chain as the fake node knows it."""

    chain_id: bytes
    name: str
    problem: dict[str, Any]
    blocks: list[dict[str, Any]] = field(default_factory=list)  # canonical, rendered
    by_hash: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    balances: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # address -> (spendable, locked)
    nonces: dict[bytes, int] = field(default_factory=dict)  # address -> next nonce
    best: BestModel | None = None
    period: PeriodInfo = field(default_factory=lambda: PeriodInfo(period=0, start=0, end=0, remaining=0.0))
    offers: list[Offer] = field(default_factory=list)
    reputation: dict[bytes, Reputation] = field(default_factory=dict)
    mempool: dict[bytes, bytes] = field(default_factory=dict)  # hash -> raw tx/proof/vote/reveal


class MemoryBackend:
    """Dict-backed implementation of every ``RpcBackend`` method."""

    def __init__(self, *, events: EventHub | None = None, peers: int = 0, version: str = "daimon-node/memory",
                 peer_id: str = "12D3KooWMemory") -> None:
        self.events = events
        self.chains: dict[bytes, MemoryChain] = {}
        self.peers = peers
        self.healthy = True
        self.unhealthy_reason = ""
        self.sync_targets: dict[bytes, int] = {}  # chain -> highest height seen at peers
        self.version = version
        self.peer_id = peer_id
        self.models: dict[bytes, bytes] = {}  # digest -> ONNX bytes (daimon_submitModel)

    # --- building the fake state ---------------------------------------------------------------
    def add_chain(self, chain_id: bytes, name: str, problem: dict[str, Any] | None = None) -> MemoryChain:
        chain = MemoryChain(chain_id, name, problem if problem is not None else {"chain": hex0x(chain_id)})
        self.chains[chain_id] = chain
        return chain

    def add_block(self, chain_id: bytes, block: Block) -> dict[str, Any]:
        """Append a real block to the canonical chain and publish ``newHeads`` with its header."""
        chain = self._chain(chain_id)
        rendered = block_to_json(block)
        chain.blocks.append(rendered)
        chain.by_hash[block.hash] = rendered
        if self.events is not None:
            self.events.publish("newHeads", chain_id, rendered["header"])
        return rendered

    @classmethod
    def from_devnet(cls, devnet: Any, **kwargs: Any) -> "MemoryBackend":
        """A backend holding a ``chain.devnet.Devnet``'s blocks and genesis-key balances."""
        from chain.consensus import period_end, period_start
        from chain.state import get_account

        backend = cls(**kwargs)
        problem = {"chain": hex0x(devnet.chain_id), **to_json(devnet.proposal)}
        chain = backend.add_chain(devnet.chain_id, devnet.params.name, problem)
        for block in devnet.blocks:
            backend.add_block(devnet.chain_id, block)
        for alloc in devnet.params.genesis:
            acct = get_account(devnet.state, alloc.address)
            chain.balances[alloc.address] = (acct.balance, acct.locked)
            chain.nonces[alloc.address] = acct.nonce
        chain.period = PeriodInfo(period=devnet.period, start=period_start(devnet.params, devnet.period),
                                  end=period_end(devnet.params, devnet.period), remaining=0.0)
        return backend

    def _chain(self, chain_id: bytes) -> MemoryChain:
        chain = self.chains.get(chain_id)
        if chain is None:
            raise NotFound(f"unknown chain {hex0x(chain_id)}")
        return chain

    # --- RpcBackend --------------------------------------------------------------------------
    async def list_problems(self) -> list[ProblemSummary]:
        return [ProblemSummary(chain=hex0x(c.chain_id), name=c.name, height=len(c.blocks) - 1,
                               head=c.blocks[-1]["hash"] if c.blocks else hex0x(bytes(32)),
                               followed=True, holders=[])
                for c in self.chains.values()]

    async def get_problem(self, chain: bytes) -> dict[str, Any]:
        return self._chain(chain).problem

    async def block_number(self, chain: bytes) -> int:
        return len(self._chain(chain).blocks) - 1

    async def get_block_by_number(self, chain: bytes, number: int) -> dict[str, Any] | None:
        blocks = self._chain(chain).blocks
        return blocks[number] if number < len(blocks) else None

    async def get_block_by_hash(self, chain: bytes, block_hash: bytes) -> dict[str, Any] | None:
        return self._chain(chain).by_hash.get(block_hash)

    async def get_balance(self, chain: bytes, address: bytes) -> Balance:
        spendable, locked = self._chain(chain).balances.get(address, (0, 0))
        return Balance(spendable=str(spendable), locked=str(locked))

    async def get_nonce(self, chain: bytes, address: bytes) -> int:
        return self._chain(chain).nonces.get(address, 0)

    async def best_model(self, chain: bytes) -> BestModel | None:
        return self._chain(chain).best

    async def confirmed_model(self, chain: bytes) -> BestModel | None:
        return self._chain(chain).best  # the fake chain has no seasons: settled is confirmed

    async def get_locks(self, chain: bytes, address: bytes) -> Locks:
        c = self._chain(chain)
        spendable, locked = c.balances.get(address, (0, 0))
        return Locks(address=hex0x(address), period=c.period["period"], spendable=str(spendable), locked=str(locked),
                     parts=[])  # the in-memory backend holds no records that say why

    async def get_bond(self, chain: bytes, validator: bytes) -> BondInfo | None:
        self._chain(chain)
        return None  # the in-memory backend holds no chain state

    async def period(self, chain: bytes) -> PeriodInfo:
        return self._chain(chain).period

    async def send_raw_transaction(self, chain: bytes, raw: bytes) -> str:
        state = self._chain(chain)
        tx = _decode(Transaction, raw, chain)
        sender = address_bytes(tx.sender)
        expected = state.nonces.get(sender, 0)
        if tx.nonce != expected:
            raise Rejected(f"nonce {tx.nonce}, expected {expected}")
        state.nonces[sender] = expected + 1
        state.mempool[tx.hash] = raw
        if self.events is not None:
            self.events.publish("txs", chain, {"hash": hex0x(tx.hash), "sender": hex0x(tx.sender), "nonce": tx.nonce})
        return hex0x(tx.hash)

    async def submit_proof(self, chain: bytes, raw: bytes) -> str:
        return self._admit(chain, _decode(PoI, raw, chain), raw, "proofs")

    async def submit_vote(self, chain: bytes, raw: bytes) -> str:
        return self._admit(chain, _decode(Vote, raw, chain), raw, "votes")

    async def submit_reveal(self, chain: bytes, raw: bytes) -> str:
        return self._admit(chain, _decode(Reveal, raw, chain), raw, None)

    async def submit_test_tuple(self, chain: bytes, raw: bytes) -> str:
        return self._admit(chain, _decode(TestTuple, raw, chain), raw, None)

    async def submit_model(self, chain: bytes, raw: bytes, prover: bytes) -> str:
        """Kept in memory by digest (the fake has no content store or registrations)."""
        self._chain(chain)
        digest = hashlib.sha256(raw).digest()
        self.models[digest] = raw
        return hex0x(digest)

    async def get_content(self, content_id: bytes) -> str:
        """The fake holds only submitted models."""
        if content_id not in self.models:
            raise NotFound(f"this node holds no content {hex0x(content_id)}")
        return hex0x(self.models[content_id])

    def _admit(self, chain: bytes, obj: Any, raw: bytes, topic: Literal["proofs", "votes"] | None) -> str:
        state = self._chain(chain)
        obj_hash = object_hash(obj)
        if obj_hash in state.mempool:
            raise Rejected(f"already known: {hex0x(obj_hash)}")
        state.mempool[obj_hash] = raw
        if topic is not None and self.events is not None:
            self.events.publish(topic, chain, to_json(obj))
        return hex0x(obj_hash)

    async def peer_count(self) -> int:
        return self.peers

    async def peers(self) -> list[PeerInfo]:
        """The fake has a peer count but no peers to describe."""
        return []

    async def syncing(self) -> Literal[False] | list[SyncStatus]:
        behind = [SyncStatus(chain=hex0x(c), current=len(self._chain(c).blocks) - 1, highest=h)
                  for c, h in self.sync_targets.items() if h > len(self._chain(c).blocks) - 1]
        return behind or False

    async def node_info(self) -> NodeInfo:
        info = NodeInfo(version=self.version, peer_id=self.peer_id, peers=self.peers, healthy=self.healthy,
                        chains=[{"chain": p["chain"], "height": p["height"], "head": p["head"]}
                                for p in await self.list_problems()])
        if not self.healthy:
            info["reason"] = self.unhealthy_reason
        return info

    async def get_offers(self, chain: bytes) -> list[Offer]:
        return self._chain(chain).offers

    async def get_reputation(self, chain: bytes, address: bytes) -> Reputation:
        rep = self._chain(chain).reputation.get(address)
        return rep if rep is not None else Reputation(address=hex0x(address), score=0, ratings=0)

    async def get_committers(self, chain: bytes) -> dict[str, Any]:
        self._chain(chain)
        raise Rejected("the in-memory backend holds no chain state")

    async def get_channel(self, chain: bytes, payer: bytes, runner: bytes) -> dict[str, Any] | None:
        self._chain(chain)
        return None  # the in-memory backend holds no chain state

    async def infer_quote(self, chain: bytes, runner: bytes, payer: bytes) -> dict[str, Any]:
        raise Rejected("the in-memory backend reaches no runners")

    async def infer(self, chain: bytes, runner: bytes, voucher: bytes, inputs: bytes) -> dict[str, Any]:
        raise Rejected("the in-memory backend reaches no runners")

    async def dashboard(self, chain: bytes) -> dict[str, Any]:
        c = self._chain(chain)
        return {"chain": hex0x(chain), "name": c.name, "height": len(c.blocks) - 1, "problem": c.problem,
                "period": c.period, "best": c.best, "blocks": [], "history": [], "improvers": [],
                "validators": [], "offers": [dict(o, reputation=0) for o in c.offers], "minted": "0",
                "burned": "0"}


def object_hash(obj: Any) -> bytes:
    """The id the RPC returns for a submission: the type's own ``hash`` (PoI, Transaction)
    or, for types without one (Vote, Reveal), SHA-256 of the canonical encoding."""
    own = getattr(obj, "hash", None)
    return own if isinstance(own, bytes) else sha256(obj.encode())


def _decode(cls: Any, raw: bytes, chain: bytes) -> Any:
    """Decode a submission, refusing bytes that do not parse or name another chain."""
    try:
        obj = cls.decode(raw)
    except ChainError as exc:
        raise Rejected(f"cannot decode {cls.__name__}: {exc}") from None
    if getattr(obj, "chain_id", chain) != chain:  # a test tuple names its chain only in its signature
        raise Rejected(f"{cls.__name__} is for chain {hex0x(obj.chain_id)}, not {hex0x(chain)}")
    return obj


__all__ = ["MemoryBackend", "MemoryChain", "object_hash"]
