"""Settlement of the previous period's anchor: the reveal, the checks on it, and who is paid or
slashed (docs/protocol.md "Block processing", step 3).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from del_embed.integer import distance_ppb, f_int

from . import constants as C
from .bonds import change_bonded, voting_weight
from .crypto import address_bytes as address_of, sha256
from .errors import InvalidSettlement
from .header import BlockHeader
from .labels import labels_hash, labels_to_array, masked_digest
from .outcome import Env, Settlement
from .proofs import PoI, Reveal, Vote
from .records import BestModel, ChainMeta, PendingAnchor, ProblemRecord
from .rewards import improvement_reward, validator_reward
from .season import check_season_reference, label_vector_sizes, record_season_improvement
from .signing import is_valid_signature
from .state import State, burn_locked, credit, get_bond, get_meta, set_bond, set_meta, unlock
from .types import Anchor, ProblemParams


# --- settlement of the previous anchor -------------------------------------------
def process_settlement(state: State, problem: ProblemRecord, header: BlockHeader, reveal: Reveal | None, env: Env) -> Settlement | None:
    meta = get_meta(state)
    pending = meta.pending
    if pending is None:
        if reveal is not None:
            raise InvalidSettlement("a reveal with nothing anchored")
        return None
    poi = pending.anchor.poi
    set_meta(state, replace(meta, pending=None))
    if reveal is None or header.period != pending.period + 1:
        if reveal is not None:
            raise InvalidSettlement("reveal outside the period after its anchor", period=header.period, anchored=pending.period)
        burn(state, address_of(poi.prover), pending.improver_bond)
        return Settlement(poi.hash, address_of(poi.prover), "void", slashed=pending.improver_bond, reason="not revealed")
    # Verify the reveal belongs to the pending PoI
    if reveal.chain_id != problem.chain_id or reveal.poi_hash != poi.hash:
        raise InvalidSettlement("reveal for another PoI", poi_hash=reveal.poi_hash)
    if reveal.prover != poi.prover:
        raise InvalidSettlement("reveal not by the prover", prover=reveal.prover)
    if not is_valid_signature(reveal, problem.chain_id):
        raise InvalidSettlement("bad reveal signature")
    if labels_hash(reveal.labels) != poi.labels_hash:
        raise InvalidSettlement("revealed labels do not hash to the PoI's commitment")
    failure, distances = check_revealed_labels(problem, meta, poi, reveal, env)
    if not failure:
        failure = check_season_reference(state, meta, poi, reveal)
    if failure:
        return fail_settlement(state, problem, pending, failure)
    matching, mismatched = split_votes(pending.anchor, reveal)
    stake = vote_stake(state, matching)
    if stake < pending.quorum_stake:
        return unconfirm_settlement(state, problem, pending, mismatched, stake)
    return pay_settlement(state, problem, header, pending, reveal, distances, matching)


def check_revealed_labels(problem: ProblemRecord, meta: ChainMeta, poi: PoI, reveal: Reveal, env: Env) -> tuple[str, tuple[int, ...]]:
    """Return ``(failure reason or "", distances)`` for a reveal matching its commitment."""
    params = problem.params
    sizes = label_vector_sizes(problem, meta)
    if len(reveal.labels) != len(sizes) or len(poi.ambiguous) != len(sizes) or len(poi.ys) != len(problem.tuples):
        return "wrong number of label vectors", ()
    for vec, size, amb in zip(reveal.labels, sizes, poi.ambiguous):
        if len(vec) != size:
            return "label vector of the wrong length", ()
        if vec and max(vec) >= params.num_classes:
            return "label outside the classes", ()
        for a in amb:
            if a.index >= size or vec[a.index] != a.label:
                return "ambiguous label differs from the revealed one", ()
    distances = []
    for i, tup in enumerate(problem.tuples):
        y = f_int(env.load_del(tup.del_id), labels_to_array(reveal.labels[i]))
        if y != poi.ys[i]:
            return f"f_int of tuple {i} differs from the proof", ()
        d = distance_ppb(y, tup.y_t)
        if not d < meta.d_c[i] - params.delta_ppb:
            return f"tuple {i} does not beat d_c - delta", ()
        distances.append(d)
    return "", tuple(distances)


def model_order_seed(model: bytes) -> bytes:
    """A PoI's ``order_seed``: a second hash of the model bytes, so it is fixed once the digest is
    registered and unknown to anyone who has not got the model (validators check it)."""
    return sha256(b"daimon/order-seed/v1" + model)


def vote_order_key(poi: PoI, validator: bytes) -> bytes:
    """The vote lottery: positions follow ``H(parent || order_seed || pk_V)``.

    The parent's committer cannot compute it (it does not know the seed), the prover
    fixed the seed before the parent existed, and a validator's key was bonded before
    either was known: no single party chooses the order."""
    return sha256(poi.parent + poi.order_seed + validator)


def split_votes(anchor: Anchor, reveal: Reveal) -> tuple[list[Vote], list[Vote]]:
    """The anchor's votes whose masked-label digest matches the reveal, and the others."""
    poi = anchor.poi
    matching: list[Vote] = []
    mismatched: list[Vote] = []
    for vote in anchor.votes:
        same = vote.labels_digest == masked_digest(vote.validator, reveal.labels, poi.ambiguous)
        (matching if same else mismatched).append(vote)
    return matching, mismatched


def vote_stake(state: State, votes: Sequence[Vote]) -> int:
    """The bonded stake behind ``votes``."""
    total = 0
    for vote in votes:
        bond = get_bond(state, vote.validator)
        total += bond.amount if bond is not None else 0
    return total


def quorum_stake(bonded: int, quorum_ppb: int) -> int:
    """The smallest stake that is at least ``quorum_ppb`` of ``bonded`` (rounded up)."""
    return -(-bonded * quorum_ppb // C.PPB)


def pay_settlement(state: State, problem: ProblemRecord, header: BlockHeader, pending: PendingAnchor, reveal: Reveal,
                   distances: tuple[int, ...], matching: list[Vote]) -> Settlement:
    params = problem.params
    meta = get_meta(state)
    poi = pending.anchor.poi
    improver = address_of(poi.prover)
    rewards = [
        improvement_reward(d, dc, params.reward_a, params.reward_scale)
        for d, dc in zip(distances, meta.d_c)
    ]
    reward = sum(rewards) // len(rewards)
    locked = meta.season is not None and meta.season.holdout is not None
    if not locked:  # in a season the bond stays locked until the judge (docs/protocol.md)
        unlock(state, improver, pending.improver_bond)
    credit(state, improver, reward, locked=locked)
    paid: list[tuple[bytes, int]] = []
    matching = sorted(matching, key=lambda v: vote_order_key(poi, v.validator))
    for position, vote in enumerate(matching, start=1):
        amount = validator_reward(reward, position)
        credit(state, address_of(vote.validator), amount, locked=locked)
        paid.append((address_of(vote.validator), amount))
    minted = reward + sum(a for _, a in paid)
    best = BestModel(poi.model_digest, improver, header.height, distances)
    meta = replace(meta, d_c=distances, provisional=best, minted=meta.minted + minted)
    if locked:
        meta = record_season_improvement(state, meta, best, reveal, poi, improver, reward, paid, pending.improver_bond)
    else:
        meta = replace(meta, confirmed=best, confirmed_d_c=distances)
    set_meta(state, meta)
    return Settlement(poi.hash, improver, "settled", distances, reward, tuple(paid))


def fail_settlement(state: State, problem: ProblemRecord, pending: PendingAnchor, reason: str) -> Settlement:
    """The PoI's own commitment is false: burn the improver bond and slash its voters."""
    poi = pending.anchor.poi
    slashed = burn(state, address_of(poi.prover), pending.improver_bond)
    slashed += slash_votes(state, problem.params, pending.anchor.votes)
    return Settlement(poi.hash, address_of(poi.prover), "failed", slashed=slashed, reason=reason)


def unconfirm_settlement(state: State, problem: ProblemRecord, pending: PendingAnchor, mismatched: Sequence[Vote],
                         stake: int) -> Settlement:
    """Matching votes below the quorum: nothing is paid and nothing moves.

    The reveal opens the PoI's commitment, so an honest validator (which checked
    ``labels_hash`` before voting) always matches it: each mismatched vote is a
    false endorsement and loses half its bond. The improver's bond comes back: its
    reveal is consistent, and a committer must not be able to burn it by filling
    the anchor with its own false votes.
    """
    poi = pending.anchor.poi
    unlock(state, address_of(poi.prover), pending.improver_bond)
    slashed = slash_votes(state, problem.params, mismatched)
    return Settlement(poi.hash, address_of(poi.prover), "unconfirmed", slashed=slashed,
                      reason=f"matching stake {stake} below the quorum {pending.quorum_stake}")


def slash_votes(state: State, params: ProblemParams, votes: Sequence[Vote]) -> int:
    """Each voter loses ``1 / VOTE_SLASH_DIVISOR`` of its bond; returns the total burned."""
    slashed = 0
    for vote in votes:
        bond = get_bond(state, vote.validator)
        if bond is None:
            continue
        cut = bond.amount // C.VOTE_SLASH_DIVISOR
        slashed += burn(state, address_of(vote.validator), cut)
        cut_bond = replace(bond, amount=bond.amount - cut)
        set_bond(state, vote.validator, cut_bond)
        change_bonded(state, voting_weight(params, cut_bond) - voting_weight(params, bond))
    return slashed


def burn(state: State, address: bytes, amount: int) -> int:
    burned = burn_locked(state, address, amount)
    meta = get_meta(state)
    set_meta(state, replace(meta, burned=meta.burned + burned))
    return burned


