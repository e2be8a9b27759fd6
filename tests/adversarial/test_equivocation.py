"""Finding 2 (equivocation): two headers one committer signed for one period are evidence.

A committer that re-signs its own block (another timestamp, ground to a lower
hash) must not win the head, and anyone who holds both signed headers can put
them on chain in a ``ReportEquivocation`` transaction: the committer is ejected
(its later blocks are invalid; its turns are filled out of turn after the grace
time) and its spendable balance burns. The honest flow still settles.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chain.builder import build_improvement_block
from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet
from chain.errors import (
    CommitterEjected,
    CommitterEquivocation,
    InvalidEquivocationReport,
)
from chain.signing import sign
from chain.state import get_account, get_meta, is_ejected
from chain.store import ChainStore
from chain.header import BlockHeader
from chain.payloads import ReportEquivocation
from chain.types import Block
from factories import OTHER_CHAIN, apply, assert_supply, draft_block, flip, new_devnet, next_block

GRIND_TRIES = 64  # each timestamp is a fresh uniform hash: P(no lower hash in 64) = 2^-64


def resigned(d: Devnet, block: Block, *, below: bytes | None = None) -> Block:
    """The same committer's second block for the same period and parent (another timestamp)."""
    keys = next(k for k in d.committer_keys if k.public_key == block.header.committer)
    for extra in range(1, GRIND_TRIES + 1):
        other, _ = build_improvement_block(d.state, keys, period=block.header.period,
                                           timestamp=block.header.timestamp + extra, env=d.env)
        if below is None or other.hash < below:
            return other
    raise AssertionError("grinding failed")


def report(d: Devnet, reporter: KeyPair, a: BlockHeader, b: BlockHeader) -> object:
    return d.tx(reporter, ReportEquivocation(a, b))


def test_resigned_block_does_not_take_the_head(tmp_path: Path) -> None:
    d = new_devnet()
    block_k = next_block(d)
    twin = resigned(d, block_k, below=block_k.hash)
    third = resigned(d, twin)
    with ChainStore(tmp_path / "db") as store:
        for block in [*d.blocks, block_k]:
            store.import_block(block, d.env)
        result = store.import_block(twin, d.env)
        # Kept (a node that saw the twin first may need block k's to follow a heavier chain),
        # never the head, and returned with both signed headers: the evidence.
        assert result.status == "side" and store.head == block_k.hash
        assert result.equivocation == (block_k.header, twin.header)
        # A third block for the same period is refused: one committer stores at most two.
        with pytest.raises(CommitterEquivocation) as caught:
            store.import_block(third, d.env)
        assert (caught.value.first, caught.value.second) == (block_k.header, third.header)
        assert not store.has_block(third.hash) and store.head == block_k.hash


def test_evidence_from_anyone_ejects_and_burns() -> None:
    d = new_devnet()
    block_k = next_block(d)
    twin = resigned(d, block_k)
    d.commit()  # block k (deterministic build) is accepted as usual
    cheat = next(k for k in d.committer_keys if k.public_key == block_k.header.committer)
    spendable_before = get_account(d.state, cheat.address_bytes).balance
    burned_before = get_meta(d.state).burned
    reporter = d.improver_keys[3]  # not a committer, not a validator: anyone
    d.commit(transactions=[report(d, reporter, block_k.header, twin.header)])
    assert is_ejected(d.state, cheat.public_key)
    acct = get_account(d.state, cheat.address_bytes)
    assert acct.balance == 0
    assert get_meta(d.state).burned == burned_before + spendable_before
    assert_supply(d)
    # From now on its blocks are invalid, in turn or not.
    while d.committer_for(d.period + 1) is not cheat:
        d.commit()
    with pytest.raises(CommitterEjected):
        apply(d, next_block(d))
    # Its turn is filled out of turn after the grace time, and the honest flow still settles.
    stand_in = next(k for k in d.committer_keys if k is not cheat)
    d.commit(out_of_turn=stand_in)
    for labels in d.improving_labels(2, seed=3):
        proof_keys = d.improver_keys[0]
        before = d.balance(proof_keys)[0]
        _commit_improvement(d, proof_keys, labels, cheat)
        assert d.balance(proof_keys)[0] > before  # bond back plus a reward
    assert_supply(d)


def _commit_improvement(d: Devnet, keys: KeyPair, labels, cheat: KeyPair) -> None:  # type: ignore[no-untyped-def]
    """``Devnet.improve`` with every block the ejected committer would sign made out of turn."""
    import hashlib

    from chain.labels import array_to_labels
    from chain.payloads import RegisterDigest
    from chain.proofs import model_claim
    from chain.types import Anchor

    def commit(**kw):  # type: ignore[no-untyped-def]
        in_turn = d.committer_for(d.period + 1)
        if in_turn is cheat:
            return d.commit(out_of_turn=next(k for k in d.committer_keys if k is not cheat), **kw)
        return d.commit(**kw)

    digest = hashlib.sha256(b"model:" + array_to_labels(labels)).digest()
    commit(transactions=[d.tx(keys, RegisterDigest(model_claim(keys.public_key, digest)))])
    poi, reveal = d.prove(keys, digest, labels)
    commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    receipt_block = commit(settlement=reveal)
    assert d.receipts[-1].settlement is not None and d.receipts[-1].settlement.outcome == "settled", receipt_block


def _evidence(d: Devnet) -> tuple[Block, Block]:
    block_k = next_block(d)
    return block_k, resigned(d, block_k)


@pytest.mark.parametrize("case", ["same header", "other period", "other committer", "bad signature",
                                  "other chain", "not a committer"])
def test_invalid_evidence_is_refused(case: str) -> None:
    d = new_devnet()
    a, b = _evidence(d)
    ha, hb = a.header, b.header
    if case == "same header":
        hb = ha
    elif case == "other period":
        later, _ = build_improvement_block(d.state, d.committer_for(d.period + 1 + len(d.committer_keys)),
                                           period=d.period + 1 + len(d.committer_keys),
                                           timestamp=period_end(d.params, d.period + 1 + len(d.committer_keys)),
                                           env=d.env)
        hb = later.header
    elif case == "other committer":
        other = next(k for k in d.committer_keys if k.public_key != ha.committer)
        hb = sign(hb, other, hb.chain_id)
    elif case == "bad signature":
        hb = dataclasses.replace(hb, signature=flip(hb.signature))
    elif case == "other chain":
        keys = next(k for k in d.committer_keys if k.public_key == ha.committer)
        ha = sign(dataclasses.replace(ha, chain_id=OTHER_CHAIN), keys, OTHER_CHAIN)
        hb = sign(dataclasses.replace(hb, chain_id=OTHER_CHAIN), keys, OTHER_CHAIN)
    elif case == "not a committer":
        stranger = d.improver_keys[2]
        ha, hb = sign(ha, stranger, ha.chain_id), sign(hb, stranger, hb.chain_id)
    block = _unchecked_block_with(d, report(d, d.improver_keys[3], ha, hb))
    with pytest.raises(InvalidEquivocationReport):
        apply(d, block)


def _unchecked_block_with(d: Devnet, tx) -> Block:  # type: ignore[no-untyped-def]
    """A correctly signed block carrying ``tx`` (the builder would refuse to seal an invalid one)."""
    return draft_block(d, transactions=[tx])


def test_a_second_report_of_the_same_committer_is_refused() -> None:
    d = new_devnet()
    a, b = _evidence(d)
    d.commit(transactions=[report(d, d.improver_keys[3], a.header, b.header)])
    again = _unchecked_block_with(d, report(d, d.improver_keys[2], a.header, b.header))
    with pytest.raises(InvalidEquivocationReport):
        apply(d, again)


def test_a_node_drops_the_twin_and_its_evidence_ejects_through_the_committer(tmp_path: Path) -> None:
    """The node path: the twin comes back as EQUIVOCATION (gossip IGNOREs it: not relayed), the
    evidence goes into a ReportEquivocation the pool accepts, and an honest committer's next
    block carries it."""
    from daimon_node.daemon.chains import ChainManager, ImportVerdict
    from daimon_node.clock import FakeClock
    from daimon_node.daemon.committer import build_block
    from p2p import ContentStore

    d = new_devnet()
    block_k = next_block(d)
    twin = resigned(d, block_k)
    content = ContentStore(tmp_path / "content")
    for data in d.contents.values():
        content.put(data)
    k = block_k.header.period
    clock = FakeClock(period_end(d.params, k) + d.params.grace)
    manager = ChainManager(tmp_path / "node", content, clock)
    handle, _ = manager.add_proposal(d.proposal)
    for block in [*d.blocks, block_k]:
        assert manager.import_block(handle, block.encode()).verdict is ImportVerdict.ACCEPTED
    report_ = manager.import_block(handle, twin.encode())
    assert report_.verdict is ImportVerdict.EQUIVOCATION and report_.evidence == (block_k.header, twin.header)
    assert handle.store.head == block_k.hash
    reporter = d.improver_keys[3]
    tx = d.tx(reporter, ReportEquivocation(*report_.evidence))
    assert handle.mempool.add_tx(tx, handle.state).value == "accept"
    # the next in-turn committer (not the cheat) seals it at the end of period k+1
    clock.set(period_end(d.params, k + 1))
    honest = d.committer_for(k + 1)
    assert honest.public_key != block_k.header.committer
    block = build_block(handle.state, handle.mempool, honest, clock.now(), handle.env)
    assert block is not None and tx in block.body.transactions
    assert manager.import_block(handle, block.encode()).verdict is ImportVerdict.ACCEPTED
    assert is_ejected(handle.state, block_k.header.committer)
    manager.close()


def test_a_committer_never_signs_a_period_twice(tmp_path: Path) -> None:
    """After a reorg away from its own block k, the committer does not re-sign period k."""
    from daimon_node.daemon.committer import plan_commit

    d = new_devnet()
    k = d.period + 1
    keys = d.committer_for(k)
    now = period_end(d.params, k)
    assert plan_commit(d.state, keys, now) is not None
    assert plan_commit(d.state, keys, now, has_signed=lambda period: period == k) is None
    with ChainStore(tmp_path / "db") as store:
        for block in d.blocks:
            store.import_block(block, d.env)
        store.import_block(next_block(d), d.env)
        assert store.has_signed(keys.public_key, k) and not store.has_signed(keys.public_key, k + 1)
