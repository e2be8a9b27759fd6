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

from dataclasses import replace

from . import constants as C
from .anchor import check_anchor_limits, process_anchor
from .committers import committers_at, process_turn
from .consensus import check_committer_rule
from .errors import (
    BadCommitterSignature,
    BodyHashMismatch,
    CommitterEjected,
    InvalidBody,
    InvalidHeader,
    InvalidStateRoot,
    WrongChain,
)
from .header import BlockHeader
from .limits import check_block_tx_bytes
from .outcome import BlockOutcome, BlockReceipt, Env
from .problem_block import process_problem_block
from .records import ChainMeta, ProblemRecord
from .season import process_season_reveal
from .settlement import process_settlement
from .signing import is_valid_signature
from .state import State, get_meta, get_problem, is_ejected, set_meta
from .txs import process_transactions
from .types import Block, ImprovementBody, ProblemBody, ProblemParams, body_hash


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
