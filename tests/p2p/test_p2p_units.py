"""Pure parts of p2p: peer book, content store, framing, topic names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack
import pytest
import trio

from p2p import ContentHashMismatch, ContentPinned, ContentStore, ContentTooLarge, chain_topic, topic_kind
from p2p.errors import FrameTooLarge, ProtocolViolation
from p2p.framing import encode_frame, read_bytes_frame, read_control, unpack_array
from p2p.peers import PeerBook
from p2p.topics import PROBLEMS_TOPIC, default_cap


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- peer book ---------------------------------------------------------------
def test_rejects_past_threshold_ban_then_expire() -> None:
    clock = FakeClock()
    book = PeerBook(ban_threshold=3.0, ban_s=100.0, penalty_half_life_s=1e9, clock=clock)
    assert not book.penalise("p", 1.0) and not book.penalise("p", 1.0)
    assert book.penalise("p", 1.0)  # third strike bans
    assert book.is_banned("p") and book.banned_for("p") == pytest.approx(100.0)
    clock.t += 101
    assert not book.is_banned("p")


def test_penalty_decays_so_rare_faults_never_ban() -> None:
    clock = FakeClock()
    book = PeerBook(ban_threshold=3.0, penalty_half_life_s=10.0, clock=clock)
    for _ in range(20):
        assert not book.penalise("p", 1.0)
        clock.t += 60  # six half-lives between faults
    assert book.penalty("p") < 1.1


def test_dial_backoff_grows_and_resets() -> None:
    clock = FakeClock()
    book = PeerBook(backoff_base_s=1.0, backoff_max_s=8.0, clock=clock)
    delays = [book.dial_failed("a") for _ in range(6)]
    assert not book.may_dial("a")
    assert delays[0] <= 1.0 and 4.0 <= delays[-1] <= 8.0
    assert all(d <= 8.0 for d in delays)
    book.dial_succeeded("a")
    assert book.may_dial("a")


def test_peer_book_is_bounded() -> None:
    book = PeerBook(max_records=10, clock=FakeClock())
    for i in range(50):
        book.seen(f"p{i}")
    assert len(book.stats()) == 10


# -- content store -------------------------------------------------------------
def test_store_put_get_and_ids(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    cid = store.put(b"hello")
    assert cid == hashlib.sha256(b"hello").digest()
    assert store.get(cid) == b"hello" and store.has(cid) and list(store.ids()) == [cid]
    assert store.path(cid).name == cid.hex()
    with pytest.raises(ContentTooLarge):
        store.get(cid, max_bytes=4)


def test_store_partial_with_wrong_hash_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    cid = hashlib.sha256(b"right").digest()
    w = store.begin(cid, 100)
    w.write(b"wrong")
    with pytest.raises(ContentHashMismatch):
        w.commit()
    assert not store.has(cid) and list(store.tmp_dir.iterdir()) == []


def test_store_partial_refuses_past_cap(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    w = store.begin(b"\x00" * 32, 4)
    with pytest.raises(ContentTooLarge):
        w.write(b"12345")
    w.abort()


def test_pins_survive_restart_and_block_deletion(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    keep, drop = store.put(b"model"), store.put(b"junk")
    store.pin(keep, "best model")
    reopened = ContentStore(tmp_path)
    assert reopened.pins() == {keep: "best model"}
    with pytest.raises(ContentPinned):
        reopened.delete(keep)
    assert reopened.collect_garbage() == len(b"junk")
    assert reopened.has(keep) and not reopened.has(drop)
    reopened.unpin(keep)
    reopened.delete(keep)
    assert not reopened.has(keep)


def test_store_total_cap(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, max_total_bytes=10)
    store.put(b"123456")
    with pytest.raises(ContentTooLarge):
        store.put(b"abcdef")


def test_store_put_file(tmp_path: Path) -> None:
    src = tmp_path / "z.npy"
    src.write_bytes(b"z" * 3_000_000)
    store = ContentStore(tmp_path / "store")
    cid = store.put_file(src)
    assert store.verify(cid) and store.size(cid) == 3_000_000


# -- framing -------------------------------------------------------------------
class BytesStream:
    """A stream that returns its bytes a few at a time (like libp2p's short reads)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        take = min(n or 3, 3)
        out, self.data = self.data[:take], self.data[take:]
        return out

    async def write(self, data: bytes) -> None:
        raise AssertionError("not used")


async def test_frames_read_exactly_across_short_reads() -> None:
    payload = msgpack.packb(["get", b"\x01" * 32, 5])
    assert await read_control(BytesStream(encode_frame(payload))) == ["get", b"\x01" * 32, 5]


async def test_frame_over_cap_refused_before_reading_body() -> None:
    with pytest.raises(FrameTooLarge):
        await read_bytes_frame(BytesStream(encode_frame(b"x" * 100)), cap=99)


async def test_truncated_frame_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        await read_bytes_frame(BytesStream(encode_frame(b"x" * 100)[:50]), cap=1000)


@pytest.mark.parametrize("bad", [msgpack.packb({"a": 1}), msgpack.packb(7), msgpack.packb([1]) + b"\x00", b"\xc1"])
def test_control_frame_must_be_one_array(bad: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        unpack_array(bad)


# -- topics --------------------------------------------------------------------
def test_topic_names_and_caps() -> None:
    cid = bytes(range(32))
    t = chain_topic(cid, "votes")
    assert t == f"/daimon/{cid.hex()}/votes" and topic_kind(t) == "votes"
    assert topic_kind(PROBLEMS_TOPIC) == "problems" and topic_kind("/daimon/xyz/votes") is None
    assert default_cap(chain_topic(cid, "blocks")) > default_cap(t)
    with pytest.raises(ValueError):
        chain_topic(b"short", "votes")


# -- package boundary ------------------------------------------------------------
def test_p2p_imports_no_other_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, p2p, p2p.testnode; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'chain', 'del_embed', 'daimon_node', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
