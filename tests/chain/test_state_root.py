"""The state map and its incremental root: order independence, copies, replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.errors import InvalidHeader
from del_embed.integer import f_int
from chain.records import Account
from chain.state import MAX_LAYERS, State, get_account, get_meta, set_account
from chain.transition import apply_block
from chain.payloads import Transfer
from chain.types import Anchor, Block
from factories import (
    accept,
    assert_supply,
    fuzz_settings,
    make_proof,
    new_devnet,
    next_block,
    resign_poi,
    resign_reveal,
    votes_for,
)

KEYS = st.binary(min_size=1, max_size=12)
VALUES = st.binary(min_size=0, max_size=20)
ENTRIES = st.dictionaries(KEYS, VALUES, min_size=1, max_size=40)


@fuzz_settings(80)
@given(entries=ENTRIES, data=st.data())
def test_root_is_independent_of_insertion_order(entries, data):
    order = data.draw(st.permutations(list(entries)))
    a = State(entries)
    b = State()
    for key in order:
        b.put(key, entries[key])
    assert a.root == b.root


@fuzz_settings(80)
@given(entries=ENTRIES, data=st.data())
def test_root_changes_when_any_value_changes(entries, data):
    state = State(entries)
    root = state.root
    key = data.draw(st.sampled_from(sorted(entries)))
    new_value = data.draw(VALUES.filter(lambda v: v != entries[key]))
    changed = state.copy()
    changed.put(key, new_value)
    assert changed.root != root
    deleted = state.copy()
    deleted.put(key, None)
    assert deleted.root != root
    added = state.copy()
    added.put(data.draw(KEYS.filter(lambda k: k not in entries)), b"")
    assert added.root != root
    # writing the old value back restores the root
    changed.put(key, entries[key])
    assert changed.root == root


@fuzz_settings(60)
@given(entries=ENTRIES, extra=ENTRIES)
def test_put_then_delete_is_as_if_never_put(entries, extra):
    state = State(entries)
    root = state.root
    fresh = {k: v for k, v in extra.items() if k not in entries}
    for key, value in fresh.items():
        state.put(key, value)
    for key in fresh:
        state.put(key, None)
    assert state.root == root
    for key in list(entries):
        state.put(key, None)
    assert state.root == State().root


@fuzz_settings(60)
@given(entries=ENTRIES, writes=ENTRIES)
def test_copy_writes_do_not_leak(entries, writes):
    original = State(entries)
    root, items = original.root, dict(original.items())
    copy = original.copy()
    for key, value in writes.items():
        copy.put(key, value)
    assert original.root == root
    assert dict(original.items()) == items
    for key in writes:
        assert original.get(key) == entries.get(key)
    # and the other way round: writes to the original after the copy stay out of the copy
    copy_root = copy.root
    for key in writes:
        original.put(key, None)
    assert copy.root == copy_root
    assert all(copy.get(k) == v for k, v in writes.items())


@fuzz_settings(40)
@given(entries=ENTRIES, writes=st.lists(st.tuples(KEYS, VALUES | st.none()), min_size=1, max_size=60))
def test_incremental_root_equals_a_root_built_from_scratch(entries, writes):
    state = State(entries)
    for i, (key, value) in enumerate(writes):
        if i % 3 == 0:
            state = state.copy()  # layers pile up past MAX_LAYERS and get merged
        state.put(key, value)
    assert state.root == State(dict(state.items())).root


def test_many_copies_merge_layers_correctly():
    state = State({b"k0": b"v"})
    chain = [state]
    for i in range(3 * MAX_LAYERS):
        state = state.copy()
        state.put(b"k%d" % (i + 1), b"v%d" % i)
        chain.append(state)
    # every ancestor still sees exactly its own writes
    for depth, s in enumerate(chain):
        assert s.get(b"k%d" % depth) is not None
        assert s.get(b"k%d" % (depth + 1)) is None
        assert s.root == State(dict(s.items())).root


def test_typed_records_hash_like_their_bytes():
    address = b"\x01" * 20
    a = State()
    set_account(a, address, Account(5, 6, 7))
    b = State({b"a" + address: Account(5, 6, 7).encode()})
    assert a.root == b.root
    assert get_account(a, address) == Account(5, 6, 7)
    # an empty account is deleted, not stored
    set_account(a, address, Account(0, 0, 0))
    assert a.root == State().root


def test_typed_write_after_copy_does_not_leak():
    address = b"\x02" * 20
    base = State()
    set_account(base, address, Account(1, 0, 0))
    copy = base.copy()
    set_account(copy, address, Account(2, 0, 0))
    assert get_account(base, address) == Account(1, 0, 0)
    assert get_account(copy, address) == Account(2, 0, 0)
    assert base.root != copy.root


# ---------------------------------------------------------------------------
# Replay: a devnet's blocks, applied from an empty state, give every header's root
# ---------------------------------------------------------------------------
def _busy_devnet(**overrides):
    d = new_devnet(**overrides)
    good = make_proof(d, error=0.3, seed=1)
    accept(d, next_block(d, anchor=good.anchor))
    accept(d, next_block(d, settlement=good.reveal))
    void = make_proof(d, d.improver_keys[1], error=0.1, seed=2)
    accept(d, next_block(d, anchor=void.anchor))
    accept(d, next_block(d, transactions=[d.tx(d.improver_keys[2], Transfer(d.creator.address_bytes, 5), fee=2)]))
    bad = make_proof(d, d.improver_keys[2], error=0.1, seed=3)
    fake = resign_poi(d, bad.poi, ys=(f_int(d.del_model, d.truth),))  # claims d = 0
    reveal = resign_reveal(d, bad.reveal, poi_hash=fake.hash)
    accept(d, next_block(d, anchor=Anchor(fake, votes_for(d, fake, reveal))))
    accept(d, next_block(d, settlement=reveal))
    return d


@pytest.mark.parametrize("overrides", [{}, {"holdout_m": 50, "season_periods": 12}], ids=["plain", "season"])
def test_replay_reproduces_every_root(overrides):
    d = _busy_devnet(**overrides)
    outcomes = [r.settlement.outcome for r in d.receipts if r.settlement is not None]
    assert outcomes == ["settled", "void", "failed"]
    if overrides:
        accept(d, next_block(d, season_reveal=d.season_reveal(),
                             skip=get_meta(d.state).season.start_period + 12 - d.period - 1))
        assert "improvements vested" in d.receipts[-1].season
    assert_supply(d)
    state = State()
    for block in d.blocks:
        decoded = Block.decode(block.encode())  # as received from a peer
        state = apply_block(state, decoded, d.env)
        assert state.root == block.header.state_root
        assert state.head == block.hash
    assert state.root == d.state.root
    assert dict(state.items()) == dict(d.state.items())


def test_replaying_a_block_twice_is_rejected():
    d = new_devnet()
    state = State()
    for block in d.blocks:
        state = apply_block(state, block, d.env)
    with pytest.raises(InvalidHeader, match="wrong height"):
        apply_block(state, d.blocks[-1], d.env)


def _same_bucket_keys(count: int) -> list[bytes]:
    """Keys whose hashes fall in one root bucket (deterministic search)."""
    from chain.crypto import sha256
    from chain.state import BUCKET_BITS

    def bucket(key: bytes) -> int:
        return int.from_bytes(sha256(key)[:2], "big") >> (16 - BUCKET_BITS)

    target = bucket(b"k0")
    keys = [b"k0"]
    i = 1
    while len(keys) < count:
        key = b"k%d" % i
        if bucket(key) == target:
            keys.append(key)
        i += 1
    return keys


@fuzz_settings(30)
@given(data=st.data())
def test_root_is_independent_of_order_within_a_bucket(data):
    keys = _same_bucket_keys(5)
    order = data.draw(st.permutations(keys))
    a, b = State(), State()
    for i, key in enumerate(keys):
        a.put(key, b"v%d" % i)
    for key in order:
        b.put(key, b"v%d" % keys.index(key))
    assert a.root == b.root
