"""An empty stream is a cancelled requester, not a protocol violation; a cut frame is one."""

from __future__ import annotations

import pytest

from p2p.errors import ProtocolViolation, StreamEnded
from p2p.framing import encode_frame, read_bytes_frame


class FakeStream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int | None = None) -> bytes:
        n = len(self.data) if n is None else n
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    async def write(self, data: bytes) -> None:
        raise AssertionError("not written in these tests")


async def test_empty_stream_is_stream_ended() -> None:
    with pytest.raises(StreamEnded):
        await read_bytes_frame(FakeStream(b""), 1024)


async def test_cut_frame_is_a_violation_not_just_ended() -> None:
    frame = encode_frame(b"hello world")
    with pytest.raises(ProtocolViolation) as info:
        await read_bytes_frame(FakeStream(frame[:7]), 1024)
    assert not isinstance(info.value, StreamEnded)


async def test_whole_frame_reads_back() -> None:
    assert await read_bytes_frame(FakeStream(encode_frame(b"abc")), 1024) == b"abc"
