"""Building signed blocks and transactions: what a committer and the test factories share.

A committer executes the body on a copy of the state to learn the state root,
then signs the header; ``apply_block`` on any other node recomputes the same.
"""

from __future__ import annotations

from typing import Sequence

from . import constants as C
from .crypto import KeyPair
from .header import BlockHeader
from .outcome import BlockOutcome, Env
from .payloads import Payload, Transaction
from .proofs import Reveal, SeasonReveal
from .signing import EMPTY_SIGNATURE, sign
from .state import State
from .transition import execute_block
from .types import Anchor, Block, ImprovementBody, ProblemBody, ProblemParams, Proposal, TestTuple, body_hash


def seal_block(state: State, header: BlockHeader, body: ProblemBody | ImprovementBody, keys: KeyPair, env: Env) -> tuple[Block, BlockOutcome]:
    """Execute ``body`` over ``state``, fill in the roots, sign; ``state`` is unchanged."""
    outcome = execute_block(state, header, body, env)
    header = BlockHeader(
        chain_id=header.chain_id,
        height=header.height,
        parent=header.parent,
        kind=header.kind,
        period=header.period,
        timestamp=header.timestamp,
        committer=keys.public_key,
        body_hash=body_hash(body),
        state_root=outcome.state.root,
        signature=EMPTY_SIGNATURE,
    )
    header = sign(header, keys, header.chain_id)
    outcome.state.head = header.hash
    return Block(header, body), outcome


def _draft_header(chain_id: bytes, height: int, parent: bytes, kind: int, period: int, timestamp: int, keys: KeyPair) -> BlockHeader:
    return BlockHeader(chain_id, height, parent, kind, period, timestamp, keys.public_key,
                       C.ZERO_HASH, C.ZERO_HASH, EMPTY_SIGNATURE)


def build_problem_block(
    proposal: Proposal,
    keys: KeyPair,
    timestamp: int,
    env: Env,
    extra_tuples: Sequence[TestTuple] = (),
) -> tuple[Block, BlockOutcome]:
    header = _draft_header(proposal.chain_id, 0, C.ZERO_HASH, C.KIND_PROBLEM, 0, timestamp, keys)
    return seal_block(State(), header, ProblemBody(proposal, tuple(extra_tuples)), keys, env)


def build_improvement_block(
    state: State,
    keys: KeyPair,
    *,
    period: int,
    timestamp: int,
    env: Env,
    transactions: Sequence[Transaction] = (),
    settlement: Reveal | None = None,
    season_reveal: SeasonReveal | None = None,
    anchor: Anchor | None = None,
) -> tuple[Block, BlockOutcome]:
    from .state import get_meta, get_problem

    chain_id = get_problem(state).chain_id
    height = get_meta(state).height + 1
    header = _draft_header(chain_id, height, state.head, C.KIND_IMPROVEMENT, period, timestamp, keys)
    body = ImprovementBody(tuple(transactions), settlement, season_reveal, anchor)
    return seal_block(state, header, body, keys, env)


def make_transaction(keys: KeyPair, chain_id: bytes, nonce: int, payload: Payload, fee: int = 0) -> Transaction:
    tx = Transaction(chain_id, nonce, fee, payload, keys.public_key, EMPTY_SIGNATURE)
    return sign(tx, keys, chain_id)


def make_paid_transaction(keys: KeyPair, params: ProblemParams, chain_id: bytes, nonce: int, payload: Payload,
                          fee: int | None = None) -> Transaction:
    """A tx paying ``fee``, or (None) the problem's minimum fee."""
    return make_transaction(keys, chain_id, nonce, payload, params.min_fee if fee is None else fee)
