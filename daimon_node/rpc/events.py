"""Event fan-out from the node to WebSocket subscribers, never blocking the node.

The node calls ``EventHub.publish(topic, chain, payload)`` (synchronous, from its
trio tasks) when a block is imported or a proof or vote is admitted (payloads made by
``daimon_node.rpc.render``, docs/rpc.md "WebSocket subscriptions"). Each WebSocket
session owns one ``Subscriber``: a bounded memory channel that a writer task drains
to the socket. ``publish`` only ever uses ``send_nowait``; when a subscriber's queue
is full it is dropped (its session is told to close) instead of making the node
wait for a slow or stalled client.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

import trio

from daimon_node.rpc.api import SUBSCRIPTION_TOPICS
from daimon_node.rpc.errors import InvalidParams
from daimon_node.rpc.metrics import MetricsRegistry

DEFAULT_QUEUE_SIZE: Final[int] = 256  # notifications buffered per WebSocket session
MAX_SUBSCRIPTIONS: Final[int] = 64  # per WebSocket session

_PREFIX: Final[bytes] = b'{"jsonrpc":"2.0","method":"daimon_subscription","params":{"subscription":"'
_MIDDLE: Final[bytes] = b'","result":'
_SUFFIX: Final[bytes] = b"}}"


def _chain_key(chain: bytes | str) -> bytes:
    if isinstance(chain, str):
        return bytes.fromhex(chain[2:] if chain.startswith("0x") else chain)
    return bytes(chain)


class Subscriber:
    """One WebSocket session's subscriptions and its bounded notification queue."""

    def __init__(self, hub: "EventHub", queue_size: int) -> None:
        self.hub = hub
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](queue_size)
        self.subscriptions: dict[str, tuple[str, bytes]] = {}  # id -> (topic, chain)
        self.dropped = trio.Event()  # set when the hub gives up on this subscriber

    def _deliver(self, message: bytes) -> bool:
        try:
            self.send_channel.send_nowait(message)
            return True
        except trio.WouldBlock:
            self.hub.drop(self, "queue full: subscriber too slow")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.hub.detach(self)
        return False


class EventHub:
    """Topic/chain-indexed subscriptions; ``publish`` is the node's only entry point."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE, metrics: MetricsRegistry | None = None) -> None:
        self.queue_size = queue_size
        self._index: dict[tuple[str, bytes], dict[str, Subscriber]] = {}
        self._subscribers: set[Subscriber] = set()
        self.metrics = metrics if metrics is not None else MetricsRegistry()
        self._published = self.metrics.counter("daimon_ws_events_published", "Events published by the node",
                                                ["topic"])
        self._delivered = self.metrics.counter("daimon_ws_notifications_sent",
                                               "Notifications queued for WebSocket subscribers")
        self._dropped = self.metrics.counter("daimon_ws_subscribers_dropped",
                                             "WebSocket subscribers dropped for falling behind")
        self.metrics.gauge("daimon_ws_subscribers", "Open WebSocket sessions",
                           function=lambda: float(len(self._subscribers)))

    # --- node side -------------------------------------------------------------------------
    def publish(self, topic: str, chain: bytes | str, payload: Any) -> int:
        """Queue ``payload`` (JSON-friendly) for every subscriber of ``topic`` on ``chain``.

        Never blocks; returns how many subscribers it was queued for. Call it from the
        trio thread (from another thread, wrap it in ``trio.from_thread.run_sync``).
        """
        if topic not in SUBSCRIPTION_TOPICS:
            raise ValueError(f"unknown topic {topic!r}; expected one of {SUBSCRIPTION_TOPICS}")
        self._published.labels(topic).inc()
        targets = self._index.get((topic, _chain_key(chain)))
        if not targets:
            return 0
        result = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        delivered = 0
        for sub_id, subscriber in list(targets.items()):
            if subscriber._deliver(_PREFIX + sub_id.encode() + _MIDDLE + result + _SUFFIX):
                delivered += 1
        self._delivered.inc(delivered)
        return delivered

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    # --- session side --------------------------------------------------------------------
    def attach(self) -> Subscriber:
        subscriber = Subscriber(self, self.queue_size)
        self._subscribers.add(subscriber)
        return subscriber

    def detach(self, subscriber: Subscriber) -> None:
        """Forget every subscription of ``subscriber`` and close its queue (idempotent)."""
        for sub_id in list(subscriber.subscriptions):
            self.unsubscribe(subscriber, sub_id)
        self._subscribers.discard(subscriber)
        subscriber.send_channel.close()

    def drop(self, subscriber: Subscriber, reason: str) -> None:
        if subscriber in self._subscribers:
            self._dropped.inc()
        self.detach(subscriber)
        subscriber.dropped.set()

    def subscribe(self, subscriber: Subscriber, topic: str, chain: bytes) -> str:
        if topic not in SUBSCRIPTION_TOPICS:
            raise InvalidParams(f"unknown subscription {topic!r}; expected one of {list(SUBSCRIPTION_TOPICS)}")
        if len(subscriber.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise InvalidParams(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        sub_id = "0x" + secrets.token_hex(16)
        subscriber.subscriptions[sub_id] = (topic, chain)
        self._index.setdefault((topic, chain), {})[sub_id] = subscriber
        return sub_id

    def unsubscribe(self, subscriber: Subscriber, sub_id: str) -> bool:
        key = subscriber.subscriptions.pop(sub_id, None)
        if key is None:
            return False
        targets = self._index.get(key)
        if targets is not None:
            targets.pop(sub_id, None)
            if not targets:
                del self._index[key]
        return True


__all__ = ["EventHub", "Subscriber", "DEFAULT_QUEUE_SIZE", "MAX_SUBSCRIPTIONS"]
