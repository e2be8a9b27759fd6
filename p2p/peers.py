"""Peer bookkeeping: counters, misbehaviour penalties, bans and dial backoff.

Pure in-memory logic with an injectable clock, so scoring rules are tested
without sockets. The host/gossip services call it; it never does I/O itself.

Penalty model: each bad act adds a weight to a peer's penalty, which decays
exponentially (half-life ``penalty_half_life_s``). When the penalty reaches
``ban_threshold`` the peer is banned for ``ban_s`` seconds: disconnected, its
gossip dropped, not re-dialled and its inbound connections closed. Decay means a
peer that forwards one bad message an hour is never banned, while a burst is.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from p2p.abc import PeerStats

Clock = Callable[[], float]

# Penalty weights per kind of misbehaviour (threshold units).
WEIGHT_REJECT = 1.0  # a gossip message our validator rejected
WEIGHT_PROTOCOL = 2.0  # a malformed frame / over-cap reply on a stream protocol
WEIGHT_BAD_CONTENT = 5.0  # content whose bytes do not hash to the id asked for


@dataclass
class PeerRecord:
    """Mutable counters of one peer."""

    accepted: int = 0
    rejected: int = 0
    ignored: int = 0
    deferred: int = 0
    penalty: float = 0.0
    penalty_at: float = 0.0
    banned_until: float = 0.0
    sync_served: int = 0
    content_sent: int = 0
    content_received: int = 0
    last_seen: float | None = None
    addrs: set[str] = field(default_factory=set)


@dataclass
class Backoff:
    """Exponential dial backoff of one bootstrap address."""

    failures: int = 0
    next_attempt: float = 0.0


class PeerBook:
    """Counters, penalties, bans and dial backoff for every peer we have met.

    Bounded: at most ``max_records`` peers are tracked; when full, the least
    recently seen peer that is neither connected nor banned is forgotten.
    """

    def __init__(
        self,
        *,
        ban_threshold: float = 5.0,
        ban_s: float = 600.0,
        penalty_half_life_s: float = 60.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_records: int = 4096,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.ban_threshold = ban_threshold
        self.ban_s = ban_s
        self.penalty_half_life_s = penalty_half_life_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_records = max_records
        self._clock = clock
        self._rng = rng or random.Random()
        self._records: dict[str, PeerRecord] = {}
        self._connected: set[str] = set()
        self._backoff: dict[str, Backoff] = {}

    # -- records ---------------------------------------------------------
    def record(self, peer: str) -> PeerRecord:
        """The record of ``peer``, created on first use (evicting an idle one if full)."""
        rec = self._records.get(peer)
        if rec is None:
            if len(self._records) >= self.max_records:
                self._evict_one()
            rec = PeerRecord()
            self._records[peer] = rec
        return rec

    def _evict_one(self) -> None:
        now = self._clock()
        idle = [
            (r.last_seen or 0.0, p)
            for p, r in self._records.items()
            if p not in self._connected and r.banned_until <= now
        ]
        if idle:
            del self._records[min(idle)[1]]
        else:  # everyone is connected or banned: drop the oldest anyway
            del self._records[next(iter(self._records))]

    def seen(self, peer: str, addr: str | None = None) -> None:
        """Note activity from ``peer`` (and an address it was reached at)."""
        rec = self.record(peer)
        rec.last_seen = self._clock()
        if addr is not None and len(rec.addrs) < 8:
            rec.addrs.add(addr)

    def set_connected(self, peer: str, connected: bool) -> None:
        """Track connection state (from the host's connection notifications)."""
        if connected:
            self._connected.add(peer)
            self.seen(peer)
        else:
            self._connected.discard(peer)

    def is_connected(self, peer: str) -> bool:
        return peer in self._connected

    def connected_peers(self) -> list[str]:
        """Connected peers, least penalised first (the order to ask them in)."""
        return sorted(self._connected, key=lambda p: self.penalty(p))

    # -- penalties and bans ---------------------------------------------
    def penalty(self, peer: str) -> float:
        """Current decayed penalty of ``peer``."""
        rec = self._records.get(peer)
        if rec is None or rec.penalty == 0.0:
            return 0.0
        elapsed = max(0.0, self._clock() - rec.penalty_at)
        return rec.penalty * math.pow(0.5, elapsed / self.penalty_half_life_s)

    def penalise(self, peer: str, weight: float) -> bool:
        """Add ``weight`` to the peer's penalty; return True if this act bans it."""
        rec = self.record(peer)
        now = self._clock()
        rec.penalty = self.penalty(peer) + weight
        rec.penalty_at = now
        if rec.penalty >= self.ban_threshold and rec.banned_until <= now:
            rec.banned_until = now + self.ban_s
            rec.penalty = 0.0
            return True
        return False

    def ban(self, peer: str, seconds: float | None = None) -> None:
        """Ban ``peer`` outright (operator action or a grave offence)."""
        self.record(peer).banned_until = self._clock() + (self.ban_s if seconds is None else seconds)

    def banned_for(self, peer: str) -> float:
        """Seconds of ban left for ``peer`` (0 if not banned)."""
        rec = self._records.get(peer)
        return 0.0 if rec is None else max(0.0, rec.banned_until - self._clock())

    def is_banned(self, peer: str) -> bool:
        return self.banned_for(peer) > 0.0

    def expired_bans(self, candidates: set[str]) -> list[str]:
        """Which of ``candidates`` (peers we blacklisted) are no longer banned."""
        return [p for p in candidates if not self.is_banned(p)]

    # -- verdict counters ---------------------------------------------------
    def count_verdict(self, peer: str, verdict: str) -> None:
        """Count a validator verdict ("accept" / "reject" / "ignore" / "defer") for ``peer``."""
        rec = self.record(peer)
        rec.last_seen = self._clock()
        if verdict == "accept":
            rec.accepted += 1
        elif verdict == "reject":
            rec.rejected += 1
        elif verdict == "ignore":
            rec.ignored += 1
        else:
            rec.deferred += 1

    # -- dial backoff -------------------------------------------------------
    def may_dial(self, addr: str) -> bool:
        """Whether the backoff of bootstrap address ``addr`` allows a dial now."""
        b = self._backoff.get(addr)
        return b is None or self._clock() >= b.next_attempt

    def dial_failed(self, addr: str) -> float:
        """Record a failed dial; return the delay until the next attempt (jittered)."""
        b = self._backoff.setdefault(addr, Backoff())
        b.failures += 1
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (b.failures - 1))
        delay *= 0.5 + self._rng.random() / 2
        b.next_attempt = self._clock() + delay
        return delay

    def dial_succeeded(self, addr: str) -> None:
        """Reset the backoff of ``addr``."""
        self._backoff.pop(addr, None)

    # -- export -------------------------------------------------------------
    def stats(self) -> list[PeerStats]:
        """A snapshot of every tracked peer."""
        now = self._clock()
        return [
            PeerStats(
                peer_id=p,
                connected=p in self._connected,
                addrs=tuple(sorted(r.addrs)),
                accepted=r.accepted,
                rejected=r.rejected,
                ignored=r.ignored,
                deferred=r.deferred,
                penalty=round(self.penalty(p), 3),
                banned_for_s=round(max(0.0, r.banned_until - now), 3),
                sync_requests_served=r.sync_served,
                content_bytes_sent=r.content_sent,
                content_bytes_received=r.content_received,
                last_seen_s_ago=None if r.last_seen is None else round(now - r.last_seen, 3),
            )
            for p, r in self._records.items()
        ]
