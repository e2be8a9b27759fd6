"""Header checks of ``apply_block``: each test builds a valid block and breaks one field."""

from __future__ import annotations

import dataclasses

import pytest

from chain import constants as C
from chain.builder import build_problem_block, seal_block
from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet, DevnetConfig
from chain.errors import (
    CommitterNotAllowed,
    InvalidBody,
    InvalidHeader,
    InvalidProblem,
    ParameterOutOfRange,
    InvalidSignature,
    InvalidStateRoot,
)
from chain.signing import sign
from chain.state import State, get_meta
from chain.transition import apply_block, process_block
from chain.types import Block, ProblemBody
from factories import accept, apply, flip, next_block, resign_header, with_body

STRANGER = KeyPair.from_label("not-a-committer")


def test_valid_block_applies(devnet):
    block = next_block(devnet)
    new = apply_block(devnet.state, block, devnet.env)
    assert get_meta(new).height == block.header.height
    assert get_meta(new).period == block.header.period
    assert new.head == block.hash
    assert new.root == block.header.state_root


def test_apply_does_not_modify_the_input_state(devnet):
    before_root, before_head = devnet.state.root, devnet.state.head
    before = dict(devnet.state.items())
    apply(devnet, next_block(devnet))
    assert devnet.state.root == before_root
    assert devnet.state.head == before_head
    assert dict(devnet.state.items()) == before


def test_skipped_periods_are_allowed(devnet):
    block = next_block(devnet, skip=3)
    assert block.header.period == devnet.period + 4
    apply(devnet, block)


def test_out_of_turn_after_grace_is_valid(devnet):
    period = devnet.period + 1
    other = next(k for k in devnet.committer_keys if k.public_key != devnet.committer_for(period).public_key)
    block = next_block(devnet, out_of_turn=other)
    assert block.header.timestamp == period_end(devnet.params, period) + devnet.params.grace
    apply(devnet, block)


def test_invalid_parent(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, parent=b"\x07" * 32)  # invalid parent
    with pytest.raises(InvalidHeader, match="wrong parent"):
        apply(devnet, block)


def test_invalid_height(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, height=block.header.height + 1)  # invalid height
    with pytest.raises(InvalidHeader, match="wrong height"):
        apply(devnet, block)


def test_invalid_height_repeated(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, height=block.header.height - 1)  # invalid height
    with pytest.raises(InvalidHeader, match="wrong height"):
        apply(devnet, block)


def test_invalid_chain_id(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, chain_id=b"\x09" * 32)  # invalid chain id (signed for it)
    with pytest.raises(InvalidHeader, match="wrong chain id"):
        apply(devnet, block)


def test_invalid_period_not_advancing(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, period=devnet.period)  # invalid period: same as the head's
    with pytest.raises(InvalidHeader, match="period does not advance"):
        apply(devnet, block)


def test_invalid_period_going_back(devnet):
    devnet.commit(skip=2)
    block = next_block(devnet)
    block = resign_header(devnet, block, period=devnet.period - 1)  # invalid period: earlier than the head's
    with pytest.raises(InvalidHeader, match="period does not advance"):
        apply(devnet, block)


def test_invalid_timestamp_before_period_end(devnet):
    block = next_block(devnet)
    end = period_end(devnet.params, block.header.period)
    assert block.header.timestamp == end
    block = resign_header(devnet, block, timestamp=end - 1)  # invalid timestamp: period not over
    with pytest.raises(InvalidHeader, match="may not commit this period at this time"):
        apply(devnet, block)


def test_invalid_committer_out_of_turn_before_grace(devnet):
    block = next_block(devnet)
    other = next(k for k in devnet.committer_keys if k.public_key != block.header.committer)
    end = period_end(devnet.params, block.header.period)
    # invalid committer: a listed one, out of turn, one second before the grace time ends
    block = resign_header(devnet, block, keys=other, committer=other.public_key,
                          timestamp=end + devnet.params.grace - 1)
    with pytest.raises(InvalidHeader, match="may not commit"):
        apply(devnet, block)


def test_invalid_committer_not_listed(devnet):
    block = next_block(devnet)
    end = period_end(devnet.params, block.header.period)
    # invalid committer: not in the problem's list, even long after the grace time
    block = resign_header(devnet, block, keys=STRANGER, committer=STRANGER.public_key,
                          timestamp=end + devnet.params.grace + 1000)
    with pytest.raises(InvalidHeader, match="may not commit"):
        apply(devnet, block)


def test_invalid_header_signature(devnet):
    block = next_block(devnet)
    header = dataclasses.replace(block.header, signature=flip(block.header.signature))  # invalid signature
    with pytest.raises(InvalidHeader, match="bad committer signature"):
        apply(devnet, Block(header, block.body))


def test_invalid_signature_by_another_committer(devnet):
    block = next_block(devnet)
    other = next(k for k in devnet.committer_keys if k.public_key != block.header.committer)
    header = sign(block.header, other, devnet.chain_id)
    # invalid signature: a valid signature by another key, header still naming the in-turn committer
    header = dataclasses.replace(header, committer=block.header.committer)
    with pytest.raises(InvalidHeader, match="bad committer signature"):
        apply(devnet, Block(header, block.body))


def test_invalid_body_hash(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, body_hash=b"\x01" * 32)  # invalid body hash
    with pytest.raises(InvalidBody, match="body hash differs"):
        apply(devnet, block)


def test_invalid_body_swapped_under_the_header(devnet):
    tx_block = next_block(devnet, transactions=[devnet.tx(devnet.improver_keys[0], _transfer(devnet, 5))])
    empty = next_block(devnet)
    # invalid body: another valid body under a header that commits to the first
    with pytest.raises(InvalidBody, match="body hash differs"):
        apply(devnet, Block(empty.header, tx_block.body))


def test_invalid_state_root(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, state_root=b"\x02" * 32)  # invalid state root
    with pytest.raises(InvalidStateRoot, match="state root mismatch"):
        apply(devnet, block)


def test_invalid_kind(devnet):
    block = next_block(devnet)
    block = resign_header(devnet, block, kind=C.KIND_PROBLEM)  # invalid kind for an improvement body
    with pytest.raises(InvalidBody, match="improvement body under a non-improvement header"):
        apply(devnet, block)


def test_invalid_block_on_a_stale_state(devnet):
    old_state = devnet.state
    devnet.commit()
    block = next_block(devnet)
    # invalid: the next block applied to the state before its parent
    with pytest.raises(InvalidHeader, match="wrong height"):
        process_block(old_state, block, devnet.env)


def _transfer(d, amount):
    from chain.payloads import Transfer

    return Transfer(d.improver_keys[1].address_bytes, amount)


def test_body_change_needs_a_new_root(devnet):
    tx = devnet.tx(devnet.improver_keys[0], _transfer(devnet, 5))
    block = next_block(devnet)
    # invalid state root: a body with a transfer under the root of an empty body
    block = with_body(devnet, block, transactions=(tx,))
    with pytest.raises(InvalidStateRoot, match="state root mismatch"):
        apply(devnet, block)


def test_accepted_chain_advances(devnet):
    for _ in range(3):
        accept(devnet, next_block(devnet))
    assert get_meta(devnet.state).height == len(devnet.blocks) - 1


# ---------------------------------------------------------------------------
# The problem block (height 0)
# ---------------------------------------------------------------------------
def _fresh(**overrides):
    return Devnet(DevnetConfig(**overrides))


def _problem_block(d, **changes):
    keys = d.committer_for(0)
    block, _ = build_problem_block(d.proposal, keys, period_end(d.params, 0), d.env)
    if changes:
        block = resign_header(d, block, **changes)
    return block


def test_problem_block_applies():
    d = _fresh()
    block = _problem_block(d)
    state = apply_block(State(), block, d.env)
    assert state.root == block.header.state_root
    assert get_meta(state).d_c == (C.PPB,)


def test_invalid_problem_block_twice(devnet):
    block = _problem_block(devnet)
    # invalid: a problem block on a chain that has one
    with pytest.raises(InvalidHeader, match="must start a chain"):
        apply(devnet, block)


def test_invalid_problem_block_before_t_p():
    d = _fresh()
    block = _problem_block(d, timestamp=period_end(d.params, 0) - 1)  # invalid timestamp
    with pytest.raises(CommitterNotAllowed):
        apply_block(State(), block, d.env)


def test_invalid_problem_block_out_of_turn():
    d = _fresh()
    other = d.committer_keys[1]
    # invalid committer: period 0 belongs to committers[0]
    block = _problem_block(d, keys=other, committer=other.public_key)
    with pytest.raises(CommitterNotAllowed):
        apply_block(State(), block, d.env)


def test_invalid_problem_block_chain_id():
    d = _fresh()
    block = _problem_block(d, chain_id=b"\x05" * 32)  # invalid chain id
    with pytest.raises(InvalidHeader, match="chain id is not the proposal's hash"):
        apply_block(State(), block, d.env)


def test_invalid_problem_block_height():
    d = _fresh()
    block = _problem_block(d, height=1)  # invalid height
    with pytest.raises(InvalidHeader, match="must be height 0"):
        apply_block(State(), block, d.env)


def test_invalid_problem_block_parent():
    d = _fresh()
    block = _problem_block(d, parent=b"\x01" * 32)  # invalid parent
    with pytest.raises(InvalidHeader, match="no parent"):
        apply_block(State(), block, d.env)


def _problem_with(d, proposal, resign=True):
    keys = d.committer_for(0)
    body = ProblemBody(proposal, ())
    block = _problem_block(d)
    from chain.types import body_hash

    header = dataclasses.replace(block.header, chain_id=proposal.chain_id, body_hash=body_hash(body))
    return Block(sign(header, keys, header.chain_id), body)


def test_invalid_proposal_signature():
    d = _fresh()
    proposal = dataclasses.replace(d.proposal, signature=flip(d.proposal.signature))  # invalid signature
    with pytest.raises(InvalidSignature, match="bad proposal signature"):
        apply_block(State(), _problem_with(d, proposal), d.env)


def test_invalid_problem_params():
    d = _fresh()
    params = dataclasses.replace(d.params, reward_a=0)  # invalid reward parameter
    proposal = sign(dataclasses.replace(d.proposal, params=params), d.creator)
    with pytest.raises(ParameterOutOfRange) as caught:
        apply_block(State(), _problem_with(d, proposal), d.env)
    assert (caught.value.name, caught.value.value) == ("reward_a", 0)


def _with_params(d, **changes):
    params = dataclasses.replace(d.params, **changes)
    return sign(dataclasses.replace(d.proposal, params=params), d.creator)


def _sealed_problem(d, proposal):
    block, _ = build_problem_block(proposal, d.committer_for(0), period_end(d.params, 0), d.env)
    return block


def test_invalid_reward_scale_beyond_the_exact_reward_range():
    from chain.rewards import MAX_SCALE

    d = _fresh()
    proposal = _with_params(d, reward_scale=MAX_SCALE + 1)  # invalid: improvement_reward cannot pay it
    with pytest.raises(ParameterOutOfRange) as caught:
        apply_block(State(), _problem_with(d, proposal), d.env)
    assert (caught.value.name, caught.value.high) == ("reward_scale", MAX_SCALE)


def test_reward_scale_at_the_limit_is_valid():
    from chain.rewards import MAX_SCALE

    d = _fresh()
    apply_block(State(), _sealed_problem(d, _with_params(d, reward_scale=MAX_SCALE)), d.env)


def test_invalid_season_without_a_reveal_window():
    d = _fresh(holdout_m=50)
    proposal = _with_params(d, reveal_window=0)  # invalid: the holdout could never be opened
    with pytest.raises(ParameterOutOfRange) as caught:
        apply_block(State(), _problem_with(d, proposal), d.env)
    assert (caught.value.name, caught.value.value) == ("reveal_window", 0)


@pytest.mark.parametrize("name", ["validator_bond", "improver_bond"])
def test_invalid_zero_bond(name):
    """A validator bond of 0 makes every vote weightless: the quorum of no stake is met by one fresh
    key voting for its own PoI. An improver bond of 0 makes a false PoI free for its author."""
    d = _fresh()
    proposal = _with_params(d, **{name: 0})
    with pytest.raises(ParameterOutOfRange) as caught:
        apply_block(State(), _problem_with(d, proposal), d.env)
    assert (caught.value.name, caught.value.low) == (name, 1)


def test_invalid_season_too_long_for_its_bookkeeping():
    from chain.records import MAX_SEASON_LOCKED

    d = _fresh(holdout_m=50)
    votes = d.params.max_votes
    longest = MAX_SEASON_LOCKED // (1 + votes) - 1
    apply_block(State(), _sealed_problem(d, _with_params(d, season_periods=longest)), d.env)
    # invalid: one period more and a season's locked rewards could overflow the Season record
    proposal = _with_params(d, season_periods=longest + 1)
    with pytest.raises(InvalidProblem, match="season too long"):
        apply_block(State(), _problem_with(d, proposal), d.env)


def test_invalid_problem_block_state_root():
    d = _fresh()
    block = _problem_block(d, state_root=b"\x03" * 32)  # invalid state root
    with pytest.raises(InvalidStateRoot, match="state root mismatch"):
        apply_block(State(), block, d.env)


def test_seal_block_leaves_the_state_alone(devnet):
    root = devnet.state.root
    block = next_block(devnet)
    _, outcome = seal_block(devnet.state, block.header, block.body, devnet.committer_for(block.header.period),
                            devnet.env)
    assert devnet.state.root == root
    assert outcome.state.root == block.header.state_root
