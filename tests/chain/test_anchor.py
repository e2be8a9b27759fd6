"""Anchoring a PoI and its votes (block k): front-running defence, vote binding, limits."""

from __future__ import annotations

import dataclasses

import pytest

from chain import constants as C
from chain.devnet import corrupt
from chain.errors import InvalidAnchor, ModelNotClaimed
from chain.state import get_bond, get_meta
from chain.payloads import RegisterValidator, Transfer, WithdrawBond
from chain.proofs import Ambiguous
from chain.types import Anchor
from del_embed.integer import distance_ppb, f_int
from factories import (
    OTHER_CHAIN,
    account,
    accept,
    apply,
    assert_supply,
    draft_block,
    flip,
    make_proof,
    multi_tuple_devnet,
    multi_tuple_proof,
    new_devnet,
    next_block,
    register,
    resign_poi,
    resign_vote,
)


def _anchor_block(d, anchor, transactions=(), settlement=None):
    return draft_block(d, anchor=anchor, transactions=transactions, settlement=settlement)


def test_valid_anchor_locks_the_improver_bond_and_pays_nothing(devnet):
    proof = make_proof(devnet)
    before = {k.public_key: account(devnet, k) for k in devnet.validator_keys + [proof.keys]}
    accept(devnet, next_block(devnet, anchor=proof.anchor))
    pending = get_meta(devnet.state).pending
    assert pending.anchor == proof.anchor
    assert pending.period == devnet.period
    assert pending.improver_bond == devnet.params.improver_bond
    assert devnet.receipts[-1].anchored == proof.poi.hash
    imp = account(devnet, proof.keys)
    assert imp.balance == before[proof.keys.public_key].balance - devnet.params.improver_bond
    assert imp.locked == before[proof.keys.public_key].locked + devnet.params.improver_bond
    for v in devnet.validator_keys:
        assert account(devnet, v) == before[v.public_key]
    assert get_meta(devnet.state).minted == 0
    assert_supply(devnet)


def test_anchor_with_a_subset_of_validators(devnet):
    # 3 of 4 equal bonds: 3/4 of the stake, above the default quorum (just over 2/3)
    proof = make_proof(devnet, validators=devnet.validator_keys[:3])
    accept(devnet, next_block(devnet, anchor=proof.anchor))
    assert len(get_meta(devnet.state).pending.anchor.votes) == 3


# ---------------------------------------------------------------------------
# Front-running defence: the digest was registered by the prover in an earlier block
# ---------------------------------------------------------------------------
def test_invalid_digest_registered_in_the_same_block(devnet):
    proof = make_proof(devnet, do_register=False)
    reg = devnet.register(proof.keys, proof.digest)
    # invalid: the registration rides in the anchoring block itself
    with pytest.raises(ModelNotClaimed) as err:
        apply(devnet, _anchor_block(devnet, proof.anchor, transactions=[reg]))
    assert err.value.registered_height == get_meta(devnet.state).height + 1


def test_invalid_digest_claimed_by_another_prover(devnet):
    thief, owner = devnet.improver_keys[0], devnet.improver_keys[1]
    proof = make_proof(devnet, thief, do_register=False)
    register(devnet, owner, proof.digest)  # invalid: the owner's claim names the owner, not the thief
    proof = make_proof(devnet, thief, do_register=False)  # rebuilt on the new head
    with pytest.raises(ModelNotClaimed) as err:
        apply(devnet, _anchor_block(devnet, proof.anchor))
    assert err.value.registered_height is None


def test_invalid_digest_unregistered(devnet):
    proof = make_proof(devnet, do_register=False)  # invalid: never registered
    with pytest.raises(ModelNotClaimed, match="model not claimed by the prover"):
        apply(devnet, _anchor_block(devnet, proof.anchor))


# ---------------------------------------------------------------------------
# The PoI's binding: chain, period, parent, signature
# ---------------------------------------------------------------------------
def test_invalid_poi_period(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, period=proof.poi.period + 1)  # invalid period
    with pytest.raises(InvalidAnchor, match="PoI for another period"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_poi_from_an_earlier_period(devnet):
    proof = make_proof(devnet)
    # invalid period: the PoI was made for this period, but the block comes a period later
    with pytest.raises(InvalidAnchor, match="PoI for another period"):
        apply(devnet, draft_block(devnet, anchor=proof.anchor, skip=1))


def test_invalid_poi_parent(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, parent=devnet.blocks[-2].hash)  # invalid parent: an older block
    with pytest.raises(InvalidAnchor, match="PoI built on another parent"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_poi_chain(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, chain_id=OTHER_CHAIN)  # invalid chain (signed for it)
    with pytest.raises(InvalidAnchor, match="PoI for another chain"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_poi_signature(devnet):
    proof = make_proof(devnet)
    poi = dataclasses.replace(proof.poi, signature=flip(proof.poi.signature))  # invalid signature
    with pytest.raises(InvalidAnchor, match="bad PoI signature"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_poi_signed_for_another_chain(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, chain_id=OTHER_CHAIN)
    poi = dataclasses.replace(poi, chain_id=devnet.chain_id)  # invalid signature: covers the other chain
    with pytest.raises(InvalidAnchor, match="bad PoI signature"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_poi_prover_swapped(devnet):
    owner = devnet.improver_keys[1]
    proof = make_proof(devnet)
    # invalid prover: names another key (whose signature it is not)
    poi = dataclasses.replace(proof.poi, prover=owner.public_key)
    with pytest.raises(InvalidAnchor, match="bad PoI signature"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


# ---------------------------------------------------------------------------
# The PoI's shape
# ---------------------------------------------------------------------------
def test_invalid_number_of_embeddings(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, ys=proof.poi.ys * 2)  # invalid: two embeddings for one tuple
    with pytest.raises(InvalidAnchor, match="wrong number of embeddings"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_embedding_length(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, ys=(proof.poi.ys[0][:-1],))  # invalid: one entry short
    with pytest.raises(InvalidAnchor, match="embedding of the wrong length"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_number_of_ambiguous_sets(devnet):
    proof = make_proof(devnet)
    poi = resign_poi(devnet, proof.poi, ambiguous=((), ()))  # invalid: no holdout, so one set
    with pytest.raises(InvalidAnchor, match="wrong number of ambiguous sets"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_invalid_too_many_ambiguous_positions(devnet):
    proof = make_proof(devnet)
    limit = devnet.params.max_ambiguous
    labels = proof.labels
    amb = tuple(Ambiguous(i, int(labels[i])) for i in range(limit + 1))  # invalid: one over the limit
    poi = resign_poi(devnet, proof.poi, ambiguous=(amb,))
    with pytest.raises(InvalidAnchor, match="too many ambiguous positions"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


def test_ambiguous_positions_at_the_limit_are_valid(devnet):
    proof = make_proof(devnet)
    labels = proof.labels
    amb = tuple(Ambiguous(i, int(labels[i])) for i in range(devnet.params.max_ambiguous))
    poi = resign_poi(devnet, proof.poi, ambiguous=(amb,))
    votes = tuple(resign_vote(devnet, v, poi_hash=poi.hash) for v in proof.votes)
    apply(devnet, next_block(devnet, anchor=Anchor(poi, votes)))


def test_invalid_ambiguous_positions_not_increasing(devnet):
    proof = make_proof(devnet)
    labels = proof.labels
    amb = (Ambiguous(1, int(labels[1])), Ambiguous(1, int(labels[1])))  # invalid: repeated position
    poi = resign_poi(devnet, proof.poi, ambiguous=(amb,))
    with pytest.raises(InvalidAnchor, match="ambiguous positions not strictly increasing"):
        apply(devnet, _anchor_block(devnet, Anchor(poi, proof.votes)))


# ---------------------------------------------------------------------------
# The PoI's claim: its embeddings must beat the d_c in force by more than delta
# ---------------------------------------------------------------------------
def _distance(d, labels):
    return distance_ppb(f_int(d.del_model, labels), d.proposal.first_tuple.y_t)


def test_invalid_poi_claim_not_beating_d_c_minus_delta():
    probe = new_devnet()
    dist = _distance(probe, corrupt(probe.truth, 0.2, 10, 1))
    # delta exactly 1 - d: d must be strictly below d_c - delta, so d == d_c - delta is refused
    d = new_devnet(delta_ppb=C.PPB - dist)
    proof = make_proof(d, error=0.2, seed=1)
    with pytest.raises(InvalidAnchor, match="PoI does not claim to beat d_c - delta") as info:
        apply(d, _anchor_block(d, proof.anchor))
    assert info.value.values["d"] == dist


def test_poi_claim_beating_d_c_minus_delta_by_one_unit_is_valid():
    probe = new_devnet()
    dist = _distance(probe, corrupt(probe.truth, 0.2, 10, 1))
    d = new_devnet(delta_ppb=C.PPB - dist - 1)
    proof = make_proof(d, error=0.2, seed=1)
    apply(d, next_block(d, anchor=proof.anchor))


def test_invalid_poi_for_the_current_best_model(devnet):
    first = make_proof(devnet, seed=1)
    accept(devnet, next_block(devnet, anchor=first.anchor))
    accept(devnet, next_block(devnet, settlement=first.reveal))
    # invalid claim: the same labels again (new owner, new digest) do not beat the new d_c
    again = make_proof(devnet, devnet.improver_keys[1], seed=1)
    with pytest.raises(InvalidAnchor, match="PoI does not claim to beat d_c - delta"):
        apply(devnet, _anchor_block(devnet, again.anchor))


def test_invalid_poi_made_stale_by_the_settlement_in_its_block(devnet):
    # two PoIs race: the second was made while the first was pending; the first settles in the
    # block that would anchor the second, whose claim no longer beats the new d_c
    first = make_proof(devnet, error=0.1, seed=2)
    second_keys = devnet.improver_keys[1]
    second_digest = make_proof(devnet, second_keys, error=0.2, seed=1, do_register=False).digest
    first = make_proof(devnet, error=0.1, seed=2, do_register=False)
    accept(devnet, next_block(devnet, anchor=first.anchor,
                              transactions=[devnet.register(second_keys, second_digest)]))
    second = make_proof(devnet, second_keys, error=0.2, seed=1, do_register=False)
    with pytest.raises(InvalidAnchor, match="PoI does not claim to beat d_c - delta"):
        apply(devnet, _anchor_block(devnet, second.anchor, settlement=first.reveal))
    # without the settlement the first is void and the second is anchored
    apply(devnet, next_block(devnet, anchor=second.anchor))


def test_invalid_poi_with_one_tuple_not_beating():
    d, truths = multi_tuple_devnet(extra=1)
    first = multi_tuple_proof(d, d.improver_keys[0], [corrupt(truths[0], 0.2, 10, 1),
                                                      corrupt(truths[1], 0.2, 10, 2)], "first")
    accept(d, next_block(d, anchor=first.anchor))
    accept(d, next_block(d, settlement=first.reveal))
    # better on tuple 0, the same on tuple 1
    second = multi_tuple_proof(d, d.improver_keys[1], [truths[0], corrupt(truths[1], 0.2, 10, 2)], "second")
    with pytest.raises(InvalidAnchor, match="PoI does not claim to beat d_c - delta") as info:
        apply(d, _anchor_block(d, second.anchor))
    assert info.value.values["tuple_index"] == 1


def test_invalid_improver_cannot_lock_its_bond(devnet):
    proof = make_proof(devnet)
    keys = proof.keys
    spend = account(devnet, keys).balance - devnet.params.improver_bond + 1
    drain = devnet.tx(keys, Transfer(devnet.improver_keys[1].address_bytes, spend))
    # invalid: earlier in the block the improver spent all but one unit short of its bond
    with pytest.raises(InvalidAnchor, match="improver cannot lock its bond"):
        apply(devnet, _anchor_block(devnet, proof.anchor, transactions=[drain]))


# ---------------------------------------------------------------------------
# Votes
# ---------------------------------------------------------------------------
def test_invalid_no_votes(devnet):
    proof = make_proof(devnet)
    with pytest.raises(InvalidAnchor, match="needs at least one vote"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, ())))  # invalid: no votes


def test_invalid_vote_from_an_unbonded_validator(devnet):
    proof = make_proof(devnet)
    outsider = devnet.improver_keys[2]
    vote = devnet.vote(outsider, proof.poi, proof.reveal)  # invalid: never bonded
    with pytest.raises(InvalidAnchor, match="not bonded in an earlier block"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, proof.votes + (vote,))))


def test_invalid_vote_from_a_validator_bonded_in_the_same_block(devnet):
    proof = make_proof(devnet)
    newcomer = devnet.improver_keys[2]
    bond = devnet.tx(newcomer, RegisterValidator())
    vote = devnet.vote(newcomer, proof.poi, proof.reveal)  # invalid: bonded in this very block
    with pytest.raises(InvalidAnchor, match="not bonded in an earlier block"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, (vote,)), transactions=[bond]))


def test_vote_from_a_validator_bonded_one_block_earlier_is_valid(devnet):
    newcomer = devnet.improver_keys[2]
    accept(devnet, next_block(devnet, transactions=[devnet.tx(newcomer, RegisterValidator())]))
    # 4 of 5 equal bonds reach the quorum; the newcomer's vote is one of them
    proof = make_proof(devnet, validators=[newcomer, *devnet.validator_keys[:3]])
    accept(devnet, next_block(devnet, anchor=proof.anchor))
    assert get_meta(devnet.state).pending.anchor.votes[0].validator == newcomer.public_key


def test_invalid_vote_from_an_unbonding_validator(devnet):
    leaver = devnet.validator_keys[0]
    accept(devnet, next_block(devnet, transactions=[devnet.tx(leaver, WithdrawBond())]))
    assert get_bond(devnet.state, leaver.public_key).unbond_period != 0
    proof = make_proof(devnet, validators=[leaver])  # invalid: its bond is unbonding
    with pytest.raises(InvalidAnchor, match="not bonded in an earlier block"):
        apply(devnet, _anchor_block(devnet, proof.anchor))


def test_invalid_duplicate_vote(devnet):
    proof = make_proof(devnet)
    votes = proof.votes + (proof.votes[0],)  # invalid: the same validator twice
    with pytest.raises(InvalidAnchor, match="duplicate vote"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, votes)))


def test_invalid_duplicate_vote_with_another_digest(devnet):
    proof = make_proof(devnet)
    other = resign_vote(devnet, proof.votes[0], labels_digest=b"\x11" * 32)
    votes = proof.votes + (other,)  # invalid: a second, different vote by the same validator
    with pytest.raises(InvalidAnchor, match="duplicate vote"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, votes)))


def _break_first_vote(d, proof, **changes):
    votes = (resign_vote(d, proof.votes[0], **changes),) + proof.votes[1:]
    return Anchor(proof.poi, votes)


def test_invalid_vote_for_another_poi(devnet):
    proof = make_proof(devnet)
    anchor = _break_first_vote(devnet, proof, poi_hash=b"\x12" * 32)  # invalid PoI hash
    with pytest.raises(InvalidAnchor, match="vote bound to another PoI or parent"):
        apply(devnet, _anchor_block(devnet, anchor))


def test_invalid_vote_for_another_parent(devnet):
    proof = make_proof(devnet)
    anchor = _break_first_vote(devnet, proof, parent=devnet.blocks[-2].hash)  # invalid parent
    with pytest.raises(InvalidAnchor, match="vote bound to another PoI or parent"):
        apply(devnet, _anchor_block(devnet, anchor))


def test_invalid_vote_for_another_period(devnet):
    proof = make_proof(devnet)
    anchor = _break_first_vote(devnet, proof, period=proof.poi.period - 1)  # invalid period
    with pytest.raises(InvalidAnchor, match="vote for another chain or period"):
        apply(devnet, _anchor_block(devnet, anchor))


def test_invalid_vote_for_another_chain(devnet):
    proof = make_proof(devnet)
    anchor = _break_first_vote(devnet, proof, chain_id=OTHER_CHAIN)  # invalid chain (signed for it)
    with pytest.raises(InvalidAnchor, match="vote for another chain or period"):
        apply(devnet, _anchor_block(devnet, anchor))


def test_invalid_vote_signature(devnet):
    proof = make_proof(devnet)
    bad = dataclasses.replace(proof.votes[1], signature=flip(proof.votes[1].signature))  # invalid signature
    votes = proof.votes[:1] + (bad,) + proof.votes[2:]
    with pytest.raises(InvalidAnchor, match="bad vote signature"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, votes)))


def test_invalid_vote_copied_to_another_validator(devnet):
    proof = make_proof(devnet, validators=devnet.validator_keys[:1])
    copier = devnet.validator_keys[1]
    # invalid: validator 1 copies validator 0's vote under its own key without re-signing
    copied = dataclasses.replace(proof.votes[0], validator=copier.public_key)
    with pytest.raises(InvalidAnchor, match="bad vote signature"):
        apply(devnet, _anchor_block(devnet, Anchor(proof.poi, proof.votes + (copied,))))


def test_invalid_too_many_votes():
    d = new_devnet(max_votes=3)
    proof = make_proof(d)
    assert len(proof.votes) == 4  # invalid: four votes, the problem allows three
    with pytest.raises(InvalidAnchor, match="too many votes"):
        apply(d, _anchor_block(d, proof.anchor))


def test_votes_at_the_limit_are_valid():
    d = new_devnet(max_votes=4)
    proof = make_proof(d)
    apply(d, next_block(d, anchor=proof.anchor))
