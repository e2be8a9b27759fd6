"""The parent's end of the worker's pipes: whole messages under a deadline, from a thread or from trio.

Both fds are non-blocking. A thread waits on them with a selector (``send`` /
``read_message``); a trio task waits in the event loop (``asend`` / ``aread_message``), so a
runner's call needs no hop through a worker thread. Either way a deadline that passes
raises ``PipeTimeout``, a worker that closed its end ``PipeClosed``, and bytes that break
the framing ``PipeProtocolError``; ``Sandbox`` turns each into its typed error and kills
the worker where its state is unknown.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from typing import Any

import trio

from daimon_node.proofs.sandbox_wire import LEN, MAX_HEADER_BYTES, PIPE_BYTES


class PipeTimeout(Exception):
    """The deadline passed while waiting on the worker."""


class PipeClosed(Exception):
    """The worker closed its end (it died)."""


class PipeProtocolError(Exception):
    """The worker sent bytes that are not a message of the sandbox protocol."""


def parse_header(raw: bytes, max_blob: int) -> tuple[dict[str, Any], list[int]]:
    """A message's JSON header and its blob sizes, each at most ``max_blob``."""
    try:
        header = json.loads(raw)
        sizes = header["blobs"]
        if not isinstance(header, dict) or not all(isinstance(s, int) and 0 <= s <= max_blob for s in sizes):
            raise ValueError(f"blob sizes {sizes!r} over {max_blob}")
    except (ValueError, KeyError, TypeError) as exc:
        raise PipeProtocolError(f"sandbox worker spoke out of protocol: {exc}") from None
    return header, sizes


def _frame_length(raw: bytes) -> int:
    (length,) = LEN.unpack(raw)
    if length > MAX_HEADER_BYTES:
        raise PipeProtocolError(f"sandbox header of {length} bytes")
    return int(length)


class WorkerPipe:
    """Message I/O with one worker process; what was read past a message waits in ``recv``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.out_fd = proc.stdin.fileno()
        self.in_fd = proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.in_fd, False)
        self.recv = bytearray()

    # -- from a thread ---------------------------------------------------------------------
    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(self.out_fd, selectors.EVENT_WRITE)
            while view.nbytes:
                n = self._write_some(view)
                if n is None and not sel.select(_remaining(deadline)):
                    raise PipeTimeout()
                view = view[n or 0:]

    def read_message(self, deadline: float, max_blob: int) -> tuple[dict[str, Any], list[bytes]]:
        with selectors.DefaultSelector() as sel:
            sel.register(self.in_fd, selectors.EVENT_READ)

            def read_exact(n: int) -> bytes:
                while len(self.recv) < n:
                    if not self._read_some(n) and not sel.select(_remaining(deadline)):
                        raise PipeTimeout()
                return self._take(n)

            header, sizes = parse_header(read_exact(_frame_length(read_exact(LEN.size))), max_blob)
            return header, [read_exact(size) for size in sizes]

    # -- from trio ---------------------------------------------------------------------------
    async def asend(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view.nbytes:
            n = self._write_some(view)
            if n is None:
                await _wait(trio.lowlevel.wait_writable, self.out_fd, deadline)
            view = view[n or 0:]

    async def aread_message(self, deadline: float, max_blob: int) -> tuple[dict[str, Any], list[bytes]]:
        async def read_exact(n: int) -> bytes:
            while len(self.recv) < n:
                if not self._read_some(n):
                    await _wait(trio.lowlevel.wait_readable, self.in_fd, deadline)
            return self._take(n)

        header, sizes = parse_header(await read_exact(_frame_length(await read_exact(LEN.size))), max_blob)
        return header, [await read_exact(size) for size in sizes]

    # -- shared ------------------------------------------------------------------------------
    def _write_some(self, view: memoryview) -> int | None:
        """Bytes written, or None if the pipe is full."""
        try:
            return os.write(self.out_fd, view)
        except BlockingIOError:
            return None
        except (BrokenPipeError, ConnectionResetError):
            raise PipeClosed() from None

    def _read_some(self, n: int) -> bool:
        """Read what is there (a message is one write, so usually all of it); False if nothing was."""
        try:
            chunk = os.read(self.in_fd, max(n - len(self.recv), PIPE_BYTES))
        except BlockingIOError:
            return False
        if not chunk:
            raise PipeClosed()
        self.recv += chunk
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self.recv[:n])
        del self.recv[:n]
        return out


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def _wait(wait: Any, fd: int, deadline: float) -> None:
    with trio.move_on_after(_remaining(deadline)) as scope:
        await wait(fd)
    if scope.cancelled_caught:
        raise PipeTimeout()
