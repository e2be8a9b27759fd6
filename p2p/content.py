"""``/daimon/content/1``: content by id (SHA-256 of the bytes), streamed in chunks.

Request (one control frame): ``["have", cid]`` -> ``["ok", size]`` | ``["missing"]``;
``["get", cid, offset]`` -> ``["ok", size]`` then exactly ``size - offset`` raw
bytes, then the server closes its side.

The client writes arriving bytes to a temp file in the store while hashing them,
refuses to go past the announced size or the caller's cap, and commits only if
the hash matches. If a peer stops mid-way, the next peer is asked from the same
offset (hash state and partial file carry over); if the final hash is wrong, the
peers that supplied bytes are penalised and the fetch restarts from zero with
the peers not yet tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID

from p2p.errors import (
    ContentError,
    ContentHashMismatch,
    ContentNotFound,
    ContentTooLarge,
    P2PError,
    ProtocolViolation,
    RequestTimeout,
    StreamEnded,
)
from p2p.framing import expect_bytes, expect_int, read_control, write_control
from p2p.peers import WEIGHT_BAD_CONTENT, PeerBook
from p2p.serving import close_quietly, penalise, reset_quietly, serve_stream
from p2p.store import ContentStore, PartialWrite

log = logging.getLogger(__name__)

CONTENT_PROTOCOL = TProtocol("/daimon/content/1")
MAX_CONTENT = 2**40
CHUNK = 1 << 20
PIPELINE_DEPTH = 4
# The receiver flushes the temp file to disk every SYNC_EVERY bytes from its writer
# thread, during the transfer, so the fsync before the commit has little left to do
# (on the dev box a 50 MiB fsync at the end took 0.08-0.13 s, 10-20% of a fetch).
SYNC_EVERY = 8 << 20


class ContentService:
    """Serves the local store and fetches missing content from peers."""

    def __init__(
        self,
        host: IHost,
        book: PeerBook,
        store: ContentStore,
        *,
        open_timeout_s: float = 10.0,
        stall_timeout_s: float = 15.0,
        max_concurrent_serves: int = 8,
        on_ban: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.book = book
        self.store = store
        self.open_timeout_s = open_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.on_ban = on_ban
        self._serving = trio.Semaphore(max_concurrent_serves)
        host.set_stream_handler(CONTENT_PROTOCOL, self._handle)

    # -- server -------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve_stream(stream, "content", self.book, self.on_ban, self._answer)

    async def _answer(self, stream: INetStream, peer: str) -> None:
        with trio.fail_after(self.open_timeout_s):
            req = await read_control(stream)
        if self._serving.value == 0:
            with trio.fail_after(self.open_timeout_s):
                await write_control(stream, ["busy"])
        else:
            async with self._serving:
                await self._serve(stream, peer, req)
        with trio.fail_after(self.open_timeout_s):
            await stream.close()

    async def _serve(self, stream: INetStream, peer: str, req: list[object]) -> None:
        op = req[0]
        if op not in ("have", "get") or len(req) != (2 if op == "have" else 3):
            raise ProtocolViolation(f"bad content request {op!r}")
        cid = expect_bytes(req[1], "content_id", length=32)
        if not self.store.has(cid):
            with trio.fail_after(self.open_timeout_s):
                await write_control(stream, ["missing"])
            return
        size = self.store.size(cid)
        with trio.fail_after(self.open_timeout_s):
            await write_control(stream, ["ok", size])
        if op == "have":
            return
        offset = expect_int(req[2], "offset", 0, size)
        with self.store.open(cid) as f:
            f.seek(offset)
            sent = 0
            while chunk := f.read(CHUNK):
                # A reader that stops reading fills the Yamux window and blocks us;
                # the stall timeout frees this slot instead of waiting forever.
                with trio.fail_after(self.stall_timeout_s):
                    await stream.write(chunk)
                sent += len(chunk)
        self.book.record(peer).content_sent += sent

    # -- client -------------------------------------------------------------
    async def _receive(self, stream: INetStream, peer: str, partial: PartialWrite, size: int) -> None:
        await _receive_into(stream, peer, partial, size, self.stall_timeout_s)

    async def fetch(self, cid: bytes, max_bytes: int, peers: Sequence[str] | None = None) -> Path:
        """Get ``cid`` into the store (no-op if present); returns the object's path.

        Raises ``ContentTooLarge`` if the content is bigger than ``max_bytes``,
        ``ContentNotFound`` if no peer has it, ``ContentError`` if every holder failed.
        """
        if len(cid) != 32:
            raise ValueError("content id must be 32 bytes")
        if self.store.has(cid):
            size = self.store.size(cid)
            if size > max_bytes:
                raise ContentTooLarge(size, max_bytes)
            return self.store.path(cid)
        candidates = list(peers) if peers is not None else self.book.connected_peers()
        partial: PartialWrite | None = None
        size: int | None = None
        contributors: list[str] = []
        too_large: int | None = None
        failures: list[str] = []
        mismatch = False
        try:
            for peer in candidates:
                if self.book.is_banned(peer):
                    continue
                if partial is None:
                    partial = self.store.begin(cid, max_bytes, sync_every=SYNC_EVERY)
                    size, contributors = None, []
                try:
                    size = await self._download(peer, cid, partial, size, max_bytes)
                except ContentNotFound:
                    continue
                except ContentTooLarge as exc:
                    too_large = exc.size
                    continue
                except (P2PError, StreamError) as exc:
                    failures.append(f"{peer}: {exc}")
                    if partial.offset > 0:
                        contributors.append(peer)
                    continue
                contributors.append(peer)
                try:
                    return await trio.to_thread.run_sync(partial.commit)  # fsync off the event loop
                except ContentHashMismatch as exc:
                    failures.append(f"{', '.join(contributors)}: {exc}")
                    mismatch = True
                    for p in set(contributors):
                        if self.book.penalise(p, WEIGHT_BAD_CONTENT) and self.on_ban is not None:
                            self.on_ban(p)
                    partial = None
        finally:
            if partial is not None and not self.store.has(cid):
                partial.abort()
        if mismatch:
            raise ContentHashMismatch(f"fetch of {cid.hex()} failed: {'; '.join(failures)[:500]}")
        if failures:
            raise ContentError(f"fetch of {cid.hex()} failed: {'; '.join(failures)[:500]}")
        if too_large is not None:
            raise ContentTooLarge(too_large, max_bytes)
        raise ContentNotFound(f"no peer of {len(candidates)} has {cid.hex()}")

    async def have(self, peer: str, cid: bytes) -> int | None:
        """Ask ``peer`` whether it has ``cid``; its size, or None."""
        stream = await self._open(peer)
        try:
            with trio.fail_after(self.open_timeout_s):
                await write_control(stream, ["have", cid])
                reply = await read_control(stream)
            if reply[0] == "missing":
                return None
            if reply[0] != "ok" or len(reply) != 2:
                raise ProtocolViolation(f"unexpected content reply {reply[0]!r}")
            return expect_int(reply[1], "size", 0, MAX_CONTENT)
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"have? to {peer} timed out") from exc
        finally:
            await reset_quietly(stream)

    async def _open(self, peer: str) -> INetStream:
        try:
            with trio.fail_after(self.open_timeout_s):
                return await self.host.new_stream(ID.from_base58(peer), [CONTENT_PROTOCOL])
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"opening a content stream to {peer} timed out") from exc
        except Exception as exc:
            raise ContentError(f"cannot open a content stream to {peer}: {exc}") from exc

    async def _download(
        self, peer: str, cid: bytes, partial: PartialWrite, expected: int | None, max_bytes: int
    ) -> int:
        """Continue ``partial`` from ``peer``; returns the content size once all bytes are in."""
        stream = await self._open(peer)
        clean = False
        try:
            with trio.fail_after(self.open_timeout_s):
                await write_control(stream, ["get", cid, partial.offset])
                reply = await read_control(stream)
            if reply[0] == "missing":
                raise ContentNotFound(cid.hex())
            if reply[0] != "ok" or len(reply) != 2:
                raise ProtocolViolation(f"unexpected content reply {reply[0]!r}")
            size = expect_int(reply[1], "size", 0, MAX_CONTENT)
            if size > max_bytes:
                raise ContentTooLarge(size, max_bytes)
            if expected is not None and size != expected:
                raise ProtocolViolation(f"peer says {size} bytes, another said {expected}")
            if size < partial.offset:
                raise ProtocolViolation(f"peer says {size} bytes, we already hold {partial.offset}")
            before = partial.offset
            await self._receive(stream, peer, partial, size)
            self.book.record(peer).content_received += partial.offset - before
            clean = True
            return size
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"content stream from {peer} stalled") from exc
        except StreamEnded as exc:
            raise ContentError(f"{peer} closed the content stream without replying") from exc
        except ProtocolViolation:
            penalise(self.book, peer, self.on_ban)
            raise
        finally:
            # We read exactly `size` bytes; anything the peer sends after is ignored.
            await reset_quietly(stream) if not clean else await close_quietly(stream)


async def _receive_into(
    stream: INetStream, peer: str, partial: PartialWrite, size: int, stall_timeout_s: float
) -> None:
    """Copy ``size - partial.offset`` bytes from ``stream`` into ``partial``.

    Disk writes, hashing and the periodic data sync run in a worker thread (all
    release the GIL) while the event loop reads the next batch. At most
    ``PIPELINE_DEPTH`` batches of ~1 MiB are in flight, so a fast sender cannot grow
    our memory. Every read and every hand-off to the writer must finish within
    ``stall_timeout_s`` (``trio.TooSlowError`` otherwise).
    """
    send, recv = trio.open_memory_channel[list[bytes]](PIPELINE_DEPTH)
    stopped_at: int | None = None  # where the peer ended the stream early
    # Errors are kept out of the nursery and raised after it, as themselves: trio
    # wraps anything raised inside a nursery in an ExceptionGroup, which the
    # callers' ``except TooSlowError`` / ``except StreamError`` would not catch (a
    # stalled peer then ended the whole fetch instead of passing to the next peer).
    failure: Exception | None = None

    async def write_batches() -> None:
        nonlocal failure
        try:
            async for batch in recv:
                await trio.to_thread.run_sync(partial.write_parts, batch)
        except Exception as exc:  # disk full, I/O error: stop the reader too
            failure = exc
            nursery.cancel_scope.cancel()

    reader = _BatchReader(stream, send, stall_timeout_s)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_batches)
        async with send:
            try:
                stopped_at = await reader.read(partial.offset, size)
            except trio.TooSlowError:
                failure = trio.TooSlowError(f"transfer from {peer} made no progress for {stall_timeout_s} s")
            except Exception as exc:  # a reset stream, a closed connection
                failure = exc
            await reader.flush()  # what arrived before a stall or reset also goes to disk: resume after it
    # Every byte handed to the writer is on disk now, so the next peer resumes after it.
    if failure is not None:
        raise failure
    if stopped_at is not None:
        raise ContentError(f"{peer} stopped after {stopped_at} of {size} bytes")


class _BatchReader:
    """Reads a stream into batches of about ``CHUNK`` bytes and hands each to the writer."""

    def __init__(self, stream: INetStream, send: trio.MemorySendChannel[list[bytes]], stall_timeout_s: float) -> None:
        self.stream, self.send, self.stall_timeout_s = stream, send, stall_timeout_s
        self.buf: list[bytes] = []
        self.buffered = 0

    async def read(self, pending: int, size: int) -> int | None:
        """Read until ``size``; the offset where the peer stopped early, or None.

        One cancel scope whose deadline is moved forward before each read and each hand-off:
        the same limit as a fail_after around every call, without building and entering a
        new scope for every frame-sized read. A stall raises ``trio.TooSlowError``.
        """
        with trio.CancelScope() as scope:
            while pending < size:
                scope.deadline = trio.current_time() + self.stall_timeout_s
                try:
                    chunk = await self.stream.read(min(CHUNK, size - pending))
                except StreamEOF:
                    chunk = b""
                self.buf.append(chunk)
                self.buffered += len(chunk)
                pending += len(chunk)
                if self.buffered >= CHUNK or pending == size or not chunk:
                    scope.deadline = trio.current_time() + self.stall_timeout_s
                    await self._hand_over()
                if not chunk:
                    return pending
        if scope.cancelled_caught:
            raise trio.TooSlowError
        return None

    async def _hand_over(self) -> None:
        batch = [b for b in self.buf if b]
        self.buf, self.buffered = [], 0
        if batch:
            await self.send.send(batch)

    async def flush(self) -> None:
        if any(self.buf):
            with trio.move_on_after(self.stall_timeout_s):
                await self._hand_over()
