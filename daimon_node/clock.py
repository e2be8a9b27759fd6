"""Time for the node: injectable, so tests drive periods without sleeping (docs/design.md §5)."""

from __future__ import annotations

import time
from typing import Protocol

import trio


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return once ``now() >= t``."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        delay = t - time.time()
        if delay > 0:
            await trio.sleep(delay)


class FakeClock:
    """A clock that moves only when a test calls ``advance``/``set``."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._moved = trio.Event()

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = float(t)
        self._moved.set()
        self._moved = trio.Event()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep_until(self, t: float) -> None:
        while self._now < t:
            await self._moved.wait()
