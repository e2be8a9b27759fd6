"""``NodeBackend`` over a real store: receipts read, never re-executed; one rendering; old data dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

import chain.store as store_module
import chain.store_branches as branches_module
import chain.transition as transition_module
from chain.devnet import Devnet, DevnetConfig, corrupt
from rpcnode import devnet_backend


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
