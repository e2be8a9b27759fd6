"""Settlement of the previous anchor (block k+1): reveals, rewards, slashing, voiding."""

from __future__ import annotations

import dataclasses

import pytest

from chain import constants as C
from chain.devnet import corrupt
from chain.errors import InvalidSettlement
from chain.labels import array_to_labels, labels_hash
from chain.rewards import improvement_reward, validator_reward
from chain.records import BestModel
from chain.state import get_bond, get_meta, get_problem
from chain.settlement import vote_order_key
from chain.payloads import Transfer, WithdrawBond
from chain.proofs import Ambiguous
from del_embed.integer import distance_ppb, f_int
from factories import (
    OTHER_CHAIN,
    account,
    accept,
    apply,
    assert_supply,
    bond_amount,
    draft_block,
    flip,
    make_proof,
    multi_tuple_devnet,
    multi_tuple_proof,
    new_devnet,
    next_block,
    resign_poi,
    resign_reveal,
    votes_for,
    wrong_vote,
)


def anchor(d, proof):
    return accept(d, next_block(d, anchor=proof.anchor))


def settle(d, proof):
    return accept(d, next_block(d, settlement=proof.reveal))


def distance_of(d, labels):
    return distance_ppb(f_int(d.del_model, labels), d.proposal.first_tuple.y_t)


def snapshot(d, keys):
    return {k.public_key: account(d, k) for k in keys}


# ---------------------------------------------------------------------------
# Paying an honest improvement
# ---------------------------------------------------------------------------
def test_rewards_are_exact_with_lottery_positions(devnet):
    proof = make_proof(devnet)
    anchor(devnet, proof)
    people = [proof.keys, *devnet.validator_keys]
    before = snapshot(devnet, people)
    block = settle(devnet, proof)

    dist = distance_of(devnet, proof.labels)
    reward = improvement_reward(dist, C.PPB, devnet.params.reward_a, devnet.params.reward_scale)
    assert reward > 0
    imp = account(devnet, proof.keys)
    old = before[proof.keys.public_key]
    # the improver bond comes back and the reward is spendable (no seasons)
    assert imp.balance == old.balance + devnet.params.improver_bond + reward
    assert imp.locked == old.locked - devnet.params.improver_bond
    order = sorted(devnet.validator_keys, key=lambda k: vote_order_key(proof.poi, k.public_key))
    # the votes were listed in key order; the lottery must reorder them for this test to mean anything
    assert [v.validator for v in proof.votes] != [k.public_key for k in order]
    paid = []
    for position, v in enumerate(order, start=1):
        amount = validator_reward(reward, position)
        assert account(devnet, v).balance == before[v.public_key].balance + amount
        assert account(devnet, v).locked == before[v.public_key].locked
        paid.append((v.address_bytes, amount))
    settlement = devnet.receipts[-1].settlement
    assert settlement.outcome == "settled"
    assert settlement.distances == (dist,)
    assert settlement.improver_reward == reward
    assert list(settlement.validator_rewards) == paid
    meta = get_meta(devnet.state)
    assert meta.d_c == (dist,)
    assert meta.confirmed_d_c == (dist,)
    assert meta.provisional == BestModel(proof.digest, proof.keys.address_bytes, block.header.height, (dist,))
    assert meta.confirmed == meta.provisional
    assert meta.pending is None
    assert meta.minted == reward + sum(a for _, a in paid)
    assert_supply(devnet)


def test_second_improvement_is_paid_against_the_new_d_c(devnet):
    first = make_proof(devnet, error=0.3, seed=1)
    anchor(devnet, first)
    settle(devnet, first)
    d1 = distance_of(devnet, first.labels)
    second = make_proof(devnet, devnet.improver_keys[1], error=0.05, seed=2)
    d2 = distance_of(devnet, second.labels)
    assert d2 < d1 - devnet.params.delta_ppb
    anchor(devnet, second)
    settle(devnet, second)
    settlement = devnet.receipts[-1].settlement
    assert settlement.improver_reward == improvement_reward(d2, d1, devnet.params.reward_a,
                                                            devnet.params.reward_scale)
    assert get_meta(devnet.state).d_c == (d2,)
    assert get_meta(devnet.state).provisional.digest == second.digest
    assert_supply(devnet)


def test_vote_with_a_wrong_digest_is_unpaid_and_not_counted(devnet):
    proof = make_proof(devnet)
    liar = devnet.validator_keys[1]
    other_labels = [array_to_labels(corrupt(devnet.truth, 0.5, 10, 9))]
    votes = tuple(wrong_vote(devnet, v, proof.poi, other_labels) if v == liar
                  else devnet.vote(v, proof.poi, proof.reveal) for v in devnet.validator_keys)
    anchor(devnet, dataclasses.replace(proof, votes=votes))
    before = snapshot(devnet, devnet.validator_keys)
    settle(devnet, proof)
    reward = devnet.receipts[-1].settlement.improver_reward
    honest = sorted((v for v in devnet.validator_keys if v != liar),
                    key=lambda k: vote_order_key(proof.poi, k.public_key))
    for position, v in enumerate(honest, start=1):  # positions count matching votes only
        assert account(devnet, v).balance == before[v.public_key].balance + validator_reward(reward, position)
    assert account(devnet, liar) == before[liar.public_key]  # unpaid, not slashed
    assert bond_amount(devnet, liar) == devnet.params.validator_bond
    assert_supply(devnet)


def test_votes_ignore_ambiguous_positions(devnet):
    keys = devnet.improver_keys[0]
    proof = make_proof(devnet, keys)
    i = 7
    amb = ((Ambiguous(i, int(proof.labels[i])),),)
    poi = resign_poi(devnet, proof.poi, ambiguous=amb)
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash)
    # the validator's own label at the ambiguous position differs from the prover's
    theirs = bytearray(reveal.labels[0])
    theirs[i] = (theirs[i] + 1) % 10
    validator = devnet.validator_keys[0]
    vote = wrong_vote(devnet, validator, poi, [bytes(theirs)])
    assert vote.labels_digest == devnet.vote(validator, poi, reveal).labels_digest
    others = devnet.validator_keys[1:3]  # with validator 0, 3 of 4 bonds: the quorum
    votes = (vote, *(devnet.vote(v, poi, reveal) for v in others))
    anchor(devnet, dataclasses.replace(proof, poi=poi, reveal=reveal, votes=votes))
    before = account(devnet, validator).balance
    accept(devnet, next_block(devnet, settlement=reveal))
    reward = devnet.receipts[-1].settlement.improver_reward
    order = sorted([validator, *others], key=lambda k: vote_order_key(poi, k.public_key))
    assert account(devnet, validator).balance == before + validator_reward(reward, order.index(validator) + 1)


# ---------------------------------------------------------------------------
# A PoI whose own commitment is false fails: improver bond burned, voters slashed by half
# ---------------------------------------------------------------------------
def _assert_failed(d, proof, before, reason):
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "failed"
    assert reason in settlement.reason
    imp, old = account(d, proof.keys), before[proof.keys.public_key]
    assert imp.balance == old.balance - d.params.improver_bond  # bond was locked at anchoring, now burned
    assert imp.locked == old.locked
    half = d.params.validator_bond // C.VOTE_SLASH_DIVISOR
    for vote in proof.votes:
        v_old = before[vote.validator]
        v_new = account(d, next(k for k in d.validator_keys if k.public_key == vote.validator))
        assert v_new.balance == v_old.balance
        assert v_new.locked == v_old.locked - half
        assert get_bond(d.state, vote.validator).amount == d.params.validator_bond - half
    assert settlement.slashed == d.params.improver_bond + half * len(proof.votes)
    assert get_meta(d.state).burned == settlement.slashed
    assert get_meta(d.state).minted == 0
    assert get_meta(d.state).d_c == (C.PPB,)
    assert get_meta(d.state).provisional is None
    assert_supply(d)


def _fail_with(d, proof, reason):
    before = snapshot(d, [proof.keys, *d.validator_keys])
    anchor(d, proof)
    settle(d, proof)
    _assert_failed(d, proof, before, reason)


def test_f_int_mismatch_fails_and_slashes(devnet):
    proof = make_proof(devnet)
    fake_y = f_int(devnet.del_model, corrupt(devnet.truth, 0.01, 10, 5))
    poi = resign_poi(devnet, proof.poi, ys=(fake_y,))  # claims a better embedding than its labels give
    proof = dataclasses.replace(proof, poi=poi, reveal=resign_reveal(devnet, proof.reveal, poi_hash=poi.hash))
    proof = dataclasses.replace(proof, votes=votes_for(devnet, proof.poi, proof.reveal))
    _fail_with(devnet, proof, "f_int of tuple 0 differs")


def test_beating_d_c_minus_delta_by_one_unit_settles():
    probe = new_devnet()
    dist = distance_of(probe, corrupt(probe.truth, 0.2, 10, 1))
    d = new_devnet(delta_ppb=C.PPB - dist - 1)
    proof = make_proof(d, error=0.2, seed=1)
    anchor(d, proof)
    settle(d, proof)
    assert d.receipts[-1].settlement.outcome == "settled"
    assert get_meta(d.state).d_c == (dist,)


def test_label_vector_of_the_wrong_length_fails(devnet):
    proof = make_proof(devnet)
    labels = (proof.reveal.labels[0] + b"\x00",)
    poi = resign_poi(devnet, proof.poi, labels_hash=labels_hash(labels))
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash, labels=labels)
    proof = dataclasses.replace(proof, poi=poi, reveal=reveal, votes=votes_for(devnet, poi, reveal))
    _fail_with(devnet, proof, "label vector of the wrong length")


def test_label_outside_the_classes_fails(devnet):
    proof = make_proof(devnet)
    labels = (bytes([10]) + proof.reveal.labels[0][1:],)  # class 10 of 0..9
    poi = resign_poi(devnet, proof.poi, labels_hash=labels_hash(labels))
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash, labels=labels)
    proof = dataclasses.replace(proof, poi=poi, reveal=reveal, votes=votes_for(devnet, poi, reveal))
    _fail_with(devnet, proof, "label outside the classes")


def test_ambiguous_label_differing_from_the_reveal_fails(devnet):
    proof = make_proof(devnet)
    i = 3
    amb = ((Ambiguous(i, (int(proof.labels[i]) + 1) % 10),),)
    poi = resign_poi(devnet, proof.poi, ambiguous=amb)
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash)
    proof = dataclasses.replace(proof, poi=poi, reveal=reveal, votes=votes_for(devnet, poi, reveal))
    _fail_with(devnet, proof, "ambiguous label differs")


def test_ambiguous_position_beyond_the_labels_fails(devnet):
    proof = make_proof(devnet)
    amb = ((Ambiguous(devnet.cfg.m, 0),),)
    poi = resign_poi(devnet, proof.poi, ambiguous=amb)
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash)
    votes = tuple(_unmasked_vote(devnet, v, poi, reveal) for v in devnet.validator_keys)
    proof = dataclasses.replace(proof, poi=poi, reveal=reveal, votes=votes)
    _fail_with(devnet, proof, "ambiguous label differs")


def _unmasked_vote(d, keys, poi, reveal):
    # a position beyond the vector cannot be masked: vote over the plain labels
    return wrong_vote(d, keys, poi, reveal.labels, ambiguous=((),))


def test_slashed_validator_withdraws_what_is_left(devnet):
    voters = devnet.validator_keys[:3]  # the quorum
    proof = make_proof(devnet, validators=voters)
    fake_y = f_int(devnet.del_model, corrupt(devnet.truth, 0.01, 10, 5))
    poi = resign_poi(devnet, proof.poi, ys=(fake_y,))
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=poi.hash)
    anchor(devnet, dataclasses.replace(proof, poi=poi, votes=votes_for(devnet, poi, reveal, voters)))
    accept(devnet, next_block(devnet, settlement=reveal))
    v = devnet.validator_keys[0]
    left = devnet.params.validator_bond - devnet.params.validator_bond // 2
    assert bond_amount(devnet, v) == left
    before = account(devnet, v)
    accept(devnet, next_block(devnet, transactions=[devnet.tx(v, WithdrawBond())]))
    accept(devnet, next_block(devnet, transactions=[devnet.tx(v, WithdrawBond())], skip=1))
    after = account(devnet, v)
    fees = 2 * devnet.params.min_fee  # the two withdraw txs
    assert (after.balance, after.locked) == (before.balance + left - fees, before.locked - left)
    assert_supply(devnet)


# ---------------------------------------------------------------------------
# An unrevealed PoI is void: improver bond burned, voters untouched
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("skip", [0, 2])
def test_unrevealed_poi_is_void(devnet, skip):
    proof = make_proof(devnet)
    before = snapshot(devnet, [proof.keys, *devnet.validator_keys])
    anchor(devnet, proof)
    accept(devnet, next_block(devnet, skip=skip))  # no reveal
    settlement = devnet.receipts[-1].settlement
    assert settlement.outcome == "void"
    assert settlement.slashed == devnet.params.improver_bond
    imp = account(devnet, proof.keys)
    assert imp.balance == before[proof.keys.public_key].balance - devnet.params.improver_bond
    assert imp.locked == before[proof.keys.public_key].locked
    for v in devnet.validator_keys:
        assert account(devnet, v) == before[v.public_key]
        assert bond_amount(devnet, v) == devnet.params.validator_bond
    meta = get_meta(devnet.state)
    assert meta.pending is None
    assert meta.d_c == (C.PPB,)
    assert meta.burned == devnet.params.improver_bond
    assert_supply(devnet)


def test_fees_in_the_settling_block_go_to_the_committer(devnet):
    proof = make_proof(devnet)
    anchor(devnet, proof)
    tx = devnet.tx(devnet.improver_keys[3], Transfer(devnet.improver_keys[2].address_bytes, 1), fee=123)
    block = next_block(devnet, settlement=proof.reveal, transactions=[tx])
    committer = next(k for k in devnet.committer_keys if k.public_key == block.header.committer)
    before = account(devnet, committer).balance
    accept(devnet, block)
    assert account(devnet, committer).balance == before + 123
    assert devnet.receipts[-1].fees == 123
    assert_supply(devnet)


# ---------------------------------------------------------------------------
# Invalid reveals make the block invalid
# ---------------------------------------------------------------------------
def _anchored(d):
    proof = make_proof(d)
    anchor(d, proof)
    return proof


def test_invalid_reveal_with_nothing_anchored(devnet):
    proof = make_proof(devnet)  # registered, never anchored
    with pytest.raises(InvalidSettlement, match="a reveal with nothing anchored"):
        apply(devnet, draft_block(devnet, settlement=proof.reveal))


def test_invalid_reveal_for_another_poi(devnet):
    proof = _anchored(devnet)
    reveal = resign_reveal(devnet, proof.reveal, poi_hash=b"\x13" * 32)  # invalid PoI hash
    with pytest.raises(InvalidSettlement, match="reveal for another PoI"):
        apply(devnet, draft_block(devnet, settlement=reveal))


def test_invalid_reveal_for_another_chain(devnet):
    proof = _anchored(devnet)
    reveal = resign_reveal(devnet, proof.reveal, chain_id=OTHER_CHAIN)  # invalid chain (signed for it)
    with pytest.raises(InvalidSettlement, match="reveal for another PoI"):
        apply(devnet, draft_block(devnet, settlement=reveal))


def test_invalid_reveal_not_by_the_prover(devnet):
    proof = _anchored(devnet)
    other = devnet.improver_keys[1]
    reveal = resign_reveal(devnet, proof.reveal, keys=other, prover=other.public_key)  # invalid revealer
    with pytest.raises(InvalidSettlement, match="reveal not by the prover"):
        apply(devnet, draft_block(devnet, settlement=reveal))


def test_invalid_reveal_signature(devnet):
    proof = _anchored(devnet)
    reveal = dataclasses.replace(proof.reveal, signature=flip(proof.reveal.signature))  # invalid signature
    with pytest.raises(InvalidSettlement, match="bad reveal signature"):
        apply(devnet, draft_block(devnet, settlement=reveal))


def test_invalid_reveal_labels_not_hashing_to_the_commitment(devnet):
    proof = _anchored(devnet)
    labels = bytearray(proof.reveal.labels[0])
    labels[0] = (labels[0] + 1) % 10
    reveal = resign_reveal(devnet, proof.reveal, labels=(bytes(labels),))  # invalid labels
    with pytest.raises(InvalidSettlement, match="do not hash to the PoI's commitment"):
        apply(devnet, draft_block(devnet, settlement=reveal))


def test_invalid_reveal_outside_the_next_period(devnet):
    proof = _anchored(devnet)
    # invalid period: the reveal comes in period k+2
    with pytest.raises(InvalidSettlement, match="reveal outside the period after its anchor"):
        apply(devnet, draft_block(devnet, settlement=proof.reveal, skip=1))


def test_invalid_reveal_after_settlement(devnet):
    proof = _anchored(devnet)
    settle(devnet, proof)
    # invalid: the same reveal a second time
    with pytest.raises(InvalidSettlement, match="a reveal with nothing anchored"):
        apply(devnet, draft_block(devnet, settlement=proof.reveal))


def test_settle_and_anchor_in_one_block(devnet):
    first = make_proof(devnet, error=0.3, seed=1)
    second_keys = devnet.improver_keys[1]
    second_digest = make_proof(devnet, second_keys, error=0.05, seed=2, do_register=False).digest
    first = make_proof(devnet, error=0.3, seed=1, do_register=False)  # rebuilt on the new head
    # the second improver registers its digest in the block anchoring the first PoI
    accept(devnet, next_block(devnet, anchor=first.anchor,
                              transactions=[devnet.register(second_keys, second_digest)]))
    second = make_proof(devnet, second_keys, error=0.05, seed=2, do_register=False)
    assert second.digest == second_digest
    accept(devnet, next_block(devnet, settlement=first.reveal, anchor=second.anchor))
    assert devnet.receipts[-1].settlement.outcome == "settled"
    assert devnet.receipts[-1].anchored == second.poi.hash
    assert get_meta(devnet.state).pending.anchor.poi == second.poi
    settle(devnet, second)
    assert devnet.receipts[-1].settlement.outcome == "settled"
    assert get_meta(devnet.state).provisional.digest == second_digest
    assert_supply(devnet)


# ---------------------------------------------------------------------------
# Supply accounting through a mixed history
# ---------------------------------------------------------------------------
def test_total_supply_is_conserved_through_a_mixed_history(devnet):
    d = devnet
    assert_supply(d)
    steps = []
    good = make_proof(d, error=0.3, seed=1)
    anchor(d, good)
    settle(d, good)
    steps.append("settled")
    assert_supply(d)
    void = make_proof(d, d.improver_keys[1], error=0.1, seed=2)
    anchor(d, void)
    accept(d, next_block(d, transactions=[d.tx(d.improver_keys[2], Transfer(d.improver_keys[3].address_bytes, 9),
                                              fee=4)]))
    assert d.receipts[-1].settlement.outcome == "void"
    assert_supply(d)
    bad = make_proof(d, d.improver_keys[2], error=0.1, seed=3)
    fake = resign_poi(d, bad.poi, ys=(f_int(d.del_model, d.truth),))
    reveal = resign_reveal(d, bad.reveal, poi_hash=fake.hash)
    # A quorum (3 of 4) endorses the fake; their bonds halve, so they leave the voting stake (finding 9)
    slashed = d.validator_keys[:3]
    anchor(d, dataclasses.replace(bad, poi=fake, votes=votes_for(d, fake, reveal, slashed)))
    accept(d, next_block(d, settlement=reveal))
    assert d.receipts[-1].settlement.outcome == "failed"
    assert_supply(d)
    better = make_proof(d, d.improver_keys[3], error=0.05, seed=4, validators=d.validator_keys[3:])
    anchor(d, better)
    settle(d, better)
    assert d.receipts[-1].settlement.outcome == "settled"
    meta = get_meta(d.state)
    assert meta.minted > 0 and meta.burned > 0
    assert_supply(d)


# ---------------------------------------------------------------------------
# Several test tuples: every tuple must beat its d_c; the improver gets floor(mean R_i)
# ---------------------------------------------------------------------------
def test_several_tuples_pay_the_floor_of_the_mean():
    d, truths = multi_tuple_devnet(extra=2)
    assert len(get_meta(d.state).d_c) == 3
    label_sets = [corrupt(t, e, 10, i) for i, (t, e) in enumerate(zip(truths, (0.1, 0.2, 0.3)))]
    proof = multi_tuple_proof(d, d.improver_keys[0], label_sets, "multi")
    anchor(d, proof)
    settle(d, proof)
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "settled", settlement.reason
    ys = [t.y_t for t in get_problem(d.state).tuples]
    dists = tuple(distance_ppb(f_int(d.del_model, x), y) for x, y in zip(label_sets, ys))
    rewards = [improvement_reward(x, C.PPB, d.params.reward_a, d.params.reward_scale) for x in dists]
    assert len(set(rewards)) == 3  # distinct, so the mean is not trivially one of them
    assert settlement.distances == dists
    assert settlement.improver_reward == sum(rewards) // 3
    assert get_meta(d.state).d_c == dists
    assert_supply(d)
