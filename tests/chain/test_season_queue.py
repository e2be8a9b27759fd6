"""Seasons sealed ahead (issue 16): a contributor adds seasons while the network runs, and
a problem with K sealed seasons runs all K with no hand between them.

``NewHoldout`` seals a holdout for the season after the last one sealed: at once when no
season is open, else queued. Each sealed holdout locks its own contributor bond (at least
a season's mint, ``validate_season_params``); the judge (or a missed window) of a season
opens the next queued one in the same block.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chain import constants as C
from chain.errors import (
    ContributorBondUnpaid,
    HoldoutReused,
    InvalidTransaction,
    NoOpenSeason,
    NoSeasons,
    NotContributor,
    TooManySeasonsSealed,
)
from chain.labels import array_to_labels
from chain.locks import CONTRIBUTOR_BOND, locked_parts
from chain.payloads import NewHoldout, Transfer
from chain.proofs import SealedHoldout
from chain.holdouts import MAX_SEALED_AHEAD
from chain.season import holdout_commitment
from chain.state import get_meta, get_sealed_ahead
from factories import OTHER_CHAIN, account, accept, apply, assert_supply, draft_block, make_proof, new_devnet, next_block


def season_devnet(**overrides):
    return new_devnet(holdout_m=50, **overrides)


def sealed(d, tag: str) -> NewHoldout:
    """A holdout on fresh inputs ``tag`` over the devnet's holdout labels, with a fresh salt
    (``Devnet.season_reveal`` opens it once its season comes)."""
    return d.new_holdout(tag.encode(), b"salt-" + tag.encode())


def season_end(d):
    season = get_meta(d.state).season
    return season.start_period + d.params.season_periods


def to_period(d, period):
    return period - d.period - 1


def improve(d, keys=None, *, error=0.2, seed=1, holdout_labels=None):
    proof = make_proof(d, keys, error=error, seed=seed, holdout_error=0.2, holdout_labels=holdout_labels)
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "settled", d.receipts[-1].settlement.reason
    return proof


def wrong_first(d, count):
    """The holdout labels with the first ``count`` positions wrong: a model that has the first
    ``count`` wrong gains ``b = count - count'`` and loses ``c = 0`` over one with ``count'``."""
    out = np.array(d.holdout_truth, dtype=np.int64)
    out[:count] = (out[:count] + 1) % d.cfg.num_classes
    return out


def reveal_now(d):
    """Reveal the season in the next block of its reveal window (its first period at the earliest)."""
    accept(d, next_block(d, season_reveal=d.season_reveal(), skip=max(0, to_period(d, season_end(d)))))


# ---------------------------------------------------------------------------
# Attacks: who may add a season, with what bond, and what may not be sealed twice
# ---------------------------------------------------------------------------
def test_invalid_new_holdout_by_a_stranger_while_a_season_runs():
    d = season_devnet()
    tx = d.tx(d.improver_keys[0], sealed(d, "s1"))  # invalid sender: not the contributor
    with pytest.raises(NotContributor) as err:
        apply(d, draft_block(d, transactions=[tx]))
    assert err.value.contributor == d.creator.address_bytes


def test_invalid_new_holdout_without_the_bond():
    d = season_devnet()
    balance = account(d, d.creator).balance
    keep = d.params.contributor_bond - 1 + d.params.min_fee  # after the sealing tx's fee: one unit short of a bond
    accept(d, next_block(d, transactions=[d.tx(d.creator, Transfer(d.improver_keys[0].address_bytes,
                                                                    balance - keep - d.params.min_fee))]))
    tx = d.tx(d.creator, sealed(d, "s1"))  # invalid: the creator cannot lock another bond
    with pytest.raises(ContributorBondUnpaid) as err:
        apply(d, draft_block(d, transactions=[tx]))
    assert err.value.bond == d.params.contributor_bond


def test_invalid_new_holdout_replaying_the_sealed_inputs():
    d = season_devnet()
    genesis = d.proposal.holdout
    labels = array_to_labels(d.holdout_truth)
    again = NewHoldout(SealedHoldout(genesis.z_h_id, genesis.m_h, holdout_commitment(b"other salt", labels)))
    with pytest.raises(HoldoutReused) as err:  # invalid: season 0's inputs, whose labels its reveal publishes
        apply(d, draft_block(d, transactions=[d.tx(d.creator, again)]))
    assert err.value.what == "inputs" and err.value.season == 0


def test_invalid_new_holdout_replaying_a_commitment():
    d = season_devnet()
    genesis = d.proposal.holdout
    again = NewHoldout(SealedHoldout(b"\x42" * 32, genesis.m_h, genesis.commitment))
    with pytest.raises(HoldoutReused) as err:  # invalid: season 0's salt and labels on other inputs
        apply(d, draft_block(d, transactions=[d.tx(d.creator, again)]))
    assert err.value.what == "commitment"


def test_invalid_new_holdout_replayed_after_it_was_sealed():
    d = season_devnet()
    holdout = sealed(d, "s1")
    accept(d, next_block(d, transactions=[d.tx(d.creator, holdout)]))
    with pytest.raises(HoldoutReused) as err:  # invalid: the same holdout again, in a new tx
        apply(d, draft_block(d, transactions=[d.tx(d.creator, holdout)]))
    assert err.value.season == 1


def test_invalid_replay_of_the_sealing_transaction():
    d = season_devnet()
    tx = d.tx(d.creator, sealed(d, "s1"))
    accept(d, next_block(d, transactions=[tx]))
    with pytest.raises(InvalidTransaction, match="nonce"):  # invalid: the very same signed tx again
        apply(d, draft_block(d, transactions=[tx]))


def test_invalid_new_holdout_signed_for_another_chain():
    d = season_devnet()
    tx = d.tx(d.creator, sealed(d, "s1"))
    forged = dataclasses.replace(tx, chain_id=OTHER_CHAIN)
    with pytest.raises(InvalidTransaction, match="another chain"):
        apply(d, draft_block(d, transactions=[forged]))


def test_invalid_new_holdout_without_seasons(devnet):
    d = season_devnet()
    with pytest.raises(NoSeasons):
        apply(devnet, draft_block(devnet, transactions=[devnet.tx(devnet.creator, sealed(d, "s1"))]))


def test_invalid_new_holdout_beyond_the_seasons_kept_ahead():
    d = season_devnet()  # the genesis allocation (100 tokens) covers MAX_SEALED_AHEAD + 1 bonds of 2 tokens
    d.commit(transactions=[d.tx(d.creator, sealed(d, f"s{k + 1}")) for k in range(MAX_SEALED_AHEAD)])
    with pytest.raises(TooManySeasonsSealed):
        apply(d, draft_block(d, transactions=[d.tx(d.creator, sealed(d, "one too many"))]))


# ---------------------------------------------------------------------------
# What sealing ahead does
# ---------------------------------------------------------------------------
def test_a_season_sealed_ahead_locks_its_bond_and_waits():
    d = season_devnet()
    before = account(d, d.creator)
    accept(d, next_block(d, transactions=[d.tx(d.creator, sealed(d, "s1"))]))
    season = get_meta(d.state).season
    assert season.index == 0 and season.holdout == d.proposal.holdout  # the running season is untouched
    assert get_sealed_ahead(d.state, 1) == sealed(d, "s1").holdout
    assert account(d, d.creator).locked == before.locked + d.params.contributor_bond
    bonds = [p for p in locked_parts(d.state, d.creator.address_bytes).parts if p.kind == CONTRIBUTOR_BOND]
    assert [b.season for b in bonds] == [0, 1]
    assert sum(b.amount for b in bonds) == account(d, d.creator).locked


def test_the_judge_opens_the_next_sealed_season_in_the_same_block():
    d = season_devnet()
    accept(d, next_block(d, transactions=[d.tx(d.creator, sealed(d, "s1"))]))
    improve(d)
    reveal_now(d)
    season = get_meta(d.state).season
    assert season.index == 1 and season.holdout == sealed(d, "s1").holdout
    assert season.start_period == d.period + 1
    assert get_sealed_ahead(d.state, 1) is None
    proof = make_proof(d, d.improver_keys[1], error=0.05, seed=3, holdout_error=0.1)
    accept(d, next_block(d, anchor=proof.anchor))  # anchored in the very next period: no gap
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "settled"
    assert_supply(d)


def test_a_missed_window_also_opens_the_next_sealed_season():
    d = season_devnet()
    accept(d, next_block(d, transactions=[d.tx(d.creator, sealed(d, "s1"))]))
    improve(d)
    end = season_end(d)
    accept(d, next_block(d, skip=to_period(d, end + d.params.reveal_window)))
    assert "missed" in d.receipts[-1].season
    season = get_meta(d.state).season
    assert season.index == 1 and season.holdout == sealed(d, "s1").holdout
    # the missed season's bond was slashed; the queued season's bond stays locked behind it
    assert account(d, d.creator).locked == d.params.contributor_bond
    assert_supply(d)


@pytest.mark.parametrize("seasons", [2, 3])
def test_a_problem_with_k_sealed_seasons_runs_them_all(seasons):
    """K seasons, all sealed up front: only improvements and each season's reveal follow,
    and every season opens by itself when the previous one is judged."""
    d = season_devnet(consistency_ppb=C.PPB)  # the paired test alone decides (consistency tested apart)
    d.commit(transactions=[d.tx(d.creator, sealed(d, f"s{k}")) for k in range(1, seasons)])
    confirmed = []
    for k in range(seasons):
        assert get_meta(d.state).season.index == k
        # 12 more positions right than the confirmed model (30, 18, 6 wrong of 50), none worse:
        # 100 * 12 >= isqrt(258^2 * 12) = 893, so each beats the last; season 0 has no reference
        holdout = wrong_first(d, 30 - 12 * k)
        proof = improve(d, d.improver_keys[k % 4], error=0.3 - 0.1 * k, seed=10 + k, holdout_labels=holdout)
        reveal_now(d)
        assert f"season {k} revealed: 1/1" in d.receipts[-1].season
        confirmed.append(get_meta(d.state).confirmed.digest)
        assert confirmed[-1] == proof.digest
    meta = get_meta(d.state)
    assert meta.season.index == seasons and meta.season.holdout is None  # the last season is over
    assert account(d, d.creator).locked == 0  # every bond came back with its season's reveal
    assert_supply(d)


# ---------------------------------------------------------------------------
# After the last season: the competition stops paying until a season is added
# ---------------------------------------------------------------------------
def test_invalid_anchor_after_the_last_season():
    d = season_devnet()
    improve(d)
    reveal_now(d)
    later = make_proof(d, d.improver_keys[1], error=0.05, seed=3)
    with pytest.raises(NoOpenSeason) as err:
        apply(d, draft_block(d, anchor=later.anchor))
    assert err.value.season == 1


def test_after_the_last_season_the_chain_runs_and_a_new_season_resumes_paying():
    d = season_devnet()
    improve(d)
    reveal_now(d)
    accept(d, next_block(d, transactions=[d.tx(d.improver_keys[0], Transfer(d.improver_keys[1].address_bytes, 5))]))
    block = accept(d, next_block(d, transactions=[d.tx(d.creator, sealed(d, "s1"))]))
    season = get_meta(d.state).season
    assert season.index == 1 and season.start_period == block.header.period + 1
    proof = make_proof(d, d.improver_keys[1], error=0.05, seed=3, holdout_error=0.1)
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    assert d.receipts[-1].settlement.outcome == "settled"
    assert d.receipts[-1].settlement.improver_reward > 0
