"""``NodeBackend`` over a real store: receipts read, never re-executed; one rendering; old data dirs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import plyvel
import pytest

import chain.store as store_module
import chain.store_branches as branches_module
import chain.transition as transition_module
from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.store import ChainStore
from chain.store_layout import K_VERSION, P_RECEIPT
from chain.payloads import Transfer
from daimon_node.daemon.backend import NodeBackend
from daimon_node.daemon.replay import replay_chain
from daimon_node.harness.devnet_node import devnet_backend, open_node
from daimon_node.rpc.errors import Unavailable
from rpcnode import rpc_devnet


def strip_receipts(path: Path) -> None:
    """Make a chain store look written before receipts were kept (no R keys, no layout version)."""
    db = plyvel.DB(str(path))
    with db.write_batch() as wb:
        for key, _ in db.iterator(prefix=P_RECEIPT):
            wb.delete(key)
        wb.delete(K_VERSION)
    db.close()


def settled_devnet() -> Devnet:
    d = Devnet(DevnetConfig(m=50))
    d.start()
    d.bond_validators()
    d.improve(d.improver_keys[0], corrupt(d.truth, 0.1, 10, seed=1))
    d.improve(d.improver_keys[1], corrupt(d.truth, 0.05, 10, seed=2))
    return d


async def test_the_dashboard_reads_receipts_and_executes_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    d = settled_devnet()
    backend = devnet_backend(tmp_path / "node", d)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dashboard executed a block")

    for module in (transition_module, store_module, branches_module):
        monkeypatch.setattr(module, "process_block", refuse)
    dash = await backend.dashboard(d.chain_id)
    settled = [r for r in d.receipts if r.settlement is not None]
    assert len(dash["history"]) == 1 + len(settled)  # the start, then one point per settled improvement
    assert [b["height"] for b in dash["blocks"]] == list(range(len(d.blocks)))[::-1]
    for block, receipt in zip(dash["blocks"][::-1], d.receipts):
        assert block["fees"] == str(receipt.fees)
        if receipt.settlement is not None:
            assert block["settlement"]["reward"] == str(receipt.settlement.improver_reward)


def test_stored_receipts_match_a_replay_from_scratch(tmp_path: Path) -> None:
    d = rpc_devnet()
    backend = devnet_backend(tmp_path / "node", d)
    backend.api.chains.close()
    replay = replay_chain(tmp_path / "node", d.chain_id)  # re-executes every canonical block
    with ChainStore(tmp_path / "node" / "chains" / d.chain_id.hex()) as store:
        stored = [store.receipt_at(h)[1] for h in range(store.height + 1)]
    assert stored == replay.receipts == d.receipts


async def test_an_old_data_dir_gets_its_receipts_when_the_node_opens_it(tmp_path: Path) -> None:
    d = settled_devnet()
    fresh = devnet_backend(tmp_path / "node", d)
    before = await fresh.dashboard(d.chain_id)
    fresh.api.chains.close()
    old = devnet_backend(tmp_path / "old", d)
    old.api.chains.close()
    strip_receipts(tmp_path / "old" / "chains" / d.chain_id.hex())
    reopened = NodeBackend(open_node(tmp_path / "old", d).services)  # ChainManager rebuilds them from blocks + content
    assert not reopened.api.chains.chains[d.chain_id].store.needs_receipts
    after = await reopened.dashboard(d.chain_id)
    assert after["blocks"] == before["blocks"] and after["history"] == before["history"]


async def test_an_old_data_dir_without_its_content_answers_unavailable(tmp_path: Path) -> None:
    d = settled_devnet()
    old = devnet_backend(tmp_path / "old", d)
    old.api.chains.close()
    strip_receipts(tmp_path / "old" / "chains" / d.chain_id.hex())
    shutil.rmtree(tmp_path / "old" / "content")
    reopened = NodeBackend(open_node(tmp_path / "old", d).services)  # opens: no crash, receipts left missing
    assert reopened.api.chains.chains[d.chain_id].store.needs_receipts
    assert await reopened.block_number(d.chain_id) == len(d.blocks) - 1  # what needs no receipt still answers
    with pytest.raises(Unavailable, match="predates stored receipts"):
        await reopened.dashboard(d.chain_id)


async def test_a_transaction_sent_over_rpc_is_announced_in_the_one_event_shape(tmp_path: Path) -> None:
    d = rpc_devnet()
    backend = devnet_backend(tmp_path / "node", d)
    seen: list[tuple[str, bytes, dict[str, Any]]] = []
    backend.api.listen(lambda event, chain, payload: seen.append((event, chain, payload)))
    sender = d.improver_keys[3]
    tx = d.tx(sender, Transfer(d.creator.address_bytes, 1))
    assert await backend.send_raw_transaction(d.chain_id, tx.encode()) == "0x" + tx.hash.hex()
    assert seen == [("txs", d.chain_id, {"hash": "0x" + tx.hash.hex(), "sender": "0x" + sender.public_key.hex(),
                                         "nonce": tx.nonce})]
    backend.api.chains.close()
