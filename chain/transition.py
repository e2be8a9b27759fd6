"""The state transition: ``apply_block(state, block, env) -> state`` (docs/design.md §5).

It reads like the consensus-specs' ``state_transition``: validate the header,
process the body in the fixed order (transactions; settlement of the previous
anchor; season reveal; anchor of this period's PoI), then check the state root.
Each rule is one ``if ...: raise Invalid*(...)`` carrying the bad values. The
input state is never modified. ``env`` supplies content by id (DEL artifacts),
which is deterministic because content is addressed by its hash; a missing
artifact raises ``MissingContent`` so the node defers rather than rejects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from del_embed.integer import IntegerDEL, IntegerDELError, distance_ppb, f_int, integer_del_from_bytes

from . import constants as C
from .committers import (
    committers_at,
    eject_committer,
    init_committers,
    is_committer_key,
    process_leave_committer,
    process_register_committer,
    process_turn,
    validate_committer_params,
)
from .consensus import may_commit
from .crypto import address_bytes as address_of, sha256
from .errors import (
    AnchorOverProblemLimits,
    BondStillUnbonding,
    ChannelNotExpired,
    NoBondToWithdraw,
    NoOpenChannel,
    ValidatorAlreadyBonded,
    BadCommitterSignature,
    BodyHashMismatch,
    BondBelowMinimum,
    CommitterEjected,
    CommitterNotAllowed,
    ContributorBondTooSmall,
    InvalidAnchor,
    InvalidEquivocationReport,
    InvalidBody,
    InvalidHeader,
    InvalidProblem,
    InvalidSettlement,
    InvalidSignature,
    InvalidStateRoot,
    InvalidTransaction,
    MissingContent,
    ModelClaimTaken,
    ParameterOutOfRange,
    ModelNotClaimed,
    QuorumNotReached,
    QuorumOutOfRange,
    WrongChain,
)
from .labels import labels_hash, labels_to_array, masked_digest
from .limits import check_block_tx_bytes, check_fee, check_message_sizes, check_min_fee_param, check_supply
from .rewards import MAX_SCALE, improvement_reward, validator_reward
from .season import (
    check_season_reference,
    is_open_season,
    label_vector_sizes,
    process_new_holdout,
    process_season_reveal,
    record_season_improvement,
    season_mint_bound,
)
from .signing import EMPTY_SIGNATURE, is_valid_signature
from .state import (
    MAX_SEASON_IMPROVEMENTS,
    MAX_SEASON_LOCKED,
    Account,
    BestModel,
    Bond,
    ChainMeta,
    Channel,
    DigestRecord,
    Ejection,
    Offer,
    PendingAnchor,
    ProblemRecord,
    RatingMark,
    Reputation,
    Season,
    State,
    burn_locked,
    credit,
    get_account,
    get_bond,
    get_channel,
    get_digest,
    get_meta,
    get_problem,
    get_rating_mark,
    get_reputation,
    is_ejected,
    lock,
    set_account,
    set_bond,
    set_channel,
    set_digest,
    set_ejection,
    set_meta,
    set_offer,
    set_problem,
    set_rating_mark,
    set_reputation,
    unlock,
)
from .types import (
    Anchor,
    Block,
    BlockHeader,
    CloseChannel,
    ImprovementBody,
    LeaveCommitter,
    NewHoldout,
    OfferService,
    OpenChannel,
    PoI,
    ProblemBody,
    ProblemParams,
    Rate,
    RedeemVoucher,
    RegisterCommitter,
    RegisterDigest,
    RegisterValidator,
    ReportEquivocation,
    Reveal,
    Transaction,
    Transfer,
    Vote,
    WithdrawBond,
    body_hash,
    model_claim,
)


# ---------------------------------------------------------------------------
# Environment: content by id
# ---------------------------------------------------------------------------
@dataclass
class Env:
    """Content lookup for the transition; caches parsed DEL artifacts by id."""

    get_content: Callable[[bytes], bytes | None]
    _dels: dict[bytes, IntegerDEL] = field(default_factory=dict)

    def load_del(self, content_id: bytes) -> IntegerDEL:
        cached = self._dels.get(content_id)
        if cached is not None:
            return cached
        data = self.get_content(content_id)
        if data is None or hashlib.sha256(data).digest() != content_id:
            raise MissingContent(content_id)
        model = integer_del_from_bytes(data)
        self._dels[content_id] = model
        return model


def memory_env(contents: dict[bytes, bytes] | None = None) -> Env:
    store = dict(contents or {})
    return Env(get_content=store.get)


# ---------------------------------------------------------------------------
# What a block did, for logs, RPC and the demo
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Settlement:
    poi_hash: bytes
    improver: bytes  # address
    outcome: str  # "settled" | "failed" | "void"
    distances: tuple[int, ...] = ()
    improver_reward: int = 0
    validator_rewards: tuple[tuple[bytes, int], ...] = ()
    slashed: int = 0
    reason: str = ""


@dataclass(frozen=True)
class BlockReceipt:
    """What a block did, without the state (cheap to keep for every block)."""

    settlement: Settlement | None = None
    anchored: bytes | None = None  # PoI hash
    fees: int = 0
    season: str = ""


@dataclass(frozen=True)
class BlockOutcome:
    state: State
    receipt: BlockReceipt = field(default_factory=BlockReceipt)

    @property
    def settlement(self) -> Settlement | None:
        return self.receipt.settlement


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------
def apply_block(state: State, block: Block, env: Env) -> State:
    """Return the state after ``block``; raise an ``InvalidBlock`` subclass if it is invalid."""
    return process_block(state, block, env).state


def process_block(state: State, block: Block, env: Env, *, header_checked: bool = False) -> BlockOutcome:
    """Check and execute ``block`` on ``state``.

    ``header_checked``: the caller (the store's byte import) has already run
    ``validate_header_first`` and matched the raw body bytes to ``body_hash``; the
    signature is then not verified twice.
    """
    header = block.header
    if not header_checked:
        params = params_for(state, block)
        validate_header_first(params, header, committers_for_block(state, params, block))
        computed = body_hash(block.body)
        if header.body_hash != computed:
            raise BodyHashMismatch(header.body_hash, computed)
    outcome = execute_block(state, header, block.body, env)
    if outcome.state.root != header.state_root:
        raise InvalidStateRoot("state root mismatch", header=header.state_root, computed=outcome.state.root)
    outcome.state.head = header.hash
    return outcome


# ---------------------------------------------------------------------------
# Header first: what a node checks before it decodes, stores or relays a body (issue 14)
# ---------------------------------------------------------------------------
def params_for(state: State, block: Block) -> ProblemParams:
    """The problem's parameters: the chain's, or the Problem block's own proposal's."""
    if state.get(b"p") is not None:
        return get_problem(state).params
    if isinstance(block.body, ProblemBody):
        return block.body.proposal.params
    raise InvalidHeader("an improvement block on a chain without a problem block", height=block.header.height)


def check_chain_id(expected: bytes, header: BlockHeader) -> None:
    if header.chain_id != expected:
        raise WrongChain(header.chain_id, expected)


def check_committer_signature(header: BlockHeader) -> None:
    if not is_valid_signature(header, header.chain_id):
        raise BadCommitterSignature(header.committer)


def committers_for_block(state: State, params: ProblemParams, block: Block) -> tuple[bytes, ...]:
    """The set in force at ``block``'s period, read from its parent's ``state``."""
    if isinstance(block.body, ProblemBody):
        return params.committers
    return committers_at(state, params, block.header.period)


def check_committer_rule(params: ProblemParams, header: BlockHeader, committers: tuple[bytes, ...] | None = None) -> None:
    """A committer of the set in force at the header's period (``committers``; the proposal's list
    for a fixed set), in turn from the period's end, or any of them after the grace."""
    if not may_commit(params, header.period, header.committer, header.timestamp, committers):
        raise CommitterNotAllowed(header.committer, header.period, header.timestamp)


def check_not_ejected(state: State, committer: bytes) -> None:
    if is_ejected(state, committer):
        raise CommitterEjected(committer)


def validate_header_first(params: ProblemParams, header: BlockHeader, committers: tuple[bytes, ...] | None = None) -> None:
    """The checks that need only the header and the set in force at its period.

    ``committers`` is that set (``chain.committers.committers_at`` on a state at most
    ``committer_delay`` periods older than the header); None for a fixed set, which the
    problem's parameters alone give. They run before the body is decoded, stored or
    relayed, so a peer without a committer key costs one header decode and one
    signature check.
    """
    check_committer_signature(header)
    check_committer_rule(params, header, committers)


def check_anchor_limits(params: ProblemParams, ambiguous: int, votes: int) -> None:
    """An anchor holds at most ``max_ambiguous`` positions and ``max_votes`` votes."""
    if ambiguous > params.max_ambiguous:
        raise AnchorOverProblemLimits("ambiguous positions", ambiguous, params.max_ambiguous)
    if votes > params.max_votes:
        raise AnchorOverProblemLimits("votes", votes, params.max_votes)


def check_raw_body_limits(params: ProblemParams, obj: object) -> None:
    """``check_anchor_limits`` on a body's raw msgpack lists, before any object is built.

    Decoding 300,000 ambiguous positions into objects costs about a second; counting
    list lengths costs microseconds. A body of the wrong shape is left to the codec.
    """
    try:
        kind, fields = obj  # type: ignore[misc]
        anchor = fields[3] if kind == C.KIND_IMPROVEMENT else None
        if anchor is None:
            return
        poi, votes = anchor
        ambiguous = sum(len(s) for s in poi[6])
        vote_count = len(votes)
    except (TypeError, ValueError, IndexError, KeyError):
        return
    check_anchor_limits(params, ambiguous, vote_count)


def execute_block(state: State, header: BlockHeader, body: ProblemBody | ImprovementBody, env: Env) -> BlockOutcome:
    """Everything but the root and signature checks (committers use it to build blocks)."""
    if isinstance(body, ProblemBody):
        if header.kind != C.KIND_PROBLEM:
            raise InvalidBody("problem body under a non-problem header", kind=header.kind)
        return process_problem_block(state, header, body, env)
    if header.kind != C.KIND_IMPROVEMENT:
        raise InvalidBody("improvement body under a non-improvement header", kind=header.kind)
    return process_improvement_block(state, header, body, env)


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


def check_tuple(tup, params: ProblemParams, env: Env) -> IntegerDEL:  # type: ignore[no-untyped-def]
    try:
        model = env.load_del(tup.del_id)
    except IntegerDELError as exc:
        raise InvalidProblem(f"DEL artifact is malformed: {exc}", del_id=tup.del_id) from None
    if model.m != tup.m or model.num_classes != params.num_classes:
        raise InvalidProblem("DEL artifact does not fit its tuple", m=tup.m, del_m=model.m)
    if len(tup.y_t) != model.n:
        raise InvalidProblem("y_t length differs from the DEL's n", len_y=len(tup.y_t), n=model.n)
    return model


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
    for tup in body.extra_tuples:
        if not is_valid_signature(tup, chain_id):
            raise InvalidSignature("bad test tuple signature")
    tuples = (proposal.first_tuple, *body.extra_tuples)
    for tup in tuples:
        check_tuple(tup, params, env)
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
    set_meta(new, ChainMeta(0, 0, d_c, d_c, None, None, None, season, 0, 0, 0))
    init_committers(new, params)
    return BlockOutcome(state=new)


# ---------------------------------------------------------------------------
# Improvement block
# ---------------------------------------------------------------------------
def process_improvement_block(state: State, header: BlockHeader, body: ImprovementBody, env: Env) -> BlockOutcome:
    problem = get_problem(state)
    meta = get_meta(state)
    validate_improvement_header(state, problem, meta, state.head, header)
    check_not_ejected(state, header.committer)
    check_block_tx_bytes(body.transactions)
    new = state.copy()
    process_turn(new, problem.params, header.period, header.committer)
    fees = process_transactions(new, problem, header, body.transactions)
    settlement = process_settlement(new, problem, header, body.settlement, env)
    season_note = process_season_reveal(new, problem, header, body.season_reveal)
    anchored = process_anchor(new, problem, header, body.anchor)
    meta = get_meta(new)
    set_meta(new, replace(meta, height=header.height, period=header.period))
    return BlockOutcome(new, BlockReceipt(settlement, anchored, fees, season_note))


def validate_improvement_header(state: State, problem: ProblemRecord, meta: ChainMeta, head: bytes,
                                header: BlockHeader) -> None:
    params = problem.params
    check_chain_id(problem.chain_id, header)
    if header.height != meta.height + 1:
        raise InvalidHeader("wrong height", height=header.height, expected=meta.height + 1)
    if header.parent != head:
        raise InvalidHeader("wrong parent", parent=header.parent, head=head)
    if header.period <= meta.period:
        raise InvalidHeader("period does not advance", period=header.period, last=meta.period)
    check_committer_rule(params, header, committers_at(state, params, header.period))


# --- transactions ---------------------------------------------------------------
def process_transactions(state: State, problem: ProblemRecord, header: BlockHeader, txs: tuple[Transaction, ...]) -> int:
    fees = 0
    for index, tx in enumerate(txs):
        try:
            fees += process_transaction(state, problem, header, tx)
        except InvalidTransaction as exc:
            # Keep the typed error (callers tell rules apart by class); say which tx broke it.
            exc.values["tx_index"] = index
            exc.args = (f"tx {index}: {exc}",)
            raise
    if fees:
        credit(state, address_of(header.committer), fees)
    return fees


def process_transaction(state: State, problem: ProblemRecord, header: BlockHeader, tx: Transaction) -> int:
    """Apply one tx; return its fee (credited to the committer by the caller)."""
    if tx.chain_id != problem.chain_id:
        raise InvalidTransaction("tx for another chain", chain_id=tx.chain_id)
    check_fee(problem.params, tx)
    if not is_valid_signature(tx, problem.chain_id):
        raise InvalidTransaction("bad tx signature", sender=tx.sender)
    sender = address_of(tx.sender)
    acct = get_account(state, sender)
    if tx.nonce != acct.nonce:
        raise InvalidTransaction("wrong nonce", nonce=tx.nonce, expected=acct.nonce)
    if acct.balance < tx.fee:
        raise InvalidTransaction("balance below fee", balance=acct.balance, fee=tx.fee)
    set_account(state, sender, Account(acct.balance - tx.fee, acct.locked, acct.nonce + 1))
    payload = tx.payload
    if isinstance(payload, Transfer):
        process_transfer(state, sender, payload)
    elif isinstance(payload, RegisterDigest):
        process_register_digest(state, sender, header, payload)
    elif isinstance(payload, RegisterValidator):
        process_register_validator(state, problem, tx.sender, header)
    elif isinstance(payload, WithdrawBond):
        process_withdraw_bond(state, problem, tx.sender, header)
    elif isinstance(payload, OfferService):
        set_offer(state, sender, Offer(payload, header.height))
    elif isinstance(payload, Rate):
        process_rate(state, sender, header, payload)
    elif isinstance(payload, NewHoldout):
        process_new_holdout(state, problem, sender, header, payload)
    elif isinstance(payload, OpenChannel):
        process_open_channel(state, sender, header, payload)
    elif isinstance(payload, RedeemVoucher):
        process_redeem_voucher(state, problem, sender, payload)
    elif isinstance(payload, CloseChannel):
        process_close_channel(state, sender, header, payload)
    elif isinstance(payload, ReportEquivocation):
        process_report_equivocation(state, problem, header, payload)
    elif isinstance(payload, RegisterCommitter):
        process_register_committer(state, problem.params, tx.sender, header.period)
    elif isinstance(payload, LeaveCommitter):
        process_leave_committer(state, problem.params, tx.sender, header.period)
    return tx.fee


def process_transfer(state: State, sender: bytes, payload: Transfer) -> None:
    acct = get_account(state, sender)
    if acct.balance < payload.amount:
        raise InvalidTransaction("balance below amount", balance=acct.balance, amount=payload.amount)
    set_account(state, sender, Account(acct.balance - payload.amount, acct.locked, acct.nonce))
    credit(state, payload.to, payload.amount)


def process_register_digest(state: State, sender: bytes, header: BlockHeader, payload: RegisterDigest) -> None:
    """Record a model claim ``H(pk || digest)``. The claim names its prover, so whoever sends it
    (the prover, or someone who copied the tx) it only ever lets that prover anchor the model."""
    if get_digest(state, payload.claim) is not None:
        raise ModelClaimTaken(payload.claim)
    set_digest(state, payload.claim, DigestRecord(owner=sender, height=header.height))


def check_model_claimed(state: State, poi: PoI, height: int) -> None:
    """The PoI's prover claimed its model in a block before ``height`` (front-running defence)."""
    claim = model_claim(poi.prover, poi.model_digest)
    record = get_digest(state, claim)
    if record is None or record.height >= height:
        raise ModelNotClaimed(poi.prover, poi.model_digest, claim, None if record is None else record.height)


def check_vote_bond(params: ProblemParams, validator: bytes, bond: Bond | None, height: int) -> None:
    """A vote counts only from a full, active bond placed before ``height``: a bond slashed
    below the validator bond must be withdrawn and placed again before it votes."""
    if bond is None or bond.unbond_period != 0 or bond.since_height >= height:
        raise InvalidAnchor("vote from a validator not bonded in an earlier block", validator=validator)
    if bond.amount < params.validator_bond:
        raise BondBelowMinimum(validator, bond.amount, params.validator_bond)


def check_may_bond(validator: bytes, bond: Bond | None) -> None:
    """A key holds at most one bond: a second ``RegisterValidator`` waits until the first is withdrawn."""
    if bond is not None:
        raise ValidatorAlreadyBonded(validator)


def process_register_validator(state: State, problem: ProblemRecord, validator: bytes, header: BlockHeader) -> None:
    check_may_bond(validator, get_bond(state, validator))
    amount = problem.params.validator_bond
    if not lock(state, address_of(validator), amount):
        raise InvalidTransaction("balance below the validator bond", bond=amount)
    set_bond(state, validator, Bond(amount=amount, since_height=header.height, unbond_period=0))
    change_bonded(state, amount)


def check_withdraw_bond(validator: bytes, bond: Bond | None, period: int) -> None:
    """A ``WithdrawBond`` in ``period`` needs a bond; the one that returns it, the end of unbonding.

    The first ``WithdrawBond`` of an active bond starts unbonding (it always may); a later one
    returns the bond from period ``unbond_period`` on, so a validator cannot vote for a bad
    PoI and leave before the reveal slashes it."""
    if bond is None:
        raise NoBondToWithdraw(validator)
    if bond.unbond_period != 0 and period < bond.unbond_period:
        raise BondStillUnbonding(bond.unbond_period, period)


def process_withdraw_bond(state: State, problem: ProblemRecord, validator: bytes, header: BlockHeader) -> None:
    bond = get_bond(state, validator)
    check_withdraw_bond(validator, bond, header.period)
    assert bond is not None
    if bond.unbond_period == 0:
        set_bond(state, validator, replace(bond, unbond_period=header.period + problem.params.unbonding_periods))
        change_bonded(state, -voting_weight(problem.params, bond))
        return
    unlock(state, address_of(validator), bond.amount)
    set_bond(state, validator, None)


def voting_weight(params: ProblemParams, bond: Bond) -> int:
    """The stake a bond may vote with: all of it while it is active and at least the validator
    bond (``check_vote_bond``), else none. ``meta.bonded`` is the sum of these, so a bond slashed
    below the minimum leaves the quorum's total as it loses its vote (finding 9)."""
    if bond.unbond_period != 0 or bond.amount < params.validator_bond:
        return 0
    return bond.amount


def change_bonded(state: State, amount: int) -> None:
    """Keep ``meta.bonded``, the stake a quorum is measured against, equal to the sum of the
    bonds' ``voting_weight``."""
    meta = get_meta(state)
    set_meta(state, replace(meta, bonded=meta.bonded + amount))


def process_rate(state: State, rater: bytes, header: BlockHeader, payload: Rate) -> None:
    if payload.target == rater:
        raise InvalidTransaction("cannot rate oneself")
    acct = get_account(state, rater)
    if acct.balance + acct.locked == 0:
        raise InvalidTransaction("only holders may rate")
    mark = get_rating_mark(state, rater, payload.target)
    if mark is not None and mark.period == header.period:
        raise InvalidTransaction("already rated this target this period", target=payload.target)
    set_rating_mark(state, rater, payload.target, RatingMark(header.period))
    rep = get_reputation(state, payload.target)
    up, down = (rep.up + 1, rep.down) if payload.score > 0 else (rep.up, rep.down + 1)
    set_reputation(state, payload.target, Reputation(rep.score + payload.score, up, down))


# --- payment channels (docs/market.md) ---------------------------------------------
def process_open_channel(state: State, payer: bytes, header: BlockHeader, payload: OpenChannel) -> None:
    if payload.runner == payer:
        raise InvalidTransaction("cannot open a channel to oneself")
    if payload.amount == 0:
        raise InvalidTransaction("a channel deposit must be positive")
    if payload.expires_period <= header.period:
        raise InvalidTransaction("channel expiry not in the future", expires=payload.expires_period, period=header.period)
    if not lock(state, payer, payload.amount):
        raise InvalidTransaction("balance below the channel deposit", amount=payload.amount)
    channel = get_channel(state, payer, payload.runner)
    if channel is None:
        channel = Channel(0, 0, 0, 0)
    if channel.is_open:
        channel = Channel(channel.deposit + payload.amount, channel.redeemed,
                          max(channel.expires_period, payload.expires_period), channel.epoch)
    else:
        channel = Channel(payload.amount, 0, payload.expires_period, channel.epoch)
    set_channel(state, payer, payload.runner, channel)


def process_redeem_voucher(state: State, problem: ProblemRecord, runner: bytes, payload: RedeemVoucher) -> None:
    voucher = payload.voucher
    if voucher.chain_id != problem.chain_id:
        raise InvalidTransaction("voucher for another chain", chain_id=voucher.chain_id)
    if voucher.runner != runner:
        raise InvalidTransaction("voucher names another runner", runner=voucher.runner)
    if not is_valid_signature(voucher, problem.chain_id):
        raise InvalidTransaction("bad voucher signature", payer=voucher.payer)
    payer = address_of(voucher.payer)
    channel = get_channel(state, payer, runner)
    if channel is None or not channel.is_open:
        raise InvalidTransaction("no open channel for the voucher", payer=payer)
    if voucher.epoch != channel.epoch:
        raise InvalidTransaction("voucher of a closed channel epoch", epoch=voucher.epoch, current=channel.epoch)
    if voucher.cumulative <= channel.redeemed:
        raise InvalidTransaction("voucher already redeemed", cumulative=voucher.cumulative, redeemed=channel.redeemed)
    if voucher.cumulative > channel.deposit:
        raise InvalidTransaction("voucher exceeds the channel deposit", cumulative=voucher.cumulative,
                                 deposit=channel.deposit)
    amount = voucher.cumulative - channel.redeemed
    if burn_locked(state, payer, amount) != amount:  # the deposit is locked: cannot happen
        raise InvalidTransaction("channel deposit not locked", payer=payer)
    credit(state, runner, amount)
    set_channel(state, payer, runner, replace(channel, redeemed=voucher.cumulative))


def check_close_channel(runner: bytes, channel: Channel | None, period: int) -> None:
    """A channel closes from its ``expires_period`` on: until then the runner may redeem vouchers
    against the deposit, so the payer cannot take it back under a runner it has paid."""
    if channel is None or not channel.is_open:
        raise NoOpenChannel(runner)
    if period < channel.expires_period:
        raise ChannelNotExpired(channel.expires_period, period)


def process_close_channel(state: State, payer: bytes, header: BlockHeader, payload: CloseChannel) -> None:
    channel = get_channel(state, payer, payload.runner)
    check_close_channel(payload.runner, channel, header.period)
    assert channel is not None
    unlock(state, payer, channel.deposit - channel.redeemed)
    set_channel(state, payer, payload.runner, Channel(0, 0, 0, channel.epoch + 1))


# --- committer equivocation (issue 14) -------------------------------------------
def validate_equivocation_report(state: State, problem: ProblemRecord, report: ReportEquivocation) -> None:
    """Two different headers, both signed for this chain by one active committer for one period."""
    first, second = report.first, report.second
    chain_id = problem.chain_id
    if first.chain_id != chain_id or second.chain_id != chain_id:
        raise InvalidEquivocationReport("headers of another chain", chain_id=first.chain_id, other=second.chain_id)
    if first.committer != second.committer:
        raise InvalidEquivocationReport("headers by two committers", committer=first.committer, other=second.committer)
    if not is_committer_key(state, problem.params, first.committer):
        raise InvalidEquivocationReport("not a committer of this problem", committer=first.committer)
    if first.period != second.period:
        raise InvalidEquivocationReport("headers for two periods", period=first.period, other=second.period)
    if replace(first, signature=EMPTY_SIGNATURE) == replace(second, signature=EMPTY_SIGNATURE):
        raise InvalidEquivocationReport("the same header twice", header=first.hash)
    if not is_valid_signature(first, chain_id) or not is_valid_signature(second, chain_id):
        raise InvalidEquivocationReport("a header signature does not verify", committer=first.committer)
    if is_ejected(state, first.committer):
        raise InvalidEquivocationReport("committer already ejected", committer=first.committer)


def process_report_equivocation(state: State, problem: ProblemRecord, header: BlockHeader,
                                report: ReportEquivocation) -> None:
    """Eject the committer for good and burn its spendable balance.

    A committer posts no bond, so ejection (the loss of every later fee, as Clique
    votes a signer out and Ethereum exits a slashed proposer) is the penalty; burning
    what it holds spendable takes back the fees it earned. Locked funds (bonds,
    unvested rewards) keep their own rules.
    """
    validate_equivocation_report(state, problem, report)
    committer = report.first.committer
    set_ejection(state, committer, Ejection(report.first.period, header.height))
    burn_spendable(state, address_of(committer))
    eject_committer(state, problem.params, committer, header.period)


def burn_spendable(state: State, address: bytes) -> int:
    acct = get_account(state, address)
    set_account(state, address, Account(0, acct.locked, acct.nonce))
    meta = get_meta(state)
    set_meta(state, replace(meta, burned=meta.burned + acct.balance))
    return acct.balance


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
        raise InvalidAnchor("no open season with a sealed holdout", period=header.period)
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


__all__ = [
    "Env",
    "memory_env",
    "apply_block",
    "process_block",
    "execute_block",
    "validate_header_first",
    "check_raw_body_limits",
    "BlockOutcome",
    "BlockReceipt",
    "Settlement",
    "vote_order_key",
    "model_order_seed",
    "validate_quorum",
    "check_model_claimed",
    "check_vote_bond",
    "check_may_bond",
    "check_withdraw_bond",
    "check_close_channel",
    "validate_params",
    "check_holdout_season",
]
