"""TCP proxies the test controls, one per directed link, to cut a testnet in two and heal it.

Every node's bootstrap address for a peer points at a ``LinkProxy`` on a free
127.0.0.1 port that forwards to the peer's real listen port. ``cut`` resets every
connection the proxy carries (RST at both ends, so libp2p sees the link die at
once rather than waiting for a timeout) and refuses new ones the same way;
``heal`` forwards again. All proxies share one asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024
CONTROL_TIMEOUT_S = 10.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


@dataclass
class LinkProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` while open."""

    name: str
    target_port: int
    port: int = 0
    is_open: bool = True
    accepted: int = 0  # connections forwarded
    refused: int = 0  # connections reset because the link was cut
    bytes_forwarded: int = 0
    _pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(writer)
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                if not w.transport.is_closing():
                    w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while self.is_open:
                data = await src.read(CHUNK)
                if not data or not self.is_open:
                    break
                dst.write(data)
                await dst.drain()
                self.bytes_forwarded += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        if self.is_open and not dst.transport.is_closing():
            try:
                dst.write_eof()
            except OSError:
                pass

    async def cut(self) -> None:
        self.is_open = False
        for pair in list(self._pairs):
            for w in pair:
                _reset(w)
        self._pairs.clear()

    async def heal(self) -> None:
        self.is_open = True

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Proxies:
    """Runs ``LinkProxy`` objects on a private event loop; call it from the test's thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-proxies", daemon=True)
        self._thread.start()
        self.links: dict[tuple[int, int], LinkProxy] = {}

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    def add(self, dialer: int, target: int, target_port: int) -> int:
        """A proxy for ``dialer``'s connection to ``target``; returns the port to dial."""
        proxy = LinkProxy(f"{dialer}->{target}", target_port)
        self._call(proxy.start())
        self.links[(dialer, target)] = proxy
        return proxy.port

    def crossing(self, side: set[int]) -> list[LinkProxy]:
        """The links with exactly one end in ``side``."""
        return [p for (a, b), p in self.links.items() if (a in side) != (b in side)]

    def cut(self, side: set[int]) -> None:
        for proxy in self.crossing(side):
            self._call(proxy.cut())

    def heal(self) -> None:
        for proxy in self.links.values():
            self._call(proxy.heal())

    def close(self) -> None:
        for proxy in self.links.values():
            self._call(proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)
