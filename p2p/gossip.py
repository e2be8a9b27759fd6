"""GossipSub topics with tri-state validators, deferral and penalties.

py-libp2p 0.8.1 validators are booleans and every ``False`` is cached for 300 s
under the message id, so a message that merely could not be judged yet would be
refused for five minutes. ``_DaimonPubsub.validate_msg`` therefore replaces the
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

import functools
import hashlib
import inspect
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import libp2p.pubsub.gossipsub as _libp2p_gossipsub
import libp2p.pubsub.pubsub as _libp2p_pubsub
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.exceptions import ParseError, ValidationError
from libp2p.io.exceptions import IncompleteReadError, IOException
from libp2p.io.exceptions import MessageTooLarge as _RpcTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import GossipsubEvent, Pubsub
from libp2p.pubsub.pubsub import ValidationResult as _CacheEntry
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.validators import signature_validator
from libp2p.tools.anyio_service import background_trio_service
from google.protobuf.message import DecodeError as _ProtobufDecodeError

from p2p.abc import GossipMessage, Handler, ValidationResult, Validator
from p2p.errors import MessageTooLarge, NotSubscribed
from p2p.peers import WEIGHT_PROTOCOL, WEIGHT_REJECT, PeerBook
from p2p.topics import default_cap

log = logging.getLogger(__name__)

# Per-peer outbound RPC queue: libp2p's default of 32 silently drops bursts
# (notes/py-libp2p.md, pitfall 2). There is no constructor knob, so the
# module-level name Pubsub uses is rebound once, at import of this module.
OUTBOUND_QUEUE_SIZE = 4096
# Room for the largest topic cap plus protobuf/signature overhead.
MAX_RPC_BYTES = 2 * 1024 * 1024
# Bytes of one peer's received messages that may wait for judgement at once. Past
# it, reading that peer's stream pauses (yamux flow control then stops the sender),
# so a flooder's backlog is bounded and other peers' streams are not touched.
MAX_INFLIGHT_BYTES_PER_PEER = 2 * MAX_RPC_BYTES
# Deferred messages kept per topic, in bytes (besides the count caps): without it
# 256 parentless 1 MiB "blocks" would hold 256 MiB.
MAX_PENDING_BYTES_PER_TOPIC = 4 * 1024 * 1024
if not isinstance(_libp2p_pubsub.RpcQueue, functools.partial):
    _libp2p_pubsub.RpcQueue = functools.partial(  # type: ignore[misc]
        RpcQueue, max_size=OUTBOUND_QUEUE_SIZE, max_message_size=MAX_RPC_BYTES
    )


# Yamux window updates: p2p/host.py replaces 0.8.1's window-update step with
# go-yamux's rule (credit at half the window), which PY_YAMUX_RELEASE_ON_READ no
# longer affects; the setting is kept so an unpatched run behaves as before.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

# Every pubsub RPC carries the sender's signed peer record, and 0.8.1 verifies
# and stores it again for every RPC (~0.4 ms: an Ed25519 verify plus multiaddr
# parsing), though it is the same bytes each time. Remember the records each
# peerstore already took, for a while, and skip the repeat work.
RECORD_CACHE_SIZE = 4096
RECORD_CACHE_TTL_S = 60.0
_consume_signed_record = _libp2p_pubsub.maybe_consume_signed_record
# peerstore -> {(peer id, record bytes): when consumed}; weak, so a closed host's
# entries go with it and a new host never inherits them.
_record_cache: "weakref.WeakKeyDictionary[object, OrderedDict[tuple[bytes, bytes], float]]" = (
    weakref.WeakKeyDictionary()
)


def _consume_signed_record_once(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    if not msg.HasField("senderRecord"):
        return True
    peerstore = host.get_peerstore()
    cache = _record_cache.get(peerstore)
    if cache is None:
        cache = _record_cache[peerstore] = OrderedDict()
    key = (peer_id.to_bytes(), msg.senderRecord)
    now = time.monotonic()
    seen = cache.get(key)
    if seen is not None and now - seen < RECORD_CACHE_TTL_S:
        return True
    ok = _consume_signed_record(msg, host, peer_id)
    if ok:
        cache[key] = now
        cache.move_to_end(key)
        while len(cache) > RECORD_CACHE_SIZE:
            cache.popitem(last=False)
    return ok


if _libp2p_pubsub.maybe_consume_signed_record is _consume_signed_record:
    _libp2p_pubsub.maybe_consume_signed_record = _consume_signed_record_once  # type: ignore[assignment]
    _libp2p_gossipsub.maybe_consume_signed_record = _consume_signed_record_once  # type: ignore[assignment]


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Message id = SHA-256 of the payload (docs/design.md §6): duplicates from any author collapse."""
    return hashlib.sha256(msg.data).digest()


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


# How much one read of a pubsub stream asks yamux for (it returns what is buffered).
READ_CHUNK = 64 * 1024


class _RpcReader:
    """Varint-delimited RPCs from a pubsub stream, read in chunks.

    libp2p 0.8.1 (``utils.varint.read_varint_prefixed_bytes_limited``) reads the
    length prefix one byte per ``stream.read(1)``, then the body: three stream
    reads per gossip RPC, each through NetStream's and yamux's locks, and each
    followed by a yamux window-update check. One chunked read serves one or more
    whole RPCs. Same limits and errors as the library's reader: a prefix over
    10 bytes is ``ParseError``, a length over ``max_size`` is ``MessageTooLarge``
    before the body is read, EOF inside an RPC is ``IncompleteReadError``.
    """

    def __init__(self, stream: object, max_size: int) -> None:
        self.stream = stream
        self.max_size = max_size
        self.buf = bytearray()

    async def _fill(self, want: int) -> None:
        chunk = await self.stream.read(max(READ_CHUNK, want))  # type: ignore[attr-defined]
        if not chunk:
            raise IncompleteReadError(
                "stream ended inside an RPC", expected_bytes=want, received_bytes=len(self.buf)
            )
        self.buf += chunk

    async def next_rpc(self) -> bytes:
        buf = self.buf
        while True:
            value = shift = pos = 0
            n = len(buf)
            complete = False
            while pos < n:
                b = buf[pos]
                pos += 1
                value |= (b & 0x7F) << shift
                if not b & 0x80:
                    complete = True
                    break
                shift += 7
                if pos >= 10:
                    raise ParseError("Varint decoding error: integer exceeds maximum size of 64 bits")
            if not complete:
                await self._fill(1)
                continue
            if value > self.max_size:
                raise _RpcTooLarge(f"Message length {value} exceeds maximum allowed {self.max_size}")
            end = pos + value
            if n >= end:
                data = bytes(buf[pos:end])
                del buf[:end]
                return data
            await self._fill(end - n)


class _DaimonPubsub(Pubsub):
    """``Pubsub`` with our validation step, our delivery channel and a leaner read loop."""

    service: "GossipService"

    async def continuously_read_stream(self, stream: Any) -> None:
        """Replaces ``Pubsub.continuously_read_stream`` (libp2p/pubsub/pubsub.py, 0.8.1).

        Same steps in the same order (signed record, publish, subscriptions,
        control, metrics event, the same exceptions ending the loop), with two
        differences measured to matter on a 4-node mesh: RPCs are read in chunks
        (``_RpcReader``), and each received message's ``push_msg`` is started
        in the gossip service's own nursery instead of ``manager.run_task``
        (which builds a task record and scans every running task for a parent,
        ~7% of a node's CPU at 100 msg/s).
        """
        peer_id = stream.muxed_conn.peer_id
        reader = _RpcReader(stream, self.max_inbound_rpc_size)
        try:
            while self.manager.is_running:
                if self.is_peer_blacklisted(peer_id):
                    # Banned: stop reading at once (push_msg would drop each message, but
                    # only after the RPC was read, parsed and a task made per message).
                    await self._drop_stream(stream, peer_id, "banned")
                    return
                incoming = await reader.next_rpc()
                rpc_incoming = rpc_pb2.RPC()
                try:
                    rpc_incoming.ParseFromString(incoming)
                except _ProtobufDecodeError:
                    self.service.penalise_protocol(peer_id, "a pubsub frame that is not an RPC")
                    await self._drop_stream(stream, peer_id, "not an RPC")
                    return
                if not _libp2p_pubsub.maybe_consume_signed_record(rpc_incoming, self.host, peer_id):
                    log.error("received an invalid signed record from %s; ignoring the RPC", peer_id)
                    continue
                metrics = stream.metric_send_channel
                event = None
                if metrics is not None:
                    event = GossipsubEvent()
                    event.peer_id = peer_id.pretty()
                    event.message_size = len(incoming)
                if rpc_incoming.publish:
                    if event is not None:
                        event.publish = True
                    for msg in rpc_incoming.publish:
                        # A copy of a message already accepted: push_msg would
                        # return at its seen check with no side effect, so skip
                        # the task (2 of every 3 copies in a 4-node full mesh).
                        if (
                            self._is_subscribed_to_msg(msg)
                            and not self._is_msg_seen(msg)
                            and self.manager.is_running
                        ):
                            await self.service.wait_for_room(peer_id, len(msg.data))
                            self.service.spawn_push(peer_id, msg)
                if rpc_incoming.subscriptions:
                    if event is not None:
                        event.subopts = True
                    if len(rpc_incoming.subscriptions) > self.max_subscriptions_per_rpc:
                        log.warning("peer %s sent %d subscriptions in one RPC; ignoring them",
                                    peer_id, len(rpc_incoming.subscriptions))
                    else:
                        for sub in rpc_incoming.subscriptions:
                            self.handle_subscription(peer_id, sub)
                if rpc_incoming.HasField("control"):
                    if event is not None:
                        event.control = True
                    await self.router.handle_rpc(rpc_incoming, peer_id)
                if event is not None:
                    await metrics.send(event)
        except _RpcTooLarge as error:
            self.service.penalise_protocol(peer_id, f"an RPC over the size limit ({error})")
            await self._drop_stream(stream, peer_id, "RPC too large")
        except (StreamEOF, StreamError, IOException, RawConnError) as error:
            # As upstream: the peer closed or the connection went (a truncated
            # RPC included); ParseError propagates to Pubsub.stream_handler.
            log.debug("pubsub stream of %s ended: %s", peer_id, error)
        except ParseError:
            raise  # a bad varint: Pubsub.stream_handler resets the stream, as upstream
        except Exception:
            # Anything else escaping here would end the swarm's nursery, i.e. the node
            # (upstream lets a protobuf DecodeError do exactly that). A node bug, so no
            # penalty; the stream goes.
            log.exception("pubsub stream of %s failed; dropping it", peer_id)
            await self._drop_stream(stream, peer_id, "reader failed")

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """Replaces ``Pubsub._teardown_if_connected`` (run by ``add_to_blacklist``), 0.8.1.

        Same steps; upstream's ``del self.peers[peer_id]`` after awaiting the reset
        raised ``KeyError`` when the peer's stream ended meanwhile (``_handle_dead_peer``
        removed it), and that task's error stopped the pubsub service: every ban of a
        peer that was being disconnected could take the node down.
        """
        stream = self.peers.get(peer_id)
        if stream is not None:
            try:
                await stream.reset()
            except Exception:
                pass
            self.peers.pop(peer_id, None)
        self._forget_all_subscriptions(peer_id)

    async def _drop_stream(self, stream: Any, peer_id: ID, why: str) -> None:
        log.debug("dropping the pubsub stream of %s: %s", peer_id, why)
        try:
            await stream.reset()
        except Exception:
            pass
        self._handle_dead_peer(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Replaces ``Pubsub.push_msg`` (libp2p/pubsub/pubsub.py, 0.8.1).

        The same steps in the same order (blacklists, seen, the router's score gate,
        signature, validators, mark seen, the self-origin check, delivery), with one
        difference: a message whose signature does not verify costs its forwarder
        one penalty unit. Upstream drops it silently, and raises out of push_msg
        when the key bytes do not parse, so a peer could send unsigned junk forever
        at the price of our signature checks (and a traceback each). An honest peer
        never forwards such a message: it checked the signature before relaying. It
        is not cached as a rejection: the message id is the hash of the payload
        alone, and a correctly signed copy of the same payload may follow.
        """
        if self.is_peer_blacklisted(msg_forwarder) or self.is_peer_blacklisted(ID(msg.from_id)):
            return
        if self._is_msg_seen(msg):
            return
        scorer = getattr(self.router, "scorer", None)
        if scorer is not None:
            try:
                if not scorer.allow_publish(msg_forwarder, list(msg.topicIDs)):
                    return
            except Exception:
                pass
        if self.strict_signing:
            try:
                signed = signature_validator(msg)
            except Exception:  # key bytes that do not parse
                signed = False
            if not signed:
                if msg_forwarder != self.my_id:
                    self.service.bad_signature(msg_forwarder)
                return
        try:
            await self.validate_msg(msg_forwarder, msg)
        except ValidationError:
            if scorer is not None:
                try:
                    for topic in msg.topicIDs:
                        scorer.on_invalid_message(msg_forwarder, topic)
                except Exception:
                    pass
            return
        self._mark_msg_seen(msg)
        if scorer is not None:
            try:
                for topic in msg.topicIDs:
                    scorer.on_first_delivery(msg_forwarder, topic)
            except Exception:
                pass
        if ID(msg.from_id) == self.my_id and msg_forwarder != self.my_id:
            return
        self.notify_subscriptions(msg)
        await self.router.publish(msg_forwarder, msg)

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        msg_id = self._msg_id_constructor(msg)
        cached = self.validation_cache.get(msg_id)
        if cached is not None and not cached.is_valid:
            raise ValidationError("cached rejection")
        verdict = await self.service.judge(msg_forwarder, msg)
        if verdict is ValidationResult.ACCEPT:
            return
        if verdict is ValidationResult.REJECT:
            self.validation_cache.put(msg_id, _CacheEntry(is_valid=False, timestamp=time.time()))
        raise ValidationError(verdict.value)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        self.service.deliver(publish_message)


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
        self.pubsub = _DaimonPubsub(
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

    # -- called by _DaimonPubsub -----------------------------------------
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
