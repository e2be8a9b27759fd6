"""The content receiver's pieces without hosts: PartialWrite's batched writes and data
syncs, the commit order, and _receive_into's stall limit, early end and memory bound."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF

import p2p.store as store_mod
from p2p import ContentHashMismatch, ContentStore, ContentTooLarge
from p2p.content import CHUNK, PIPELINE_DEPTH, _receive_into
from p2p.errors import ContentError


# -- PartialWrite ----------------------------------------------------------------
def test_write_parts_appends_in_order_and_hashes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    parts = [os.urandom(n) for n in (1, 70_000, 0, 5, 1 << 20)]
    data = b"".join(parts)
    cid = hashlib.sha256(data).digest()
    w = store.begin(cid, len(data))
    w.write_parts(parts[:2])
    w.write_parts(parts[2:])
    assert w.offset == len(data)
    path = w.commit()
    assert path.read_bytes() == data and store.verify(cid)
    assert list(store.tmp_dir.iterdir()) == []


def test_write_parts_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:  # at most 777 bytes per call
        first = bytes(buffers[0][:777])
        return real(fd, [first])

    monkeypatch.setattr(store_mod.os, "writev", short_writev)
    store = ContentStore(tmp_path)
    parts = [os.urandom(n) for n in (1000, 3, 2500, 777)]
    data = b"".join(parts)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    w.write_parts(parts)
    assert w.commit().read_bytes() == data


def test_write_parts_over_cap_writes_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    w = store.begin(b"\x00" * 32, 10)
    w.write_parts([b"1234", b"56"])
    with pytest.raises(ContentTooLarge):
        w.write_parts([b"789", b"0ab"])  # 12 > 10: refused as a whole
    assert w.offset == 6 and w.path.stat().st_size == 6
    w.abort()
    assert list(store.tmp_dir.iterdir()) == []


class GatedSync:
    """Stands in for fdatasync: records the call and blocks until released."""

    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.error = error

    def __call__(self, fd: int) -> None:
        self.calls.append("datasync")
        assert self.gate.wait(10)
        if self.error is not None:
            raise self.error


def test_sync_runs_beside_the_writes_and_commit_waits_then_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = GatedSync()
    real_fsync = os.fsync
    monkeypatch.setattr(store_mod, "_fdatasync", sync)
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (sync.calls.append("fsync"), real_fsync(fd))[1])
    store = ContentStore(tmp_path)
    data = os.urandom(10_000)
    w = store.begin(hashlib.sha256(data).digest(), len(data), sync_every=4000)
    for i in range(0, len(data), 1000):
        w.write_parts([data[i:i + 1000]])  # never waits for the sync in flight
    assert sync.calls == ["datasync"]  # started at 4000; at 8000 one was still running
    committed: list[Path] = []
    t = threading.Thread(target=lambda: committed.append(w.commit()))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not store.has(w.cid)  # commit waits for the sync in flight
    sync.gate.set()
    t.join(10)
    assert sync.calls == ["datasync", "fsync"] and committed and store.get(w.cid) == data


def test_failed_background_sync_fails_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync = GatedSync(OSError(5, "Input/output error"))
    sync.gate.set()
    monkeypatch.setattr(store_mod, "_fdatasync", sync)
    store = ContentStore(tmp_path)
    data = os.urandom(5000)
    w = store.begin(hashlib.sha256(data).digest(), len(data), sync_every=4000)
    w.write_parts([data])
    with pytest.raises(OSError, match="Input/output"):
        w.commit()
    assert not store.has(w.cid) and list(store.tmp_dir.iterdir()) == []


def test_abort_does_not_wait_for_a_sync_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync = GatedSync()
    monkeypatch.setattr(store_mod, "_fdatasync", sync)
    store = ContentStore(tmp_path)
    w = store.begin(b"\x00" * 32, 10_000, sync_every=100)
    fd = w._fd
    assert fd is not None
    w.write_parts([b"x" * 200])
    w.abort()  # returns at once; the sync thread closes the fd when it is done
    assert list(store.tmp_dir.iterdir()) == []
    os.fstat(fd)  # still open
    sync.gate.set()
    for _ in range(100):
        try:
            os.fstat(fd)
        except OSError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the sync thread did not close the file")


def test_wrong_hash_is_refused_before_any_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: calls.append(fd))
    store = ContentStore(tmp_path)
    cid = hashlib.sha256(b"right").digest()
    w = store.begin(cid, 100, sync_every=1 << 20)
    w.write_parts([b"wro", b"ng"])
    with pytest.raises(ContentHashMismatch):
        w.commit()
    assert calls == [] and not store.has(cid) and list(store.tmp_dir.iterdir()) == []


# -- _receive_into ---------------------------------------------------------------
class ScriptedStream:
    """Returns the given pieces, then either EOF or a stall (sleeps forever)."""

    def __init__(self, pieces: list[bytes], then: str = "eof") -> None:
        self.pieces = list(pieces)
        self.then = then
        self.max_in_flight = 0

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.pieces:
            piece = self.pieces.pop(0)
            assert n is not None and len(piece) <= n
            return piece
        if self.then == "stall":
            await trio.sleep_forever()
        raise StreamEOF()


@pytest.mark.trio
async def test_receive_into_whole_object(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    pieces = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data), sync_every=1 << 20)
    with trio.fail_after(10):
        await _receive_into(ScriptedStream(pieces), "peer", w, len(data), stall_timeout_s=5)  # type: ignore[arg-type]
    assert w.offset == len(data)
    assert w.commit().read_bytes() == data


@pytest.mark.trio
async def test_receive_into_stall_times_out_and_keeps_what_arrived(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK)
    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    stream = ScriptedStream([data[:CHUNK], data[CHUNK:CHUNK + 100]], then="stall")
    t0 = trio.current_time()
    with trio.fail_after(10), pytest.raises(trio.TooSlowError):
        await _receive_into(stream, "peer", w, len(data), stall_timeout_s=0.3)  # type: ignore[arg-type]
    assert 0.25 <= trio.current_time() - t0 < 5
    # Everything read before the stall is on disk: the next peer resumes after it.
    assert w.offset == CHUNK + 100 and w.path.stat().st_size == CHUNK + 100
    w.abort()


@pytest.mark.trio
async def test_receive_into_deadline_is_per_read_not_per_transfer(tmp_path: Path) -> None:
    """A slow but steady sender (each read well inside the limit) is not cut off."""
    data = os.urandom(40_000)

    class Slow(ScriptedStream):
        async def read(self, n: int | None = None) -> bytes:
            await trio.sleep(0.05)
            return await super().read(n)

    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    pieces = [data[i:i + 4000] for i in range(0, len(data), 4000)]  # 10 reads, 0.5 s in all
    with trio.fail_after(10):
        await _receive_into(Slow(pieces), "peer", w, len(data), stall_timeout_s=0.2)  # type: ignore[arg-type]
    assert w.commit().read_bytes() == data


@pytest.mark.trio
async def test_receive_into_early_end_reports_offset(tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 10)
    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    with trio.fail_after(10), pytest.raises(ContentError, match=f"after {CHUNK - 5} of"):
        await _receive_into(ScriptedStream([data[:CHUNK - 5]]), "peer", w, len(data), stall_timeout_s=5)  # type: ignore[arg-type]
    assert w.offset == CHUNK - 5
    w.abort()


@pytest.mark.trio
async def test_receive_into_memory_is_bounded_when_the_disk_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the writer stuck, the reader stops after PIPELINE_DEPTH batches (+1 being built)."""
    data = os.urandom((PIPELINE_DEPTH + 6) * CHUNK)
    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()
    real = w.write_parts

    def blocked_write(parts: list[bytes]) -> None:
        trio.from_thread.run(release.wait, trio_token=token)
        real(parts)

    monkeypatch.setattr(w, "write_parts", blocked_write)
    stream = ScriptedStream([data[i:i + CHUNK] for i in range(0, len(data), CHUNK)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_receive_into, stream, "peer", w, len(data), 5.0)
        await trio.sleep(0.5)
        read = len(data) - sum(len(p) for p in stream.pieces)
        # one batch in the stuck writer, PIPELINE_DEPTH queued, one being handed over
        assert read <= (PIPELINE_DEPTH + 2) * CHUNK
        release.set()
    assert w.commit().read_bytes() == data


@pytest.mark.trio
async def test_receive_into_raises_errors_as_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not wrapped in an ExceptionGroup: fetch's per-peer ``except`` clauses must see them."""
    from libp2p.network.stream.exceptions import StreamReset

    class Resetting(ScriptedStream):
        async def read(self, n: int | None = None) -> bytes:
            if not self.pieces:
                raise StreamReset("reset by peer")
            return await super().read(n)

    data = os.urandom(3000)
    store = ContentStore(tmp_path)
    w = store.begin(hashlib.sha256(data).digest(), len(data))
    with trio.fail_after(10), pytest.raises(StreamReset):
        await _receive_into(Resetting([data[:1000]]), "peer", w, len(data), stall_timeout_s=5)  # type: ignore[arg-type]
    assert w.offset == 1000  # received before the reset, kept for the next peer

    def disk_full(parts: list[bytes]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(w, "write_parts", disk_full)
    pieces = [data[i:i + 100] for i in range(1000, 3000, 100)]
    with trio.fail_after(10), pytest.raises(OSError, match="No space"):
        await _receive_into(ScriptedStream(pieces), "peer", w, len(data), stall_timeout_s=5)  # type: ignore[arg-type]
    w.abort()
