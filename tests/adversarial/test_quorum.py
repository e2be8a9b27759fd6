"""Finding 1 of issue 14: one colluding validator must not vest a non-improvement.

From the second season on, a PoI carries the confirmed model's labels on ``Z_h``
(its *baseline*), which the chain cannot recompute. The attack: a lookup table
that repeats the confirmed model's holdout answers, with a baseline fabricated as
"the confirmed labels + 1", endorsed by one bonded validator. Against the fake
baseline the copy "gains" on every position the confirmed model gets right.

The defence: an anchor needs votes from a quorum of the bonded stake and a
settlement a quorum of *matching* votes (``quorum_ppb``, default just over 2/3),
and the season's baseline is fixed by the first PoI that settles in the season.
"""

from __future__ import annotations

import numpy as np
import pytest

from chain import constants as C
from chain.devnet import Devnet, corrupt
from chain.errors import QuorumNotReached
from chain.state import get_meta
from chain.payloads import RegisterDigest
from chain.proofs import model_claim
from chain.types import Anchor
from factories import digest_for
from helpers import open_next_season, reveal_at_window, season_devnet, try_commit, worth


def confirmed_season(d: Devnet) -> tuple[np.ndarray, np.ndarray]:
    """Season 0 confirms an honest model (20% error); season 1 is sealed. Returns the
    honest model's labels on Z and its answers on season 1's Z_h (the true baseline)."""
    z_honest = corrupt(d.truth, 0.2, 10, 1)
    d.improve(d.improver_keys[0], z_honest, corrupt(d.holdout_truth, 0.2, 10, 2))
    reveal_at_window(d)
    assert get_meta(d.state).confirmed.owner == d.improver_keys[0].address_bytes
    truth1 = open_next_season(d, seed=7)
    return z_honest, corrupt(truth1, 0.2, 10, 3)


def copy_on_z(d: Devnet, z_honest: np.ndarray) -> np.ndarray:
    """The attacker's labels on Z: the confirmed model's, with a few more right (a DEL attack
    would do as well) — just enough to beat d_c - delta and stay consistent with e_h."""
    z = z_honest.copy()
    wrong = np.flatnonzero(z != d.truth)
    z[wrong[:12]] = d.truth[wrong[:12]]  # 12 of 400 = 3 points of claimed gain
    return z


def test_one_colluding_validator_cannot_vest_a_copy_with_a_fabricated_baseline():
    d = season_devnet()
    z_honest, baseline = confirmed_season(d)
    honest, attacker, colluder = d.improver_keys[0], d.improver_keys[1], d.validator_keys[0]
    before = {k.public_key: worth(d, k) for k in (honest, attacker, *d.validator_keys)}
    confirmed, d_c, minted = get_meta(d.state).confirmed, get_meta(d.state).d_c, get_meta(d.state).minted
    # The attack: copy the confirmed model's answers on Z_h, claim a baseline that is wrong everywhere.
    fabricated = (baseline + 1) % d.cfg.num_classes
    digest = digest_for("lookup")
    d.commit(transactions=[d.tx(attacker, RegisterDigest(model_claim(attacker.public_key, digest)))])
    poi, reveal = d.prove(attacker, digest, copy_on_z(d, z_honest), baseline, baseline_labels=fabricated)
    # Honest validators rebuild the true baseline, so the labels hash differs: only the colluder votes.
    if try_commit(d, anchor=Anchor(poi, (d.vote(colluder, poi, reveal),))) is not None:
        d.commit(settlement=reveal)
    reveal_at_window(d)
    meta = get_meta(d.state)
    assert worth(d, attacker) <= before[attacker.public_key]  # the attacker gains nothing
    assert worth(d, colluder) <= before[colluder.public_key]
    assert worth(d, honest) == before[honest.public_key]  # the honest party loses nothing
    for v in d.validator_keys[1:]:
        assert worth(d, v) == before[v.public_key]
    assert meta.confirmed == confirmed and meta.d_c == d_c and meta.minted == minted


def test_an_anchor_below_the_quorum_is_refused_with_its_stake():
    d = season_devnet()
    z_honest, baseline = confirmed_season(d)
    keys = d.improver_keys[2]
    digest = digest_for("honest-two-votes")
    d.commit(transactions=[d.tx(keys, RegisterDigest(model_claim(keys.public_key, digest)))])
    poi, reveal = d.prove(keys, digest, copy_on_z(d, z_honest), baseline, baseline_labels=baseline)
    two = tuple(d.vote(v, poi, reveal) for v in d.validator_keys[:2])
    with pytest.raises(QuorumNotReached) as refused:
        d.commit(anchor=Anchor(poi, two))
    # 2 of 4 equal bonds: half the stake, below the 2/3 quorum
    assert refused.value.stake * 2 == refused.value.total == 4 * d.params.validator_bond


def test_honest_flow_settles_and_vests_with_one_validator_offline():
    """4 equal validators, one offline: 3/4 of the stake >= the default quorum (just over 2/3)."""
    d = season_devnet()
    z_honest, baseline = confirmed_season(d)
    truth1 = d.holdout_truth
    keys, online = d.improver_keys[2], d.validator_keys[:3]
    before = {k.public_key: worth(d, k) for k in (keys, *online)}
    better = baseline.copy()
    wrong = np.flatnonzero(better != truth1)
    better[wrong[: len(wrong) // 2]] = truth1[wrong[: len(wrong) // 2]]  # half of the confirmed model's errors fixed
    d.improve(keys, copy_on_z(d, z_honest), better, validators=online, baseline_labels=baseline)
    settled = d.receipts[-1].settlement
    assert settled.outcome == "settled" and len(settled.validator_rewards) == 3
    reveal_at_window(d)
    assert "1/1 improvements vested" in d.receipts[-1].season
    assert get_meta(d.state).confirmed.owner == keys.address_bytes
    assert worth(d, keys) == before[keys.public_key] + settled.improver_reward - d.params.min_fee  # registration fee
    for addr, amount in settled.validator_rewards:
        v = next(k for k in online if k.address_bytes == addr)
        assert worth(d, v) == before[v.public_key] + amount


def test_a_later_baseline_that_differs_from_the_seasons_fails_settlement():
    """The first PoI that settles in a season fixes the baseline; a later one must carry the same."""
    d = season_devnet()
    z_honest, baseline = confirmed_season(d)
    first, second = d.improver_keys[2], d.improver_keys[3]
    d.improve(first, copy_on_z(d, z_honest), baseline, baseline_labels=baseline)
    assert d.receipts[-1].settlement.outcome == "settled"
    z_first = copy_on_z(d, z_honest)
    z_second = z_first.copy()
    wrong = np.flatnonzero(z_second != d.truth)
    z_second[wrong[:12]] = d.truth[wrong[:12]]
    before = worth(d, second)
    fabricated = (baseline + 1) % d.cfg.num_classes
    d.improve(second, z_second, baseline, baseline_labels=fabricated)  # a full quorum endorses it
    assert d.receipts[-1].settlement.outcome == "failed"
    assert worth(d, second) == before - d.params.improver_bond - d.params.min_fee


def test_false_votes_that_fill_the_quorum_are_slashed_and_the_improver_keeps_its_bond():
    """A committer that pads an honest PoI's anchor with its own false votes cannot burn the
    improver's bond: the matching votes (2 of 4) miss the quorum, nothing is paid or moved,
    the improver's bond comes back and each false vote loses half its bond."""
    from factories import bond_amount, make_proof, wrong_vote
    from chain.labels import array_to_labels

    d = Devnet()
    d.start()
    d.bond_validators()
    honest_voters, liars = d.validator_keys[:2], d.validator_keys[2:]
    proof = make_proof(d, validators=honest_voters)
    other = [array_to_labels(corrupt(d.truth, 0.5, 10, 9))]
    votes = proof.votes + tuple(wrong_vote(d, v, proof.poi, other) for v in liars)
    people = (proof.keys, *d.validator_keys)
    before = {k.public_key: worth(d, k) for k in people}
    meta = get_meta(d.state)
    d.commit(anchor=Anchor(proof.poi, votes))  # 4 of 4 votes: the anchor's quorum is met
    d.commit(settlement=proof.reveal)
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "unconfirmed"
    assert worth(d, proof.keys) == before[proof.keys.public_key]
    for v in honest_voters:
        assert worth(d, v) == before[v.public_key]
    for v in liars:
        assert bond_amount(d, v) == d.params.validator_bond - d.params.validator_bond // C.VOTE_SLASH_DIVISOR
    after = get_meta(d.state)
    assert after.minted == meta.minted and after.d_c == meta.d_c and after.confirmed == meta.confirmed
    # a bond cut below the validator bond no longer votes, so all of it leaves the quorum's total
    assert after.bonded == meta.bonded - len(liars) * d.params.validator_bond


@pytest.mark.parametrize("quorum_ppb", [C.PPB // 2, C.PPB + 1])
def test_invalid_quorum_outside_a_strict_majority(quorum_ppb):
    from chain.devnet import DevnetConfig
    from chain.errors import QuorumOutOfRange

    with pytest.raises(QuorumOutOfRange) as refused:
        Devnet(DevnetConfig(quorum_ppb=quorum_ppb)).start()
    assert refused.value.quorum_ppb == quorum_ppb
