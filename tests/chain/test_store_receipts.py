"""Receipts in the chain store: written with their block, read without executing, rebuilt for old stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import plyvel
import pytest

import chain.store as store_module
from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.errors import MissingContent
from chain.receipts import decode_receipt, encode_receipt
from chain.store import ChainStore
from chain.store_errors import ReceiptsMissing, StoreError
from chain.store_layout import K_VERSION, LAYOUT_VERSION, P_RECEIPT, version_bytes
from chain.outcome import memory_env
from chain.types import Anchor


def settled_devnet() -> Devnet:
    """Problem block, bonds (fees), an anchor, a settlement with rewards, and a void one (a burn)."""
    d = Devnet(DevnetConfig(m=50))
    d.start()
    d.bond_validators()
    d.improve(d.improver_keys[0], corrupt(d.truth, 0.1, 10, seed=1))
    keys, digest = d.improver_keys[1], hashlib.sha256(b"never revealed").digest()
    d.commit(transactions=[d.register(keys, digest)])
    poi, reveal = d.prove(keys, digest, corrupt(d.truth, 0.05, 10, seed=2))
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    d.commit()  # no reveal in the next period: void, the improver bond burned
    return d


def filled_store(path: Path, d: Devnet) -> ChainStore:
    store = ChainStore(path)
    for block in d.blocks:
        store.import_block(block, d.env)
    return store


def strip_receipts(path: Path) -> None:
    """Make ``path`` look like a store written before receipts were kept (no R keys, no version)."""
    db = plyvel.DB(str(path))
    with db.write_batch() as wb:
        for key, _ in db.iterator(prefix=P_RECEIPT):
            wb.delete(key)
        wb.delete(K_VERSION)
    db.close()


def test_receipt_codec_round_trips_every_outcome() -> None:
    d = settled_devnet()
    outcomes = {r.settlement.outcome for r in d.receipts if r.settlement is not None}
    assert outcomes == {"settled", "void"}  # the chain exercises rewards and burns
    for receipt in d.receipts:
        assert decode_receipt(encode_receipt(receipt)) == receipt


def test_each_block_is_stored_with_its_receipt(tmp_path: Path) -> None:
    d = settled_devnet()
    with filled_store(tmp_path / "db", d) as store:
        assert [store.receipt_at(h)[1] for h in range(store.height + 1)] == d.receipts
    with ChainStore(tmp_path / "db") as store:  # and they survive a reopen
        assert not store.needs_receipts
        assert [store.get_receipt(b.hash) for b in d.blocks] == d.receipts


def test_reading_receipts_never_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = settled_devnet()
    filled_store(tmp_path / "db", d).close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a read executed a block")

    monkeypatch.setattr(store_module, "process_block", refuse)
    with ChainStore(tmp_path / "db") as store:
        assert [store.receipt_at(h)[1] for h in range(store.height + 1)] == d.receipts


def test_a_store_from_before_receipts_opens_and_is_rebuilt(tmp_path: Path) -> None:
    d = settled_devnet()
    filled_store(tmp_path / "db", d).close()
    strip_receipts(tmp_path / "db")
    with ChainStore(tmp_path / "db") as store:
        assert store.needs_receipts and store.head == d.blocks[-1].hash
        with pytest.raises(ReceiptsMissing) as info:
            store.receipt_at(2)
        assert info.value.height == 2
        assert store.rebuild_receipts(d.env) == len(d.blocks)
        assert [store.receipt_at(h)[1] for h in range(store.height + 1)] == d.receipts
    with ChainStore(tmp_path / "db") as store:
        assert not store.needs_receipts


def test_rebuild_without_content_is_typed_and_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    d = settled_devnet()
    filled_store(tmp_path / "db", d).close()
    strip_receipts(tmp_path / "db")
    with ChainStore(tmp_path / "db") as store:
        with pytest.raises(MissingContent):
            store.rebuild_receipts(memory_env({}))
        assert store.needs_receipts
        with pytest.raises(ReceiptsMissing):
            store.receipt_at(0)


def test_a_store_from_a_newer_layout_is_refused(tmp_path: Path) -> None:
    ChainStore(tmp_path / "db").close()
    db = plyvel.DB(str(tmp_path / "db"))
    db.put(K_VERSION, version_bytes(LAYOUT_VERSION + 1))
    db.close()
    with pytest.raises(StoreError, match="newer"):
        ChainStore(tmp_path / "db")


def test_a_damaged_receipt_is_a_store_error(tmp_path: Path) -> None:
    d = settled_devnet()
    filled_store(tmp_path / "db", d).close()
    db = plyvel.DB(str(tmp_path / "db"))
    db.put(P_RECEIPT + d.blocks[1].hash, b"\x93\x01")
    db.close()
    with ChainStore(tmp_path / "db") as store, pytest.raises(StoreError, match="unreadable receipt"):
        store.receipt_at(1)
