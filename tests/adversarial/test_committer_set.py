"""Committers by transaction (issue 17): a bonded committer set that keys join and leave.

A ``RegisterCommitter`` locks the problem's committer bond and the key takes turns
``committer_delay`` (D) periods later; a ``LeaveCommitter`` takes it out D periods later,
and a second one, D periods after that, returns its bond. A committer whose in-turn
slot is filled out of turn ``committer_miss_limit`` times in a row is removed (D periods
later) and half its bond burns. The set in force at period k is fixed by the state of
any block at most D periods older, which is what header-first import reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chain import constants as C
from chain.committers import EXIT_NAMES, REMOVED_FOR_MISSES, committers_at, get_record
from chain.consensus import IN_TURN_WEIGHT, OUT_OF_TURN_WEIGHT, in_turn_committer, period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet, DevnetConfig
from chain.errors import (
    CommitterAlreadyRegistered,
    CommitterBondLocked,
    CommitterBondUnpaid,
    CommitterNotAllowed,
    CommitterSetFixed,
    LastCommitter,
    UnknownCommitter,
    UnknownParent,
)
from chain.state import get_account, get_meta
from chain.store import ChainStore
from chain.payloads import LeaveCommitter, RegisterCommitter, Transfer
from chain.types import Block
from factories import apply, assert_supply, new_devnet, next_block, resign_header

BOND = 5 * 10**18  # well under the devnet's genesis allocation of 100 tokens per key
DELAY = 2  # periods between a change's block and its effect
MISS_LIMIT = 2


def bonded_devnet(committers: int = 2, miss_limit: int = MISS_LIMIT) -> Devnet:
    d = Devnet(DevnetConfig(committers=committers, committer_bond=BOND, committer_delay=DELAY,
                            committer_miss_limit=miss_limit, spare_committers=2))
    d.start()
    return d


def try_tx(d: Devnet, keys: KeyPair, payload: object) -> Block:
    """A block holding one tx of ``keys``; the devnet's nonce cache is reset if building fails."""
    try:
        return d.commit(transactions=[d.tx(keys, payload)])
    except Exception:
        d.nonces.pop(keys.public_key, None)
        raise


def advance_to(d: Devnet, period: int) -> None:
    """Empty in-turn blocks until the head is at ``period``."""
    while d.period < period:
        d.commit()


def register(d: Devnet, keys: KeyPair) -> int:
    """Register ``keys`` and return the first period it is in the set."""
    block = try_tx(d, keys, RegisterCommitter())
    return block.header.period + DELAY


def imported(d: Devnet, tmp_path: Path) -> ChainStore:
    """A store holding the devnet's chain, imported from bytes as from the network."""
    store = ChainStore(tmp_path / "db")
    for block in d.blocks:
        store.import_bytes(block.encode(), d.env, d.params)
    return store


def test_register_takes_turns_after_the_delay(tmp_path: Path) -> None:
    d = bonded_devnet()
    spare = d.spare_keys[0]
    before = [committers_at(d.state, d.params, k) for k in range(d.period + 1, d.period + 1 + DELAY)]
    joins = register(d, spare)
    assert get_account(d.state, spare.address_bytes).locked == BOND
    # the registration changed no period before its effect: nobody can move a turn at short notice
    assert [committers_at(d.state, d.params, k) for k in range(joins - DELAY, joins)] == before
    assert committers_at(d.state, d.params, joins) == (*d.params.committers, spare.public_key)
    # before it joins, even a block for a slot nobody takes is refused
    while d.period + 1 < joins:
        early = resign_header(d, next_block(d), keys=spare, committer=spare.public_key)
        with pytest.raises(CommitterNotAllowed):
            apply(d, early)
        d.commit()
    # from `joins` on it takes its turn: members[k mod 3] over the set in force
    turn = next(k for k in range(joins, joins + 3) if in_turn_committer(
        d.params, k, committers_at(d.state, d.params, k)) == spare.public_key)
    advance_to(d, turn - 1)
    block = d.commit()
    assert block.header.committer == spare.public_key
    assert block.header.timestamp == period_end(d.params, turn)  # in turn: no grace wait
    with imported(d, tmp_path) as store:
        assert store.head == block.hash
        parent_weight = store._weight(block.header.parent)[1]
        assert store.tip().weight - parent_weight == IN_TURN_WEIGHT
    with pytest.raises(CommitterAlreadyRegistered):
        try_tx(d, spare, RegisterCommitter())


def test_register_needs_the_bond() -> None:
    d = bonded_devnet()
    poor = d.spare_keys[1]
    try_tx(d, poor, Transfer(d.creator.address_bytes, get_account(d.state, poor.address_bytes).balance - BOND))
    with pytest.raises(CommitterBondUnpaid):
        try_tx(d, poor, RegisterCommitter())


def test_leave_takes_effect_after_the_delay_and_the_bond_comes_back_after() -> None:
    d = bonded_devnet()
    spare = d.spare_keys[0]
    advance_to(d, register(d, spare))
    left = try_tx(d, spare, LeaveCommitter()).header.period + DELAY
    assert spare.public_key in committers_at(d.state, d.params, left - 1)
    assert spare.public_key not in committers_at(d.state, d.params, left)
    with pytest.raises(CommitterBondLocked):
        try_tx(d, spare, LeaveCommitter())
    advance_to(d, left)
    late = resign_header(d, next_block(d), keys=spare, committer=spare.public_key)
    with pytest.raises(CommitterNotAllowed):
        apply(d, late)
    advance_to(d, left + DELAY - 1)
    balance = get_account(d.state, spare.address_bytes).balance
    try_tx(d, spare, LeaveCommitter())  # period left + D: the bond is free
    account = get_account(d.state, spare.address_bytes)
    assert account.locked == 0 and account.balance == balance + BOND - d.params.min_fee
    assert_supply(d)


def test_the_last_committer_cannot_leave() -> None:
    d = bonded_devnet(committers=1)
    with pytest.raises(LastCommitter):
        try_tx(d, d.committer_keys[0], LeaveCommitter())


def test_silent_committer_is_removed_and_in_turn_pace_resumes() -> None:
    d = bonded_devnet(committers=2)
    spare, filler = d.spare_keys[0], d.committer_keys[0]
    advance_to(d, register(d, spare) - 1)
    burned_before = get_meta(d.state).burned
    removed_from = None
    misses = 0
    while removed_from is None or d.period + 1 < removed_from:
        k = d.period + 1
        if in_turn_committer(d.params, k, committers_at(d.state, d.params, k)) == spare.public_key:
            d.commit(out_of_turn=filler)  # spare is silent: its slot is filled after the grace
            misses += 1
            record = get_record(d.state, spare.public_key)
            if misses < MISS_LIMIT:
                assert record.until == 0 and record.misses == misses
            elif removed_from is None:
                assert record.exit == REMOVED_FOR_MISSES, EXIT_NAMES[record.exit]
                removed_from = record.until
                assert removed_from == k + DELAY
        else:
            d.commit()
    record = get_record(d.state, spare.public_key)
    assert misses >= MISS_LIMIT
    burn = BOND // C.COMMITTER_MISS_BURN_DIVISOR
    assert record.bond == BOND - burn and get_meta(d.state).burned == burned_before + burn
    assert get_account(d.state, spare.address_bytes).locked == BOND - burn
    assert_supply(d)
    # once out, every period is committed in turn at its end: one block per T_b again
    assert spare.public_key not in committers_at(d.state, d.params, removed_from)
    for _ in range(2 * len(d.params.committers)):
        k = d.period + 1
        block = d.commit()
        assert block.header.committer == in_turn_committer(d.params, k, d.params.committers)
        assert block.header.timestamp == period_end(d.params, k)
    advance_to(d, removed_from + DELAY)
    try_tx(d, spare, LeaveCommitter())  # what is left of the bond comes back
    assert get_account(d.state, spare.address_bytes).locked == 0


def test_misses_must_be_in_a_row() -> None:
    """An in-turn block between two misses resets the count: a flaky committer is not removed."""
    d = bonded_devnet(committers=2)
    spare, filler = d.spare_keys[0], d.committer_keys[0]
    advance_to(d, register(d, spare) - 1)
    spare_turns = 0
    for _ in range(3 * 2 * MISS_LIMIT):
        k = d.period + 1
        if in_turn_committer(d.params, k, committers_at(d.state, d.params, k)) == spare.public_key:
            spare_turns += 1
            d.commit(out_of_turn=filler if spare_turns % 2 else None)  # miss, commit, miss, ...
        else:
            d.commit()
    assert spare_turns >= MISS_LIMIT + 1
    assert get_record(d.state, spare.public_key).until == 0


def test_unbonded_key_cannot_commit(tmp_path: Path) -> None:
    d = bonded_devnet()
    d.commit()
    outsider = d.spare_keys[1]  # funded, never registered
    honest = next_block(d)
    forged = resign_header(d, honest, keys=outsider, committer=outsider.public_key)
    with pytest.raises(CommitterNotAllowed):
        apply(d, forged)
    with imported(d, tmp_path) as store:
        with pytest.raises(CommitterNotAllowed):
            store.import_bytes(forged.encode(), d.env)
        # with no parent state to read the set from, only a key that ever was a committer passes
        orphan = resign_header(d, forged, keys=outsider, parent=b"\x07" * 32)
        with pytest.raises(UnknownCommitter):
            store.import_bytes(orphan.encode(), d.env)
        honest_orphan = resign_header(d, honest, parent=b"\x07" * 32)
        with pytest.raises(UnknownParent):
            store.import_bytes(honest_orphan.encode(), d.env)
        assert not store.has_block(forged.hash) and not store.has_block(orphan.hash)


def test_fixed_list_problems_are_unchanged() -> None:
    d = new_devnet()
    for payload in (RegisterCommitter(), LeaveCommitter()):
        with pytest.raises(CommitterSetFixed):
            try_tx(d, d.committer_keys[0], payload)
    assert d.state.get(b"K") is None and not any(k.startswith(b"k") for k, _ in d.state.items())
    assert committers_at(d.state, d.params, d.period + 100) == d.params.committers


def test_side_branch_is_checked_against_its_own_set(tmp_path: Path) -> None:
    """A fork deeper than D: a key registered on one branch commits there, not on the other.

    The node holds only its head's state; for a side block more than D periods past the
    fork point it rebuilds the parent's state, so the branch's own registration counts
    (and its in-turn weight), and the same key's block on the head's branch is refused.
    """
    a, b = bonded_devnet(), bonded_devnet()  # identical chains: same keys, same blocks
    for d in (a, b):
        d.commit()
    assert a.state.root == b.state.root
    spare = b.spare_keys[0]
    joins = register(b, spare)
    turn = next(k for k in range(joins, joins + 3) if in_turn_committer(
        b.params, k, committers_at(b.state, b.params, k)) == spare.public_key)
    advance_to(b, turn)
    assert b.blocks[-1].header.committer == spare.public_key
    advance_to(a, turn + 1)  # the head's branch: longer, hence heavier
    with imported(a, tmp_path) as store:
        fork_height = len(a.blocks) - (turn + 1 - a.blocks[1].header.period) - 1
        for block in b.blocks[fork_height + 1 :]:
            result = store.import_bytes(block.encode(), b.env)
            assert result.status == "side"
        side_tip = store._weight(b.blocks[-1].hash)
        assert side_tip[1] - store._weight(b.blocks[-1].header.parent)[1] == IN_TURN_WEIGHT
        # on the head's branch the key never registered: its block for a free slot is refused
        forged = resign_header(a, next_block(a), keys=spare, committer=spare.public_key)
        with pytest.raises(CommitterNotAllowed):
            store.import_bytes(forged.encode(), a.env)
        # the side branch grows heavier: the node reorgs onto it and agrees with its state
        advance_to(b, turn + 3)
        for block in b.blocks[-3:]:
            store.import_bytes(block.encode(), b.env)
        assert store.head == b.blocks[-1].hash and store.state.root == b.state.root


def test_a_new_committer_cannot_orphan_the_block_before_its_turn(tmp_path: Path) -> None:
    """The in-turn committer of k+1 (a registrant) builds on k-1: lighter, the head stays."""
    d = bonded_devnet()
    spare = d.spare_keys[0]
    joins = register(d, spare)
    turn = next(k for k in range(joins + 1, joins + 4) if in_turn_committer(
        d.params, k, committers_at(d.state, d.params, k)) == spare.public_key)
    advance_to(d, turn - 2)
    with imported(d, tmp_path) as store:
        block_k = next_block(d)
        store.import_bytes(block_k.encode(), d.env)
        orphaner = next_block(d, skip=1)  # period turn, on k-1
        assert orphaner.header.committer == spare.public_key
        result = store.import_bytes(orphaner.encode(), d.env)
        assert result.status == "side" and store.head == block_k.hash
        assert store._weight(orphaner.hash)[1] - store._weight(orphaner.header.parent)[1] \
            < OUT_OF_TURN_WEIGHT
