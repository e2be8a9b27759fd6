"""The anchor of this period's PoI: the proof, its votes and their quorum (docs/protocol.md
"Block processing", step 5).
"""

from __future__ import annotations

from dataclasses import replace

from del_embed.integer import distance_ppb

from .bonds import check_vote_bond
from .crypto import address_bytes as address_of
from .errors import AnchorOverProblemLimits, InvalidAnchor, ModelNotClaimed, NoOpenSeason, QuorumNotReached
from .header import BlockHeader
from .proofs import PoI, model_claim
from .records import ChainMeta, PendingAnchor, ProblemRecord
from .season import is_open_season, label_vector_sizes
from .settlement import quorum_stake, vote_stake
from .signing import is_valid_signature
from .state import State, get_bond, get_digest, get_meta, lock, set_meta
from .types import Anchor, ProblemParams


def check_model_claimed(state: State, poi: PoI, height: int) -> None:
    """The PoI's prover claimed its model in a block before ``height`` (front-running defence)."""
    claim = model_claim(poi.prover, poi.model_digest)
    record = get_digest(state, claim)
    if record is None or record.height >= height:
        raise ModelNotClaimed(poi.prover, poi.model_digest, claim, None if record is None else record.height)



def check_anchor_limits(params: ProblemParams, ambiguous: int, votes: int) -> None:
    """An anchor holds at most ``max_ambiguous`` positions and ``max_votes`` votes."""
    if ambiguous > params.max_ambiguous:
        raise AnchorOverProblemLimits("ambiguous positions", ambiguous, params.max_ambiguous)
    if votes > params.max_votes:
        raise AnchorOverProblemLimits("votes", votes, params.max_votes)



# --- anchor ---------------------------------------------------------------------------
def process_anchor(state: State, problem: ProblemRecord, header: BlockHeader, anchor: Anchor | None) -> bytes | None:
    if anchor is None:
        return None
    params = problem.params
    poi = anchor.poi
    meta = get_meta(state)
    validate_poi(state, problem, meta, header, poi)
    validate_votes(state, problem, header, poi, anchor)
    needed = validate_quorum(state, problem, anchor)
    improver = address_of(poi.prover)
    if not lock(state, improver, params.improver_bond):
        raise InvalidAnchor("improver cannot lock its bond", bond=params.improver_bond)
    pending = PendingAnchor(anchor, header.height, header.period, params.improver_bond, needed)
    set_meta(state, replace(get_meta(state), pending=pending))
    return poi.hash


def validate_poi(state: State, problem: ProblemRecord, meta: ChainMeta, header: BlockHeader, poi: PoI) -> None:
    params = problem.params
    if poi.chain_id != problem.chain_id:
        raise InvalidAnchor("PoI for another chain", chain_id=poi.chain_id)
    if poi.period != header.period:
        raise InvalidAnchor("PoI for another period", poi_period=poi.period, period=header.period)
    if poi.parent != header.parent:
        raise InvalidAnchor("PoI built on another parent", parent=poi.parent)
    if not is_open_season(meta, header.period, params.season_periods):
        raise NoOpenSeason(header.period, meta.season.index if meta.season is not None else 0)
    if not is_valid_signature(poi, problem.chain_id):
        raise InvalidAnchor("bad PoI signature", prover=poi.prover)
    check_model_claimed(state, poi, header.height)
    if len(poi.ys) != len(problem.tuples):
        raise InvalidAnchor("PoI has the wrong number of embeddings", ys=len(poi.ys))
    for i, (y, tup) in enumerate(zip(poi.ys, problem.tuples)):
        if len(y) != len(tup.y_t):
            raise InvalidAnchor("PoI embedding of the wrong length", length=len(y))
        # A PoI made before this block's settlement may no longer improve on d_c: anchoring it
        # would make honest voters lose their bonds when it fails. Its claim is checked now.
        d = distance_ppb(y, tup.y_t)
        if not d < meta.d_c[i] - params.delta_ppb:
            raise InvalidAnchor("PoI does not claim to beat d_c - delta", tuple_index=i, d=d, d_c=meta.d_c[i])
    expected_sets = len(label_vector_sizes(problem, meta))
    if len(poi.ambiguous) != expected_sets:
        raise InvalidAnchor("PoI has the wrong number of ambiguous sets", sets=len(poi.ambiguous))
    check_anchor_limits(params, sum(len(s) for s in poi.ambiguous), 0)
    for amb in poi.ambiguous:
        indices = [a.index for a in amb]
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise InvalidAnchor("ambiguous positions not strictly increasing")


def validate_votes(state: State, problem: ProblemRecord, header: BlockHeader, poi: PoI, anchor: Anchor) -> None:
    params = problem.params
    if not anchor.votes:
        raise InvalidAnchor("an anchored PoI needs at least one vote")
    check_anchor_limits(params, 0, len(anchor.votes))
    poi_hash = poi.hash
    seen: set[bytes] = set()
    for vote in anchor.votes:
        if vote.validator in seen:
            raise InvalidAnchor("duplicate vote", validator=vote.validator)
        seen.add(vote.validator)
        if vote.chain_id != problem.chain_id or vote.period != poi.period:
            raise InvalidAnchor("vote for another chain or period", period=vote.period)
        if vote.poi_hash != poi_hash or vote.parent != poi.parent:
            raise InvalidAnchor("vote bound to another PoI or parent", poi_hash=vote.poi_hash)
        check_vote_bond(params, vote.validator, get_bond(state, vote.validator), header.height)
        if not is_valid_signature(vote, problem.chain_id):
            raise InvalidAnchor("bad vote signature", validator=vote.validator)


def validate_quorum(state: State, problem: ProblemRecord, anchor: Anchor) -> int:
    """The votes must come from ``quorum_ppb`` of the bonded stake; returns that stake, which the
    settlement's matching votes must reach too. One bonded validator alone cannot anchor anything."""
    bonded = get_meta(state).bonded
    needed = quorum_stake(bonded, problem.params.quorum_ppb)
    stake = vote_stake(state, anchor.votes)
    if stake < needed:
        raise QuorumNotReached(stake, bonded, problem.params.quorum_ppb)
    return needed
