"""Seasons and the sealed holdout: locked rewards vest, burn, or are covered by the contributor's bond."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chain import constants as C
from chain.errors import ContributorBondTooSmall, InvalidAnchor, InvalidSeason, InvalidTransaction, NoOpenSeason, NoSeasons, NotContributor
from chain.labels import array_to_labels
from chain.season import holdout_commitment, season_mint_bound
from chain.signing import sign
from chain.state import get_meta, get_season_improvement
from chain.payloads import NewHoldout, Transfer
from chain.proofs import SealedHoldout
from del_embed.integer import distance_ppb, error_ppb, f_int
from factories import (
    OTHER_CHAIN,
    account,
    accept,
    apply,
    assert_supply,
    draft_block,
    flip,
    make_proof,
    new_devnet,
    next_block,
    resign_poi,
)


def season_devnet(**overrides):
    return new_devnet(holdout_m=50, **overrides)


def improve(d, keys=None, *, error=0.2, seed=1, holdout_error=0.2, holdout_labels=None):
    """Register, anchor and settle one improvement; return its proof."""
    proof = make_proof(d, keys, error=error, seed=seed, holdout_error=holdout_error, holdout_labels=holdout_labels)
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "settled", d.receipts[-1].settlement.reason
    return proof


def season_end(d):
    season = get_meta(d.state).season
    return season.start_period + d.params.season_periods


def to_period(d, period):
    """Skip ahead so that the next block is in ``period``."""
    return period - d.period - 1


def locked_rewards(d):
    return {e.address: e.amount for e in get_meta(d.state).season.locked}


def reveal_block(d, season_reveal=None, **kw):
    return next_block(d, season_reveal=season_reveal or d.season_reveal(), **kw)


def edit_holdout(d, labels, *, fix=0, spoil=0, seed=0):
    """``labels`` with ``fix`` wrong positions made right and ``spoil`` right ones made wrong."""
    rng = np.random.default_rng(seed)
    out = np.array(labels, dtype=np.int64)
    wrong = np.flatnonzero(out != d.holdout_truth)
    right = np.flatnonzero(out == d.holdout_truth)
    fixed = rng.choice(wrong, size=fix, replace=False)
    spoiled = rng.choice(right, size=spoil, replace=False)
    out[fixed] = d.holdout_truth[fixed]
    out[spoiled] = (d.holdout_truth[spoiled] + 1) % d.cfg.num_classes
    return out


def holdout_error_of(d, proof):
    pred = np.frombuffer(proof.reveal.labels[-1], dtype=np.uint8)
    return error_ppb(pred, d.holdout_truth)


def distance_of(d, labels):
    return distance_ppb(f_int(d.del_model, labels), d.proposal.first_tuple.y_t)


# ---------------------------------------------------------------------------
# Locked rewards
# ---------------------------------------------------------------------------
def test_rewards_are_minted_locked():
    d = season_devnet()
    people = [d.improver_keys[0], *d.validator_keys]
    before = {k.public_key: account(d, k) for k in people}
    proof = improve(d)
    settlement = d.receipts[-1].settlement
    imp, old = account(d, proof.keys), before[proof.keys.public_key]
    # in a season the improver bond stays locked until the judge, the reward is minted locked,
    # and the registration paid the minimum fee
    assert imp.balance == old.balance - d.params.improver_bond - d.params.min_fee
    assert imp.locked == old.locked + d.params.improver_bond + settlement.improver_reward
    for address, amount in settlement.validator_rewards:
        v = next(k for k in d.validator_keys if k.address_bytes == address)
        assert account(d, v).balance == before[v.public_key].balance
        assert account(d, v).locked == before[v.public_key].locked + amount
    season = get_meta(d.state).season
    assert season.improvement_count == 1
    assert get_season_improvement(d.state, 0, 0).digest == proof.digest
    assert locked_rewards(d)[proof.keys.address_bytes] == settlement.improver_reward
    meta = get_meta(d.state)
    assert meta.confirmed is None and meta.provisional.digest == proof.digest
    assert meta.confirmed_d_c == (C.PPB,)
    assert_supply(d)


def test_invalid_transfer_of_locked_rewards():
    d = season_devnet()
    proof = improve(d)
    acct = account(d, proof.keys)
    assert acct.locked > 0
    # invalid amount: one unit more than spendable, which only the locked reward could cover
    tx = d.tx(proof.keys, Transfer(d.improver_keys[1].address_bytes, acct.balance + 1))
    with pytest.raises(InvalidTransaction, match="balance below amount"):
        apply(d, draft_block(d, transactions=[tx]))


# ---------------------------------------------------------------------------
# The contributor opens the holdout
# ---------------------------------------------------------------------------
def test_correct_reveal_vests_an_honest_improvement():
    d = season_devnet()
    proof = improve(d)
    locked = locked_rewards(d)
    before = {k.address_bytes: account(d, k) for k in [proof.keys, *d.validator_keys]}
    creator_before = account(d, d.creator)
    dist = distance_of(d, proof.labels)
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert "1/1 improvements vested" in d.receipts[-1].season
    for address, amount in locked.items():
        held = d.params.improver_bond if address == proof.keys.address_bytes else 0  # its bond comes back too
        assert account(d, _keys(d, address)).balance == before[address].balance + amount + held
        assert account(d, _keys(d, address)).locked == before[address].locked - amount - held
    # the contributor's bond comes back
    assert account(d, d.creator).balance == creator_before.balance + d.params.contributor_bond
    meta = get_meta(d.state)
    assert meta.confirmed.digest == proof.digest
    assert meta.provisional == meta.confirmed
    assert meta.d_c == meta.confirmed_d_c == (dist,)
    assert meta.season.index == 1 and meta.season.holdout is None
    assert meta.season.confirmed_error_ppb == holdout_error_of(d, proof)
    assert_supply(d)
    # vested rewards are spendable
    amount = account(d, proof.keys).balance - d.params.min_fee
    accept(d, next_block(d, transactions=[d.tx(proof.keys, Transfer(d.improver_keys[1].address_bytes, amount))]))


def test_reveal_on_the_last_period_of_the_window():
    d = season_devnet()
    improve(d)
    last = season_end(d) + d.params.reveal_window - 1
    accept(d, reveal_block(d, skip=to_period(d, last)))
    assert "1/1 improvements vested" in d.receipts[-1].season


def _keys(d, address):
    return next(k for k in [d.creator, *d.validator_keys, *d.improver_keys] if k.address_bytes == address)


def _reveal(d, **changes):
    sr = dataclasses.replace(d.season_reveal(), **changes)
    return sign(sr, d.creator, sr.chain_id)


def _revealing(d):
    improve(d)
    return to_period(d, season_end(d))


def test_invalid_season_reveal_wrong_salt():
    d = season_devnet()
    skip = _revealing(d)
    sr = _reveal(d, salt=b"other-salt")  # invalid salt
    with pytest.raises(InvalidSeason, match="salt and labels do not open the commitment"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_wrong_labels():
    d = season_devnet()
    skip = _revealing(d)
    labels = bytearray(array_to_labels(d.holdout_truth))
    labels[0] = (labels[0] + 1) % d.cfg.num_classes
    sr = _reveal(d, labels=bytes(labels))  # invalid labels: one position changed
    with pytest.raises(InvalidSeason, match="salt and labels do not open the commitment"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_labels_of_the_wrong_size():
    d = season_devnet()
    skip = _revealing(d)
    sr = _reveal(d, labels=array_to_labels(d.holdout_truth)[:-1])  # invalid: one label short
    with pytest.raises(InvalidSeason, match="holdout labels of the wrong size or range"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_label_out_of_range():
    d = season_devnet()
    skip = _revealing(d)
    labels = bytes([d.cfg.num_classes]) + array_to_labels(d.holdout_truth)[1:]  # invalid class
    with pytest.raises(InvalidSeason, match="holdout labels of the wrong size or range"):
        apply(d, draft_block(d, season_reveal=_reveal(d, labels=labels), skip=skip))


def test_invalid_season_reveal_not_by_the_contributor():
    d = season_devnet()
    skip = _revealing(d)
    other = d.improver_keys[1]
    sr = dataclasses.replace(d.season_reveal(), contributor=other.public_key)
    sr = sign(sr, other, d.chain_id)  # invalid: signed by someone else
    with pytest.raises(InvalidSeason, match="reveal not by the contributor"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_signature():
    d = season_devnet()
    skip = _revealing(d)
    sr = d.season_reveal()
    sr = dataclasses.replace(sr, signature=flip(sr.signature))  # invalid signature
    with pytest.raises(InvalidSeason, match="bad holdout reveal signature"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_for_another_season():
    d = season_devnet()
    skip = _revealing(d)
    sr = _reveal(d, season=1)  # invalid season index
    with pytest.raises(InvalidSeason, match="reveal for another chain or season"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_for_another_chain():
    d = season_devnet()
    skip = _revealing(d)
    sr = _reveal(d, chain_id=OTHER_CHAIN)  # invalid chain (signed for it)
    with pytest.raises(InvalidSeason, match="reveal for another chain or season"):
        apply(d, draft_block(d, season_reveal=sr, skip=skip))


def test_invalid_season_reveal_before_the_window():
    d = season_devnet(season_periods=8)
    improve(d)
    last = season_end(d) - 1
    # invalid period: the last competition period of the season
    with pytest.raises(InvalidSeason, match="holdout reveal outside its window"):
        apply(d, draft_block(d, season_reveal=d.season_reveal(), skip=to_period(d, last)))


def test_invalid_season_reveal_after_the_window():
    d = season_devnet()
    improve(d)
    late = season_end(d) + d.params.reveal_window
    # invalid period: the first period after the window
    with pytest.raises(InvalidSeason, match="holdout reveal outside its window"):
        apply(d, draft_block(d, season_reveal=d.season_reveal(), skip=to_period(d, late)))


def test_invalid_season_reveal_without_seasons(devnet):
    d = season_devnet()
    sr = dataclasses.replace(d.season_reveal(), chain_id=devnet.chain_id)
    sr = sign(sr, devnet.creator, devnet.chain_id)  # invalid: this problem has no sealed holdout
    with pytest.raises(InvalidSeason, match="no sealed holdout to reveal"):
        apply(devnet, draft_block(devnet, season_reveal=sr))


def test_invalid_season_reveal_twice():
    d = season_devnet()
    improve(d)
    sr = d.season_reveal()
    accept(d, reveal_block(d, sr, skip=to_period(d, season_end(d))))
    # invalid: the holdout is already open
    with pytest.raises(InvalidSeason, match="no sealed holdout to reveal"):
        apply(d, draft_block(d, season_reveal=sr))


# ---------------------------------------------------------------------------
# Judging: not better, or inconsistent with the claimed distance -> burn and roll back
# ---------------------------------------------------------------------------
def test_consistent_but_not_better_burns_and_rolls_back():
    # every model is consistent; the second is worse than the first on the same holdout positions
    d = season_devnet(season_periods=8, holdout_margin_ppb=50_000_000, consistency_ppb=C.PPB)
    first = improve(d, d.improver_keys[0], error=0.2, seed=1, holdout_error=0.3)
    first_d = get_meta(d.state).d_c
    first_best = get_meta(d.state).provisional
    h_first = np.frombuffer(first.reveal.labels[-1], dtype=np.uint8)
    second = improve(d, d.improver_keys[1], error=0.1, seed=2,
                     holdout_labels=edit_holdout(d, h_first, fix=1, spoil=2))  # b = 1, c = 2
    assert get_meta(d.state).d_c < first_d  # provisionally better on the DEL
    settlements = [r.settlement for r in d.receipts if r.settlement is not None]
    second_paid = [(second.keys.address_bytes, settlements[-1].improver_reward),
                   *settlements[-1].validator_rewards]
    before = {k.address_bytes: account(d, k) for k in [*d.improver_keys, *d.validator_keys]}
    burned = get_meta(d.state).burned
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert "1/2 improvements vested" in d.receipts[-1].season
    meta = get_meta(d.state)
    assert meta.confirmed == first_best
    assert meta.provisional == first_best
    assert meta.d_c == meta.confirmed_d_c == first_d
    assert meta.season.confirmed_error_ppb == holdout_error_of(d, first)
    bond = d.params.improver_bond
    assert meta.burned == burned + sum(a for _, a in second_paid) + bond
    # the second improver's locked reward and held bond burned; the first's vested, its bond came back
    imp2 = account(d, second.keys)
    assert imp2.locked == before[second.keys.address_bytes].locked - settlements[-1].improver_reward - bond
    assert imp2.balance == before[second.keys.address_bytes].balance
    imp1 = account(d, first.keys)
    assert imp1.balance == before[first.keys.address_bytes].balance + settlements[-2].improver_reward + bond
    assert_supply(d)


def test_same_holdout_answers_never_vest():
    # a model that answers the holdout exactly as its reference (b = c = 0) burns at any margin
    d = season_devnet(season_periods=8, holdout_margin_ppb=0, consistency_ppb=C.PPB)
    first = improve(d, d.improver_keys[0], error=0.2, seed=1, holdout_error=0.3)
    copy = np.frombuffer(first.reveal.labels[-1], dtype=np.uint8)
    improve(d, d.improver_keys[1], error=0.1, seed=2, holdout_labels=copy)
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert "1/2 improvements vested" in d.receipts[-1].season
    assert get_meta(d.state).confirmed.digest == first.digest


def test_better_by_the_margin_vests_both():
    d = season_devnet(season_periods=8, holdout_margin_ppb=10_000_000, consistency_ppb=C.PPB)
    first = improve(d, d.improver_keys[0], error=0.2, seed=1, holdout_error=0.3)
    h_first = np.frombuffer(first.reveal.labels[-1], dtype=np.uint8)
    second = improve(d, d.improver_keys[1], error=0.1, seed=2, holdout_labels=edit_holdout(d, h_first, fix=8))
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert "2/2 improvements vested" in d.receipts[-1].season
    assert get_meta(d.state).confirmed.digest == second.digest
    assert get_meta(d.state).season.locked == ()
    assert_supply(d)


def test_inconsistent_claim_burns_and_rolls_back():
    # |mean d - e_h| must stay within 5% of the larger plus the sampling spread: d is about 22%, e_h 80%
    d = season_devnet(consistency_ppb=50_000_000)
    proof = improve(d, error=0.2, seed=1, holdout_error=0.8)
    m_h = len(d.holdout_truth)
    e = holdout_error_of(d, proof) / C.PPB
    spread = 2.33 * (e * (1 - e) * (1 / m_h + 1 / d.cfg.m)) ** 0.5
    assert abs(distance_of(d, proof.labels) - holdout_error_of(d, proof)) / C.PPB > 0.05 * e + spread
    locked = locked_rewards(d)
    before = {address: account(d, _keys(d, address)) for address in locked}
    burned = get_meta(d.state).burned
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert "0/1 improvements vested" in d.receipts[-1].season
    bond = d.params.improver_bond
    for address, amount in locked.items():
        held = bond if address == proof.keys.address_bytes else 0  # the held improver bond burns too
        after = account(d, _keys(d, address))
        assert after.balance == before[address].balance
        assert after.locked == before[address].locked - amount - held
    meta = get_meta(d.state)
    assert meta.burned == burned + sum(locked.values()) + bond
    assert meta.confirmed is None and meta.provisional is None
    assert meta.d_c == meta.confirmed_d_c == (C.PPB,)
    assert meta.season.confirmed_error_ppb == C.PPB
    assert_supply(d)


# ---------------------------------------------------------------------------
# A missed window: the contributor's bond pays the locked holders, the locked rewards burn
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("times", [1, 3])
def test_missed_window_slashes_the_contributor_pro_rata(times):
    # the bond is at least what a season can mint, so it covers every locked holder in full
    bond = times * season_mint_bound(3, 10**18)
    d = season_devnet(contributor_bond=bond)
    proof = improve(d)
    locked = locked_rewards(d)
    total = sum(locked.values())
    people = {address: account(d, _keys(d, address)) for address in locked}
    creator_before = account(d, d.creator)
    burned = get_meta(d.state).burned
    assert creator_before.locked == bond
    late = season_end(d) + d.params.reveal_window
    accept(d, next_block(d, skip=to_period(d, late)))  # the first block past the window, no reveal
    assert "reveal missed" in d.receipts[-1].season
    paid = 0
    for address, amount in locked.items():
        share = min(amount, bond * amount // total)
        held = d.params.improver_bond if address == proof.keys.address_bytes else 0  # not its fault: back
        after = account(d, _keys(d, address))
        assert after.balance == people[address].balance + share + held
        assert after.locked == people[address].locked - amount - held
        paid += share
    assert paid == total  # capped at what each had locked
    assert account(d, d.creator).locked == creator_before.locked - bond
    assert account(d, d.creator).balance == creator_before.balance
    meta = get_meta(d.state)
    assert meta.burned == burned + total + bond - paid
    assert meta.provisional is None and meta.d_c == (C.PPB,)
    assert meta.season.index == 1 and meta.season.holdout is None
    assert proof.keys.address_bytes in locked
    assert_supply(d)


def test_invalid_contributor_bond_below_what_a_season_can_mint():
    # R(0, 1) = 1 for any a, so a season mints at most 2 * reward_scale (improvers, then their voters)
    assert season_mint_bound(3, 10**18) == 2 * 10**18
    with pytest.raises(ContributorBondTooSmall) as refused:
        season_devnet(contributor_bond=2 * 10**18 - 1)
    assert (refused.value.bond, refused.value.season_mint) == (2 * 10**18 - 1, 2 * 10**18)


def test_no_miss_on_the_last_period_of_the_window():
    d = season_devnet()
    improve(d)
    last = season_end(d) + d.params.reveal_window - 1
    accept(d, next_block(d, skip=to_period(d, last)))
    assert d.receipts[-1].season == ""
    assert get_meta(d.state).season.holdout is not None


# ---------------------------------------------------------------------------
# Anchoring needs an open season; a new season needs a new sealed holdout
# ---------------------------------------------------------------------------
def test_invalid_anchor_in_the_reveal_window():
    d = season_devnet()
    make_proof(d)  # registers the digest
    accept(d, next_block(d, skip=to_period(d, season_end(d) - 1)))
    proof = make_proof(d, do_register=False)  # invalid period: the first one after the competition
    assert proof.poi.period == season_end(d)
    with pytest.raises(NoOpenSeason):
        apply(d, draft_block(d, anchor=proof.anchor))


def _new_holdout(d, salt=b"season-1"):
    labels = array_to_labels(d.holdout_truth)
    return NewHoldout(SealedHoldout(b"\x21" * 32, len(labels), holdout_commitment(salt, labels)))


def test_invalid_anchor_after_the_season_without_a_new_holdout():
    d = season_devnet()
    proof = improve(d)
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    assert proof.digest == get_meta(d.state).confirmed.digest
    later = make_proof(d, d.improver_keys[1], error=0.05, seed=3)
    with pytest.raises(NoOpenSeason):
        apply(d, draft_block(d, anchor=later.anchor))  # invalid: the season is closed


def test_new_holdout_opens_the_next_season():
    d = season_devnet()
    improve(d)
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    creator_before = account(d, d.creator)
    block = accept(d, next_block(d, transactions=[d.tx(d.creator, _new_holdout(d))]))
    season = get_meta(d.state).season
    assert season.index == 1 and season.start_period == block.header.period + 1
    assert account(d, d.creator).locked == creator_before.locked + d.params.contributor_bond
    proof = make_proof(d, d.improver_keys[1], error=0.05, seed=3)
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "settled"
    assert_supply(d)


def test_invalid_new_holdout_by_another_sender():
    d = season_devnet()
    improve(d)
    accept(d, reveal_block(d, skip=to_period(d, season_end(d))))
    tx = d.tx(d.improver_keys[0], _new_holdout(d))  # invalid sender: not the contributor
    with pytest.raises(NotContributor):
        apply(d, draft_block(d, transactions=[tx]))


def test_invalid_new_holdout_without_seasons(devnet):
    d = season_devnet()
    tx = devnet.tx(devnet.creator, _new_holdout(d))  # invalid: the problem has no seasons
    with pytest.raises(NoSeasons):
        apply(devnet, draft_block(devnet, transactions=[tx]))


def test_invalid_season_poi_without_holdout_predictions():
    d = season_devnet()
    proof = make_proof(d)
    poi = resign_poi(d, proof.poi, ambiguous=((),))  # invalid: one set, the holdout's is missing
    with pytest.raises(InvalidAnchor, match="wrong number of ambiguous sets"):
        apply(d, draft_block(d, anchor=dataclasses.replace(proof.anchor, poi=poi)))


def test_holdout_error_ignores_ambiguous_positions():
    truth = np.array([0, 1, 2, 3], dtype=np.int64)
    pred = np.array([0, 1, 9, 9], dtype=np.int64)
    mask = np.array([False, False, True, False])
    assert error_ppb(pred, truth) == C.PPB // 2
    assert error_ppb(pred, truth, mask) == C.PPB // 3
