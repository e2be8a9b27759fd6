"""The Problem block (height 0): the proposal, its parameters' ranges and its test tuples.
"""

from __future__ import annotations

from . import constants as C
from .committers import init_committers, validate_committer_params
from .consensus import check_committer_rule
from .crypto import address_bytes as address_of
from .errors import (
    ContributorBondTooSmall,
    InvalidHeader,
    InvalidProblem,
    InvalidSignature,
    ParameterOutOfRange,
    QuorumOutOfRange,
)
from .header import BlockHeader
from .holdouts import mark_holdout
from .limits import check_message_sizes, check_min_fee_param, check_supply
from .outcome import BlockOutcome, Env
from .records import MAX_SEASON_IMPROVEMENTS, MAX_SEASON_LOCKED, ChainMeta, ProblemRecord, Season
from .rewards import MAX_SCALE
from .season import season_mint_bound
from .signing import is_valid_signature
from .state import State, credit, lock, set_meta, set_problem
from .tuples import check_extra_tuple, check_tuple
from .types import ProblemBody, ProblemParams


# ---------------------------------------------------------------------------
# Problem block (height 0)
# ---------------------------------------------------------------------------
def check_range(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        raise ParameterOutOfRange(name, value, low, high)


def validate_params(params: ProblemParams) -> None:
    """Every rule a problem's parameters must meet; the Problem block and ``problem create`` run it."""
    if not params.committers:
        raise InvalidProblem("a problem needs at least one committer")
    if len(set(params.committers)) != len(params.committers):
        raise InvalidProblem("committers repeat")
    check_range("t_p", params.t_p, C.MIN_PERIOD_SECONDS, C.MAX_PERIOD_SECONDS)
    check_range("t_b", params.t_b, C.MIN_PERIOD_SECONDS, C.MAX_PERIOD_SECONDS)
    check_range("num_classes", params.num_classes, 2, C.MAX_CLASSES)
    check_range("reward_a", params.reward_a, 1, C.MAX_REWARD_A)
    check_range("delta_ppb", params.delta_ppb, 0, C.PPB - 1)
    check_range("max_votes", params.max_votes, 1, C.MAX_VOTES_PER_BLOCK)
    if not C.PPB // 2 < params.quorum_ppb <= C.PPB:
        raise QuorumOutOfRange(params.quorum_ppb)
    # A bond of 0 makes every vote weightless: a quorum of no stake is met by one fresh key voting
    # for its own PoI. An improver bond of 0 lets a false PoI cost its author nothing.
    check_range("validator_bond", params.validator_bond, 1)
    check_range("improver_bond", params.improver_bond, 1)
    check_range("unbonding_periods", params.unbonding_periods, 2)
    check_range("max_ambiguous", params.max_ambiguous, 0, C.MAX_AMBIGUOUS)
    check_range("reward_scale", params.reward_scale, 0, MAX_SCALE)
    check_min_fee_param(params)
    check_supply(params)
    validate_committer_params(params)
    if params.season_periods:
        validate_season_params(params)


def check_holdout_season(params: ProblemParams, sealed: bool) -> None:
    """A sealed holdout needs seasons: its rewards vest at the end of one."""
    if sealed:
        check_range("season_periods", params.season_periods, 1)


def validate_season_params(params: ProblemParams) -> None:
    """A season must be revealable, and its bookkeeping must fit the ``Season`` record."""
    check_range("reveal_window", params.reveal_window, 1)  # else the holdout could never be opened
    # The contributor knows x_h and is trusted (docs/soundness.md); its bond covers at least what it could
    # make a season vest for itself, so a missed reveal compensates every locked holder in full.
    season_mint = season_mint_bound(params.reward_a, params.reward_scale)
    if params.contributor_bond < season_mint:
        raise ContributorBondTooSmall(params.contributor_bond, season_mint)
    # at most one settlement per period (plus one anchored in the block that seals the holdout),
    # each locking the improver's reward and one per vote
    settlements = params.season_periods + 1
    if settlements > MAX_SEASON_IMPROVEMENTS or settlements * (1 + params.max_votes) > MAX_SEASON_LOCKED:
        raise InvalidProblem("season too long for its locked-reward bookkeeping",
                             season_periods=params.season_periods, max_votes=params.max_votes)


def process_problem_block(state: State, header: BlockHeader, body: ProblemBody, env: Env) -> BlockOutcome:
    proposal = body.proposal
    params = proposal.params
    chain_id = proposal.chain_id
    # Verify header
    if state.get(b"m") is not None:
        raise InvalidHeader("a problem block must start a chain", height=header.height)
    if header.chain_id != chain_id:
        raise InvalidHeader("chain id is not the proposal's hash", chain_id=header.chain_id)
    if header.height != 0 or header.parent != C.ZERO_HASH or header.period != 0:
        raise InvalidHeader("problem block must be height 0, period 0, no parent", height=header.height)
    check_committer_rule(params, header)
    # Verify proposal and tuples
    if not is_valid_signature(proposal, C.ZERO_HASH):
        raise InvalidSignature("bad proposal signature")
    if not is_valid_signature(proposal.first_tuple, C.ZERO_HASH):
        raise InvalidSignature("bad first test tuple signature")
    validate_params(params)
    check_tuple(proposal.first_tuple, params, env)
    tuples = (proposal.first_tuple,)
    for tup in body.extra_tuples:  # received during T_p (docs/protocol.md "Test tuples added during T_p")
        check_extra_tuple(proposal, tuples, tup, env)
        tuples = (*tuples, tup)
    check_message_sizes(params, tuples, proposal.holdout.m_h if proposal.holdout is not None else 0)
    check_holdout_season(params, proposal.holdout is not None)
    new = state.copy()
    for alloc in params.genesis:
        credit(new, alloc.address, alloc.amount)
    creator = address_of(proposal.creator)
    if proposal.holdout is not None and not lock(new, creator, params.contributor_bond):
        raise InvalidProblem("the creator cannot lock the contributor bond", bond=params.contributor_bond)
    set_problem(new, ProblemRecord(proposal=proposal, tuples=tuples, contributor=creator))
    d_c = tuple(C.PPB for _ in tuples)
    season = None
    if params.season_periods:
        season = Season(0, 1, proposal.holdout, 0, (), C.PPB)
        if proposal.holdout is not None:
            mark_holdout(new, proposal.holdout, 0)
    set_meta(new, ChainMeta(0, 0, d_c, d_c, None, None, None, season, 0, 0, 0))
    init_committers(new, params)
    return BlockOutcome(state=new)


