"""One admission path for transactions, proofs and votes, whichever door they come in by.

A peer's gossip, a client's RPC submission and the node's own roles all hand raw bytes to
``Admitter``: they are decoded once, judged once by the chain's pool (whose ``add_*`` call
``chain/``'s rule functions), the RPC event is raised once, and a message is published only
when the pool took it. Before this, an RPC submission was added to the pool a second time on
its way to gossip (so the duplicate raised no event), and a role's vote was published whatever
its own pool said of it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Union

from chain.errors import DecodeError
from chain.payloads import Transaction
from chain.proofs import PoI, Reveal, SeasonReveal, Vote
from chain.types import TestTuple
from p2p import ValidationResult, chain_topic

from daimon_node.daemon.chains import ChainHandle
from daimon_node.daemon.mempool import Verdict
from daimon_node.rpc import render

Message = Union[Transaction, PoI, Reveal, SeasonReveal, TestTuple, Vote]
Emit = Callable[[str, bytes, dict[str, Any]], None]
Publish = Callable[[str, bytes], Awaitable[None]]


class Source(enum.Enum):
    """Where a message came from: it decides what is counted, never how it is judged."""

    GOSSIP = "gossip"
    RPC = "rpc"
    LOCAL = "local"  # the node's own roles


def decode_any(data: bytes, classes: tuple[type, ...], what: str) -> Message:
    """The first of ``classes`` that decodes ``data``: their arities differ, so one at most does."""
    for cls in classes:
        try:
            return cls.decode(data)  # type: ignore[attr-defined, no-any-return]
        except DecodeError:
            continue
    raise DecodeError(f"not a {what}")


@dataclass(frozen=True)
class MessageKind:
    """One kind of pooled message: how it is decoded, its gossip topic, its metrics label."""

    what: str  # what a client is told it sent when it does not decode
    label: str  # metrics label of gossip verdicts
    topic: str  # the chain topic that carries it
    classes: tuple[type, ...]  # what may decode from it

    def decode(self, data: bytes) -> Message:
        return decode_any(data, self.classes, self.what)


TX = MessageKind("transaction", "tx", "txs", (Transaction,))
POI = MessageKind("PoI", "proof", "proofs", (PoI,))
REVEAL = MessageKind("reveal", "proof", "proofs", (SeasonReveal, Reveal))  # the contributor's travels alike
# The proofs topic also carries extra test tuples during T_p (docs/protocol.md, "Test tuples added during T_p").
PROOF = MessageKind("PoI, reveal, season reveal or test tuple", "proof", "proofs", (PoI, Reveal, SeasonReveal, TestTuple))
TUPLE = MessageKind("test tuple", "proof", "proofs", (TestTuple,))
VOTE = MessageKind("vote", "vote", "votes", (Vote,))

_RESULT = {Verdict.ACCEPT: ValidationResult.ACCEPT, Verdict.REJECT: ValidationResult.REJECT,
           Verdict.IGNORE: ValidationResult.IGNORE}


@dataclass(frozen=True)
class Admission:
    """The one verdict on one message, with the pool's reason and broken rule when refused."""

    verdict: ValidationResult
    reason: str = ""
    rule: str = ""  # the chain rule (its error class) a refusal broke, "" if none
    message: Message | None = None  # None: the bytes did not decode

    @property
    def accepted(self) -> bool:
        return self.verdict is ValidationResult.ACCEPT


_NAMES: dict[type, str] = {Transaction: "transaction", PoI: "PoI", Reveal: "reveal", SeasonReveal: "season reveal",
                           TestTuple: "test tuple", Vote: "vote"}


def describe(message: Message) -> str:
    """What a client is told it sent (``season reveal rejected: ...``)."""
    return _NAMES[type(message)]


def pool_add(handle: ChainHandle, message: Message, now: float) -> Verdict:
    """Hand ``message`` to the pool method for its type."""
    pool = handle.mempool
    if isinstance(message, TestTuple):  # during T_p only: before the chain has a state
        return pool.add_test_tuple(message, handle.proposal, started=handle.started, now=now, env=handle.env)
    state = handle.state
    if isinstance(message, Transaction):
        return pool.add_tx(message, state)
    if isinstance(message, PoI):
        return pool.add_poi(message, state, now)
    if isinstance(message, Reveal):
        return pool.add_reveal(message, state, now)
    if isinstance(message, SeasonReveal):
        return pool.add_season_reveal(message, state)
    return pool.add_vote(message, state, now)


def event_of(message: Message) -> tuple[str, dict[str, Any]] | None:
    """The RPC event (topic, payload) an accepted message raises, if any, in ``render``'s one shape."""
    if isinstance(message, Transaction):
        return "txs", render.tx_event(message)
    if isinstance(message, PoI):
        return "proofs", render.proof_event(message)
    if isinstance(message, Vote):
        return "votes", render.vote_event(message)
    return None


@dataclass
class NodeMetrics:
    """Gossip verdicts by (kind, verdict), RPC submissions refused, VERIFY wall times."""

    gossip: dict[tuple[str, str], int] = field(default_factory=dict)
    rpc_rejected: int = 0
    verify_seconds: list[float] = field(default_factory=list)

    def count(self, kind: str, verdict: str) -> None:
        key = (kind, verdict)
        self.gossip[key] = self.gossip.get(key, 0) + 1


class Admitter:
    """Decide, raise the event, publish: the same steps for every message and every source."""

    def __init__(self, now: Callable[[], float], emit: Emit, publish: Publish, counters: NodeMetrics,
                 accepted: Callable[[ChainHandle, Message], None] | None = None) -> None:
        self.now = now
        self.emit = emit
        self.publish = publish
        self.counters = counters
        self.accepted = accepted  # told of every message the pool took (the node fetches a new tuple's content)

    def admit(self, handle: ChainHandle, kind: MessageKind, data: bytes,
              source: Source = Source.GOSSIP) -> Admission:
        """Decode ``data`` once and judge it; a gossip validator returns ``verdict`` as is."""
        try:
            message = kind.decode(data)
        except DecodeError as exc:  # bytes that do not decode are rejected even before the chain starts
            return self._counted(kind, source, Admission(ValidationResult.REJECT, str(exc)))
        return self.admit_decoded(handle, kind, message, source)

    def admit_decoded(self, handle: ChainHandle, kind: MessageKind, message: Message,
                      source: Source = Source.GOSSIP) -> Admission:
        if not handle.started and not isinstance(message, TestTuple):  # a well-formed message waits for the Problem block
            return Admission(ValidationResult.DEFER, "the chain has no Problem block yet", message=message)
        verdict = pool_add(handle, message, self.now())
        if verdict is Verdict.ACCEPT:
            event = event_of(message)
            if event is not None:
                self.emit(event[0], handle.chain_id, event[1])
            if self.accepted is not None:
                self.accepted(handle, message)
            return self._counted(kind, source, Admission(ValidationResult.ACCEPT, message=message))
        pool = handle.mempool
        refused = Admission(_RESULT[verdict], pool.last_reason or "invalid", pool.last_rule, message)
        return self._counted(kind, source, refused)

    async def submit(self, handle: ChainHandle, kind: MessageKind, data: bytes,
                     source: Source = Source.LOCAL, message: Message | None = None) -> Admission:
        """Admit a message of our own or a client's; publish it only if the pool took it."""
        admission = (self.admit(handle, kind, data, source) if message is None
                     else self.admit_decoded(handle, kind, message, source))
        if admission.accepted:
            await self.publish(chain_topic(handle.chain_id, kind.topic), data)
        return admission

    def _counted(self, kind: MessageKind, source: Source, admission: Admission) -> Admission:
        if source is Source.GOSSIP:
            self.counters.count(kind.label, admission.verdict.value)
        elif source is Source.RPC and not admission.accepted:
            self.counters.rpc_rejected += 1
        return admission
