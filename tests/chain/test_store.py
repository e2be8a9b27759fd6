"""The LevelDB store: atomic per-block writes, reopen, reorgs, crash consistency."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chain.devnet import Devnet, DevnetConfig
from chain.errors import InvalidStateRoot, UnknownParent
from chain.state import State
from chain.store import ChainStore
from chain.transition import apply_block
from chain.signing import EMPTY_SIGNATURE, sign
from chain.types import Block


def build_devnet(improvements: int = 3, seed: int = 0) -> Devnet:
    d = Devnet(DevnetConfig(seed=seed))
    d.start()
    d.bond_validators()
    for i, labels in enumerate(d.improving_labels(improvements, seed=seed)):
        d.improve(d.improver_keys[i % 4], labels)
    return d


def test_import_then_reopen_replays_to_same_root(tmp_path: Path) -> None:
    d = build_devnet()
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            result = store.import_block(Block.decode(block.encode()), d.env)
            assert result.status == "head"
        assert store.height == len(d.blocks) - 1
    with ChainStore(tmp_path / "db") as store:
        assert store.head == d.blocks[-1].hash
        assert store.state.root == d.state.root
        assert store.get_block_by_height(3) == d.blocks[3]
        assert list(store.iter_canonical(2, 3)) == [b.encode() for b in d.blocks[2:5]]


def test_import_known_block_is_idempotent(tmp_path: Path) -> None:
    d = build_devnet(improvements=1)
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            store.import_block(block, d.env)
        assert store.import_block(d.blocks[2], d.env).status == "known"
        assert store.height == len(d.blocks) - 1


def test_invalid_block_leaves_store_untouched(tmp_path: Path) -> None:
    d = build_devnet(improvements=1)
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks[:-1]:
            store.import_block(block, d.env)
        root = store.state.root
        last = d.blocks[-1]
        committer = next(k for k in d.committer_keys if k.public_key == last.header.committer)
        header = sign(dataclasses.replace(last.header, state_root=b"\x01" * 32, signature=EMPTY_SIGNATURE),
                      committer, last.header.chain_id)
        bad = Block(header, last.body)  # signed by its committer: only the root is wrong
        with pytest.raises(InvalidStateRoot):
            store.import_block(bad, d.env)
        assert store.state.root == root and store.head == d.blocks[-2].hash
    with ChainStore(tmp_path / "db") as store:
        assert store.head == d.blocks[-2].hash


def test_unknown_parent_is_reported(tmp_path: Path) -> None:
    d = build_devnet(improvements=1)
    with ChainStore(tmp_path / "db") as store:
        store.import_block(d.blocks[0], d.env)
        with pytest.raises(UnknownParent):
            store.import_block(d.blocks[3], d.env)


def test_heavier_fork_reorgs_state(tmp_path: Path) -> None:
    """An in-turn block outweighs an out-of-turn one at the same height; state follows."""
    base = Devnet(DevnetConfig())
    base.start()
    base.bond_validators()
    fork_state = base.state
    fork_period = base.period
    # Branch A: one out-of-turn block (weight 1) by a committer that is not in turn.
    a = base
    other = next(k for k in a.committer_keys if k is not a.committer_for(a.period + 1))
    a.commit(transactions=[a.tx(a.improver_keys[0], _transfer(a, 5))], out_of_turn=other)
    # Branch B: two in-turn blocks (weight 2 each) from the same fork point.
    b = Devnet(DevnetConfig())
    b.start()
    b.bond_validators()
    assert b.state.root == fork_state.root and b.period == fork_period
    b.commit(transactions=[b.tx(b.improver_keys[1], _transfer(b, 7))])
    b.commit()
    with ChainStore(tmp_path / "db") as store:
        for block in a.blocks:
            store.import_block(block, a.env)
        assert store.head == a.blocks[-1].hash
        # The in-turn block alone (weight 2) outweighs the out-of-turn one (weight 1).
        result = store.import_block(b.blocks[-2], b.env)
        assert result.status == "reorg"
        assert result.reorged_out == (a.blocks[-1].hash,)
        assert store.import_block(b.blocks[-1], b.env).status == "head"
        assert store.head == b.blocks[-1].hash
        assert store.state.root == b.state.root
        assert store.get_block_by_height(store.height) == b.blocks[-1]
        # The reorg wrote the new branch's receipts in its batch; the orphaned block keeps its own.
        assert [store.receipt_at(h)[1] for h in range(store.height + 1)] == b.receipts
        assert store.get_receipt(a.blocks[-1].hash) == a.receipts[-1]
    with ChainStore(tmp_path / "db") as store:
        assert store.state.root == b.state.root


def _transfer(d: Devnet, amount: int):  # type: ignore[no-untyped-def]
    from chain.payloads import Transfer

    return Transfer(d.creator.address_bytes, amount)


CHILD = textwrap.dedent(
    """
    import sys
    from chain.devnet import Devnet, DevnetConfig
    from chain.store import ChainStore
    d = Devnet(DevnetConfig(seed=1)); d.start(); d.bond_validators()
    for i, labels in enumerate(d.improving_labels(12, seed=1)):
        d.improve(d.improver_keys[i % 4], labels)
    with ChainStore(sys.argv[1]) as store:
        for n, block in enumerate(d.blocks):
            store.import_block(block, d.env)
            if n == 5:
                print("imported", flush=True)
    print("done", flush=True)
    """
)


def test_kill_9_mid_import_reopens_consistent(tmp_path: Path) -> None:
    db = tmp_path / "db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the child's own work; see timeout below
        assert line.strip() == "imported"
        time.sleep(0.05)  # let it get partway through later blocks before the kill
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    d = Devnet(DevnetConfig(seed=1))
    d.start()
    d.bond_validators()
    for i, labels in enumerate(d.improving_labels(12, seed=1)):
        d.improve(d.improver_keys[i % 4], labels)
    with ChainStore(db) as store:
        height = store.height
        assert 5 <= height < len(d.blocks)
        assert store.head == d.blocks[height].hash
        # Replay the canonical blocks from scratch: the stored state is exactly that.
        state = State()
        for block in d.blocks[: height + 1]:
            state = apply_block(state, block, d.env)
        assert store.state.root == state.root
        # Every canonical block's receipt was in its block's batch.
        assert [store.receipt_at(h)[1] for h in range(height + 1)] == d.receipts[: height + 1]
        # And the store continues from where it stopped.
        for block in d.blocks[height + 1 :]:
            store.import_block(block, d.env)
        assert store.state.root == d.state.root


def test_rival_problem_blocks_in_turn_wins(tmp_path: Path) -> None:
    """Two committers seal the Problem block; the in-turn one (weight 2) becomes the head."""
    from chain.builder import build_problem_block
    from chain.consensus import in_turn_committer, period_end

    d = Devnet(DevnetConfig())
    params = d.proposal.params
    in_turn = d.committer_for(0)
    other = next(k for k in d.committer_keys if k.public_key != in_turn_committer(params, 0))
    late, _ = build_problem_block(d.proposal, other, period_end(params, 0) + params.grace, d.env)
    on_time, _ = build_problem_block(d.proposal, in_turn, period_end(params, 0), d.env)
    with ChainStore(tmp_path / "db") as store:
        assert store.import_block(late, d.env).status == "head"
        result = store.import_block(on_time, d.env)
        assert result.status == "reorg" and result.reorged_out == (late.hash,)
        assert store.head == on_time.hash and store.height == 0
        assert store.import_block(late, d.env).status == "known"
    with ChainStore(tmp_path / "db") as store:
        assert store.head == on_time.hash
