"""Finding 9: a slashed bond keeps no vote.

A validator that endorsed a false PoI loses half its bond. Before the fix it kept full vote
rights (and a bond could halve down to one unit): its next vote still counted and was paid by
the lottery, taking a position from an honest validator. Now a vote counts only from a bond
of at least the problem's ``validator_bond``; the slashed validator must withdraw and bond
again in full to vote.
"""

from __future__ import annotations

import dataclasses

import pytest

from adversary import pool_of
from chain.consensus import period_start
from chain.errors import BondBelowMinimum
from chain.rewards import validator_reward
from chain.settlement import vote_order_key
from chain.payloads import RegisterValidator, WithdrawBond
from daimon_node.daemon.committer import select_anchor
from daimon_node.daemon.mempool import Verdict
from del_embed.integer import f_int
from chain.devnet import corrupt
from factories import (
    account,
    accept,
    apply,
    assert_supply,
    bond_amount,
    draft_block,
    make_proof,
    new_devnet,
    next_block,
    resign_poi,
    resign_reveal,
    votes_for,
    wrong_vote,
)


def slash(d, validator):
    """``validator`` casts a false vote beside two honest ones on an honest PoI: the three reach the
    quorum (3 of 4) and the anchor stands, but the matching stake (2 of 4) does not, so the
    settlement is unconfirmed and the one false vote loses half its bond."""
    honest = [k for k in d.validator_keys if k.public_key != validator.public_key][:2]
    proof = make_proof(d, validators=honest, tag=f"false-{d.period}")
    false_vote = wrong_vote(d, validator, proof.poi, [flip_labels(v) for v in proof.reveal.labels])
    accept(d, next_block(d, anchor=dataclasses.replace(proof, votes=proof.votes + (false_vote,)).anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "unconfirmed"


def flip_labels(labels: bytes) -> bytes:
    return bytes((b + 1) % 10 for b in labels)


def test_slashed_validator_is_not_paid_and_takes_no_position():
    d = new_devnet()
    cheat, honest = d.validator_keys[0], d.validator_keys[1:]
    slash(d, cheat)
    assert bond_amount(d, cheat) == d.params.validator_bond // 2
    proof = make_proof(d, d.improver_keys[1], error=0.2, seed=7)  # every validator votes, the slashed one too
    # The chain refuses an anchor counting the slashed vote ...
    with pytest.raises(BondBelowMinimum) as err:
        apply(d, draft_block(d, anchor=proof.anchor))
    assert (err.value.validator, err.value.amount, err.value.required) == (
        cheat.public_key, d.params.validator_bond // 2, d.params.validator_bond)
    # ... the pool refuses the vote, and a committer drops it from the anchor it builds.
    pool = pool_of(d)
    now = period_start(d.params, d.period + 1)
    assert pool.add_poi(proof.poi, d.state, now) is Verdict.ACCEPT
    verdicts = {v.validator: pool.add_vote(v, d.state, now) for v in proof.votes}
    assert verdicts[cheat.public_key] is Verdict.REJECT and pool.reasons["vote_BondBelowMinimum"] == 1
    # A pool that took the vote before the slash still holds it: the committer must drop it.
    pool.votes[proof.poi.hash][cheat.public_key] = next(v for v in proof.votes if v.validator == cheat.public_key)
    header = next_block(d).header  # the next block's header: what the committer builds on
    anchor = select_anchor(d.state, pool, header)
    assert {v.validator for v in anchor.votes} == {k.public_key for k in honest}
    before = {k.public_key: account(d, k) for k in d.validator_keys}
    accept(d, next_block(d, anchor=anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "settled"
    # The slashed validator gains nothing; the honest ones hold every lottery position.
    assert account(d, cheat) == before[cheat.public_key]
    order = sorted(honest, key=lambda k: vote_order_key(proof.poi, k.public_key))
    for position, keys in enumerate(order, start=1):
        paid = account(d, keys).balance - before[keys.public_key].balance
        assert paid == validator_reward(settlement.improver_reward, position)
    assert_supply(d)


def test_rebonding_in_full_restores_the_vote():
    d = new_devnet()
    cheat = d.validator_keys[0]
    slash(d, cheat)
    accept(d, next_block(d, transactions=[d.tx(cheat, WithdrawBond())]))
    accept(d, next_block(d, transactions=[d.tx(cheat, WithdrawBond())], skip=d.params.unbonding_periods - 1))
    accept(d, next_block(d, transactions=[d.tx(cheat, RegisterValidator())]))
    assert bond_amount(d, cheat) == d.params.validator_bond
    proof = make_proof(d, d.improver_keys[1], error=0.2, seed=7)
    accept(d, next_block(d, anchor=proof.anchor))  # the full bond votes again
    accept(d, next_block(d, settlement=proof.reveal))
    paid = dict(d.receipts[-1].settlement.validator_rewards)
    assert paid[cheat.address_bytes] > 0
    assert_supply(d)
