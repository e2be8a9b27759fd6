"""GossipSub topics with tri-state validators, deferral and penalties.

py-libp2p 0.8.1 validators are booleans and every ``False`` is cached for 300 s
under the message id, so a message that merely could not be judged yet would be
refused for five minutes. ``DaimonPubsub.validate_msg`` (p2p/pubsub.py) replaces the
library's validation step: only ``REJECT`` is cached; ``IGNORE`` and ``DEFER`` drop
the message without caching (it is not marked seen either, so a later copy or a
re-judgement goes through the full pipeline again). Deferred messages wait in a
bounded pool until the node calls ``rejudge`` — then they are pushed through
``Pubsub.push_msg`` again: signature check, validator, delivery and forwarding
all happen exactly as for a fresh message.

Delivery to the node bypasses libp2p's subscription channel (32 slots, silent
drop) via an override of ``notify_subscriptions`` into our own bounded channel.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

from p2p.abc import GossipMessage, Handler, ValidationResult, Validator
from p2p.errors import MessageTooLarge, NotSubscribed
from p2p.libp2p_patches import MAX_RPC_BYTES
from p2p.peers import WEIGHT_PROTOCOL, WEIGHT_REJECT, PeerBook
from p2p.pubsub import DaimonPubsub, message_id
from p2p.topics import default_cap

log = logging.getLogger(__name__)

# Bytes of one peer's received messages that may wait for judgement at once. Past
# it, reading that peer's stream pauses (yamux flow control then stops the sender),
# so a flooder's backlog is bounded and other peers' streams are not touched.
MAX_INFLIGHT_BYTES_PER_PEER = 2 * MAX_RPC_BYTES
# Deferred messages kept per topic, in bytes (besides the count caps): without it
# 256 parentless 1 MiB "blocks" would hold 256 MiB.
MAX_PENDING_BYTES_PER_TOPIC = 4 * 1024 * 1024


@dataclass
class _Pending:
    forwarder: ID
    msg: rpc_pb2.Message
    expires: float


@dataclass
class _Topic:
    name: str
    handler: Handler
    validator: Validator | None
    cap: int
    send: trio.MemorySendChannel[rpc_pb2.Message]
    recv: trio.MemoryReceiveChannel[rpc_pb2.Message]
    pending: OrderedDict[bytes, _Pending] = field(default_factory=OrderedDict)
    dropped: int = 0


class GossipService:
    """Topics, validators, handlers and the pending pool of one node."""

    def __init__(
        self,
        host: IHost,
        book: PeerBook,
        *,
        topic_caps: dict[str, int] | None = None,
        validate_timeout_s: float = 5.0,
        max_inflight: int = 1024,
        delivery_queue: int = 4096,
        max_pending_per_topic: int = 256,
        max_pending_per_peer: int = 32,
        pending_ttl_s: float = 120.0,
        heartbeat_interval_s: int = 1,
        degree: int = 6,
        degree_low: int = 4,
        degree_high: int = 12,
        on_ban: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.book = book
        self.my_id = host.get_id()
        self.topic_caps = dict(topic_caps or {})
        self.validate_timeout_s = validate_timeout_s
        self.max_inflight = max_inflight
        self.delivery_queue = delivery_queue
        self.max_pending_per_topic = max_pending_per_topic
        self.max_pending_per_peer = max_pending_per_peer
        self.pending_ttl_s = pending_ttl_s
        self.on_ban = on_ban
        self.router = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=degree,
            degree_low=degree_low,
            degree_high=degree_high,
            heartbeat_interval=heartbeat_interval_s,  # default 120 s (pitfall 3)
            spam_protection_enabled=False,  # default caps *own* publishes at 10/s (pitfall 1)
        )
        self.pubsub = DaimonPubsub(
            host,
            self.router,
            strict_signing=True,
            msg_id_constructor=message_id,
            max_inbound_rpc_size=MAX_RPC_BYTES,
        )
        self.pubsub.service = self
        self._topics: dict[str, _Topic] = {}
        self._inflight = 0
        self._inflight_bytes: dict[ID, int] = {}  # per forwarder: received, not yet judged
        self._room = trio.Event()  # set (and replaced) whenever some judged bytes are released
        self._nursery: trio.Nursery | None = None

    # -- lifecycle --------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run pubsub and the router; deliver accepted messages to handlers until cancelled."""
        async with background_trio_service(self.pubsub), background_trio_service(self.router):
            await self.pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for t in self._topics.values():
                    nursery.start_soon(self._deliver_loop, t)
                task_status.started()
                await trio.sleep_forever()

    # -- node-facing API ---------------------------------------------------
    async def subscribe(
        self, topic: str, handler: Handler, validator: Validator | None = None, max_size: int | None = None
    ) -> None:
        """Join ``topic``. ``validator`` None accepts everything under the size cap."""
        if topic in self._topics:
            raise ValueError(f"already subscribed to {topic}")
        cap = max_size or self.topic_caps.get(topic) or default_cap(topic)
        if cap > MAX_RPC_BYTES - 4096:
            raise ValueError(f"topic cap {cap} too large for the RPC frame limit {MAX_RPC_BYTES}")
        send, recv = trio.open_memory_channel[rpc_pb2.Message](self.delivery_queue)
        t = _Topic(topic, handler, validator, cap, send, recv)
        self._topics[topic] = t
        if self._nursery is not None:
            self._nursery.start_soon(self._deliver_loop, t)
        await self.pubsub.subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> bytes:
        """Sign and publish; returns the message id. Our own validator is not consulted."""
        cap = self._topics[topic].cap if topic in self._topics else self.topic_caps.get(topic) or default_cap(topic)
        if len(data) > cap:
            raise MessageTooLarge(topic, len(data), cap)
        await self.pubsub.publish(topic, data)
        return hashlib.sha256(data).digest()

    async def rejudge(self, topic: str | None = None) -> int:
        """Run deferred messages of ``topic`` (or all topics) through validation again.

        Returns how many were accepted (and so delivered and forwarded). Messages
        deferred again go back into the pool; expired ones are dropped.
        """
        if topic is not None and topic not in self._topics:
            raise NotSubscribed(topic)
        accepted = 0
        now = trio.current_time()
        for t in [self._topics[topic]] if topic is not None else list(self._topics.values()):
            batch = list(t.pending.values())
            t.pending.clear()
            for p in batch:
                if p.expires <= now:
                    continue
                await self.pubsub.push_msg(p.forwarder, p.msg)
                if self.pubsub.seen_messages.has(message_id(p.msg)):
                    accepted += 1
        return accepted

    def pending_count(self, topic: str) -> int:
        return len(self._topics[topic].pending) if topic in self._topics else 0

    def topic_peers(self, topic: str) -> list[str]:
        """Peers known to be subscribed to ``topic``."""
        return [p.to_base58() for p in self.pubsub.peer_topics.get(topic, set())]

    def mesh_peers(self, topic: str) -> list[str]:
        """Peers in our GossipSub mesh for ``topic`` (full-message peers)."""
        return [p.to_base58() for p in self.router.mesh.get(topic, set())]

    def blacklist(self, peer: str) -> None:
        """Drop all gossip from ``peer`` (during a ban)."""
        self.pubsub.add_to_blacklist(ID.from_base58(peer))

    def unblacklist_expired(self) -> None:
        """Lift the gossip blacklist of peers whose ban ran out."""
        for p in list(self.pubsub.blacklisted_peers):
            if not self.book.is_banned(p.to_base58()):
                self.pubsub.remove_from_blacklist(p)

    def dropped_deliveries(self, topic: str) -> int:
        """Accepted messages the node's handler could not keep up with (queue full)."""
        return self._topics[topic].dropped if topic in self._topics else 0

    # -- called by DaimonPubsub -----------------------------------------
    async def wait_for_room(self, forwarder: ID, size: int) -> None:
        """Pause the reader of ``forwarder`` while its unjudged messages hold too many bytes.

        At least one message always fits, so a message up to the RPC limit passes.
        """
        while True:
            held = self._inflight_bytes.get(forwarder, 0)
            if held == 0 or held + size <= MAX_INFLIGHT_BYTES_PER_PEER:
                return
            await self._room.wait()

    def spawn_push(self, forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Run ``pubsub.push_msg`` for a received message in its own task."""
        if self._nursery is None:  # before run(): the library's way
            self.pubsub.manager.run_task(self.pubsub.push_msg, forwarder, msg)
        else:
            self._inflight_bytes[forwarder] = self._inflight_bytes.get(forwarder, 0) + len(msg.data)
            self._nursery.start_soon(self._push, forwarder, msg)

    async def _push(self, forwarder: ID, msg: rpc_pb2.Message) -> None:
        try:
            await self.pubsub.push_msg(forwarder, msg)
        except Exception:
            # Under manager.run_task an exception here would stop the pubsub service.
            log.exception("push_msg failed on a message from %s", forwarder)
        finally:
            left = self._inflight_bytes.get(forwarder, 0) - len(msg.data)
            if left > 0:
                self._inflight_bytes[forwarder] = left
            else:
                self._inflight_bytes.pop(forwarder, None)
            self._room.set()
            self._room = trio.Event()

    def bad_signature(self, forwarder: ID) -> None:
        """A message whose signature does not verify: the forwarder's fault (see push_msg)."""
        self._count(forwarder.to_base58(), ValidationResult.REJECT)

    def penalise_protocol(self, peer: ID, what: str) -> None:
        """A pubsub frame no correct implementation sends (not an RPC, over the size limit)."""
        pid = peer.to_base58()
        log.warning("peer %s sent %s", pid, what)
        if self.book.penalise(pid, WEIGHT_PROTOCOL):
            self._banned(pid)

    async def judge(self, forwarder: ID, msg: rpc_pb2.Message) -> ValidationResult:
        """Decide one message: caps, then the node's validator, then bookkeeping."""
        if forwarder == self.my_id:
            return ValidationResult.ACCEPT  # our own publish, checked by publish()
        peer = forwarder.to_base58()
        if len(msg.topicIDs) != 1 or msg.topicIDs[0] not in self._topics:
            return self._count(peer, ValidationResult.REJECT)
        t = self._topics[msg.topicIDs[0]]
        if len(msg.data) > t.cap:
            return self._count(peer, ValidationResult.REJECT)
        if t.validator is None:
            return self._count(peer, ValidationResult.ACCEPT)
        if self._inflight >= self.max_inflight:
            return ValidationResult.IGNORE  # shed load; not the peer's fault
        self._inflight += 1
        try:
            verdict = await self._call_validator(t.validator, peer, msg.data)
        finally:
            self._inflight -= 1
        if verdict is ValidationResult.DEFER:
            self._hold(t, forwarder, msg)
        return self._count(peer, verdict)

    def deliver(self, msg: rpc_pb2.Message) -> None:
        """Queue an accepted message for its topic's handler (own publishes excluded)."""
        if msg.from_id == self.my_id.to_bytes():
            return
        for topic in msg.topicIDs:
            t = self._topics.get(topic)
            if t is None:
                continue
            try:
                t.send.send_nowait(msg)
            except trio.WouldBlock:
                t.dropped += 1
                log.warning("handler of %s is behind; dropped an accepted message", topic)

    # -- internals ----------------------------------------------------------
    async def _call_validator(self, validator: Validator, peer: str, data: bytes) -> ValidationResult:
        try:
            with trio.fail_after(self.validate_timeout_s):
                result = validator(peer, data)
                if inspect.isawaitable(result):
                    result = await result
        except trio.TooSlowError:
            log.warning("validator timed out on a message from %s; ignoring it", peer)
            return ValidationResult.IGNORE
        except Exception:
            # A validator crash is a node bug, not the peer's fault: no penalty.
            log.exception("validator raised on a message from %s; ignoring it", peer)
            return ValidationResult.IGNORE
        if not isinstance(result, ValidationResult):
            log.error("validator returned %r, not a ValidationResult; ignoring", result)
            return ValidationResult.IGNORE
        return result

    def _count(self, peer: str, verdict: ValidationResult) -> ValidationResult:
        self.book.count_verdict(peer, verdict.value)
        if verdict is ValidationResult.REJECT and self.book.penalise(peer, WEIGHT_REJECT):
            self._banned(peer)
        return verdict

    def _banned(self, peer: str) -> None:
        log.warning("peer %s passed the invalid-message threshold; banning", peer)
        if self.on_ban is not None:
            self.on_ban(peer)

    def _hold(self, t: _Topic, forwarder: ID, msg: rpc_pb2.Message) -> None:
        mid = message_id(msg)
        if mid in t.pending:
            return
        now = trio.current_time()
        for k in [k for k, p in t.pending.items() if p.expires <= now]:
            del t.pending[k]
        mine = [k for k, p in t.pending.items() if p.forwarder == forwarder]
        if len(mine) >= self.max_pending_per_peer:
            del t.pending[mine[0]]  # one peer cannot flush everyone else's entries
        elif len(t.pending) >= self.max_pending_per_topic:
            t.pending.popitem(last=False)
        while t.pending and sum(len(p.msg.data) for p in t.pending.values()) + len(msg.data) > MAX_PENDING_BYTES_PER_TOPIC:
            t.pending.popitem(last=False)  # the byte cap: oldest first
        t.pending[mid] = _Pending(forwarder, msg, now + self.pending_ttl_s)

    async def _deliver_loop(self, t: _Topic) -> None:
        async for msg in t.recv:
            gm = GossipMessage(t.name, msg.data, message_id(msg), ID(msg.from_id).to_base58())
            try:
                r = t.handler(gm)
                if inspect.isawaitable(r):
                    await r
            except Exception:
                # The handler is node code; one bad message must not stop delivery.
                log.exception("handler of %s raised", t.name)
