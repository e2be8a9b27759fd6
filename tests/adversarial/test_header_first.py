"""Finding 3: the header's signature and committer rule are checked before anything else.

Attacks, each from a peer without any committer key: an unsigned side block (it
used to be stored and reported as accepted, so gossip relayed it); an unsigned
child of the head's parent that claims the in-turn committer and a low hash (it
used to trigger a full reorg attempt); unsigned blocks with an unknown parent or
a future timestamp (they used to be deferred, i.e. kept and judged again); and a
~900 KB body with 300,000 ambiguous positions (about a second of decoding before
anything was checked). A block signed by a real committer but past the
problem's own limits is refused before its body is turned into objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

import chain.store as store_module
import chain.store_branches as branches_module
from chain import constants as C
from chain.codec import pack, struct_to_obj
from chain.consensus import period_end
from chain.devnet import Devnet
from chain.errors import BadCommitterSignature, AnchorOverProblemLimits
from chain.signing import sign
from chain.store import ChainStore
from chain.types import Block, BodyCodec
from daimon_node.daemon.chains import ChainManager, ChainHandle, ImportVerdict
from daimon_node.clock import FakeClock
from factories import flip, make_proof, new_devnet, next_block
from p2p import ContentStore

# 300,000 positions as in the reproduction: three sets at the codec's per-set cap of 100,000.
JUNK_SETS, JUNK_PER_SET = 3, C.MAX_AMBIGUOUS


@pytest.fixture
def body_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how many block bodies are turned into objects."""
    calls: list[int] = []
    real = BodyCodec.from_obj

    def counting(self: BodyCodec, obj: Any) -> Any:
        calls.append(1)
        return real(self, obj)

    monkeypatch.setattr(BodyCodec, "from_obj", counting)
    return calls


def manager_with(tmp_path: Path, d: Devnet, now: float) -> tuple[ChainManager, ChainHandle]:
    content = ContentStore(tmp_path / "content")
    for data in d.contents.values():
        content.put(data)
    manager = ChainManager(tmp_path / "node", content, FakeClock(now))
    handle, _ = manager.add_proposal(d.proposal)
    for block in d.blocks:
        assert manager.import_block(handle, block.encode()).verdict is ImportVerdict.ACCEPTED
    return manager, handle


def unsigned(block: Block, **changes: Any) -> Block:
    """``block`` with header fields changed and a signature that does not verify."""
    header = dataclasses.replace(block.header, **changes)
    return Block(dataclasses.replace(header, signature=flip(header.signature)), block.body)


def junk_block_bytes(d: Devnet, *, sign_as_committer: bool) -> bytes:
    """A block anchoring a PoI with 300,000 ambiguous positions (~900 KB), body hash right."""
    proof = make_proof(d)
    poi_obj = struct_to_obj(proof.poi)
    poi_obj[6] = [[[i, 0] for i in range(JUNK_PER_SET)] for _ in range(JUNK_SETS)]
    block = next_block(d)
    body_obj = BodyCodec().to_obj(block.body)
    body_obj[1][3] = [poi_obj, [struct_to_obj(v) for v in proof.votes]]
    body_raw = pack(body_obj)
    header = dataclasses.replace(block.header, body_hash=hashlib.sha256(body_raw).digest())
    if sign_as_committer:
        header = sign(header, d.committer_for(header.period), d.chain_id)
    else:
        header = dataclasses.replace(header, signature=flip(header.signature))
    return pack([struct_to_obj(header), body_obj])


def test_unsigned_side_block_is_neither_stored_nor_relayed(tmp_path: Path) -> None:
    d = new_devnet()
    d.commit()
    side = unsigned(d.blocks[-1], timestamp=d.blocks[-1].header.timestamp + 1)  # a sibling of the head
    manager, handle = manager_with(tmp_path, d, period_end(d.params, d.period) + d.params.grace)
    report = manager.import_block(handle, side.encode())
    assert report.verdict is ImportVerdict.INVALID
    assert not handle.store.has_block(side.hash)
    with pytest.raises(BadCommitterSignature):
        handle.store.import_block(side, d.env)
    manager.close()


def test_unsigned_in_turn_child_triggers_no_reorg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = new_devnet()
    d.commit()
    # Claims the head's own (in-turn) slot on the same parent, with the lowest possible hash bits ground.
    junk = [unsigned(d.blocks[-1], timestamp=d.blocks[-1].header.timestamp + i) for i in range(1, 33)]
    executed: list[bytes] = []
    real = store_module.process_block

    def spy(state: Any, block: Block, env: Any, **kwargs: Any) -> Any:
        executed.append(block.hash)
        return real(state, block, env, **kwargs)

    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            store.import_block(block, d.env)
        monkeypatch.setattr(store_module, "process_block", spy)  # the head's extension
        monkeypatch.setattr(branches_module, "process_block", spy)  # side branches and reorgs
        for block in junk:
            with pytest.raises(BadCommitterSignature):
                store.import_block(block, d.env)
        assert executed == [] and store.head == d.blocks[-1].hash


@pytest.mark.parametrize("case", ["unknown parent", "future timestamp"])
def test_unsigned_block_is_rejected_not_deferred(tmp_path: Path, case: str, body_decodes: list[int]) -> None:
    d = new_devnet()
    now = period_end(d.params, d.period + 1)
    block = next_block(d)
    if case == "unknown parent":
        junk = unsigned(block, parent=hashlib.sha256(b"nowhere").digest())
    else:
        junk = unsigned(block, timestamp=int(now) + 3600)
    manager, handle = manager_with(tmp_path, d, now)
    before = len(body_decodes)
    assert manager.import_block(handle, junk.encode()).verdict is ImportVerdict.INVALID
    assert len(body_decodes) == before
    manager.close()


def test_junk_body_is_not_decoded_before_the_signature(tmp_path: Path, body_decodes: list[int]) -> None:
    d = new_devnet()
    raw = junk_block_bytes(d, sign_as_committer=False)
    assert len(raw) > 800_000
    manager, handle = manager_with(tmp_path, d, period_end(d.params, d.period + 1))
    before = len(body_decodes)
    assert manager.import_block(handle, raw).verdict is ImportVerdict.INVALID
    assert len(body_decodes) == before
    manager.close()


def test_signed_body_over_the_problem_limits_is_refused_before_objects(tmp_path: Path, body_decodes: list[int]) -> None:
    """Signed by the in-turn committer (so the committer is accountable), but 300,000 ambiguous
    positions exceed the problem's ``max_ambiguous``: refused from the raw lists."""
    d = new_devnet()
    raw = junk_block_bytes(d, sign_as_committer=True)
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            store.import_block(block, d.env)
        before = len(body_decodes)
        with pytest.raises(AnchorOverProblemLimits) as caught:
            store.import_bytes(raw, d.env)
        assert caught.value.values["count"] == JUNK_SETS * JUNK_PER_SET
        assert caught.value.values["limit"] == d.params.max_ambiguous
        assert len(body_decodes) == before


def test_honest_blocks_still_import_from_bytes(tmp_path: Path) -> None:
    d = new_devnet()
    for labels in d.improving_labels(2, seed=4):
        d.improve(d.improver_keys[1], labels)
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            assert store.import_bytes(block.encode(), d.env, d.params).status == "head"
        assert store.state.root == d.state.root




