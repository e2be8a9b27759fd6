"""The block committer's choices (docs/design.md §5), as functions of state, pool, clock and key.

At the end of period k the in-turn committer (any listed one after the grace
time) seals block k: the transactions that still execute, the reveal settling
the pending anchor, and this period's PoI with the most valid unique votes.
Every candidate is checked by running the real transition on a scratch copy of
the state, so a committer never signs a block the network would reject.
Periods with nothing to do are skipped. A committer never signs two blocks for one
period (that is equivocation, and ejects it): the caller says which periods it has
signed already, and an ejected committer signs nothing.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

from chain import constants as C
from chain.builder import build_improvement_block, build_problem_block
from chain.committers import committers_at
from chain.consensus import in_turn_committer, period_end, period_of
from chain.crypto import KeyPair
from chain.errors import ChainError
from chain.limits import fee_rank, fits_tx_budget, tx_size
from chain.signing import EMPTY_SIGNATURE
from chain.state import State, get_meta, get_problem, is_ejected
from chain.anchor import process_anchor
from chain.outcome import Env
from chain.txs import process_transaction
from chain.header import BlockHeader
from chain.payloads import Transaction
from chain.proofs import PoI, Reveal
from chain.tuples import check_extra_tuple
from chain.types import Anchor, Block, Proposal, TestTuple

from daimon_node.daemon.mempool import Mempool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitPlan:
    """Which period to seal now, and whether in turn."""

    period: int
    in_turn: bool
    timestamp: int


def plan_commit(state: State, keys: KeyPair, now: float,
                has_signed: Callable[[int], bool] = lambda period: False) -> CommitPlan | None:
    """The period this committer may seal at ``now``, if any: it must be in the set in force
    at that period (``chain.committers``; a registered key from D periods after its
    registration, a leaver until D periods after it left)."""
    problem = get_problem(state)
    params = problem.params
    meta = get_meta(state)
    k = period_of(params, int(now)) - 1  # the last period that has ended
    if k <= meta.period or has_signed(k):
        return None
    committers = committers_at(state, params, k)
    if keys.public_key not in committers or is_ejected(state, keys.public_key):
        return None
    end = period_end(params, k)
    in_turn = in_turn_committer(params, k, committers) == keys.public_key
    if not in_turn and now < end + params.grace:
        return None
    return CommitPlan(period=k, in_turn=in_turn, timestamp=max(int(now), end))


def _stub_header(state: State, plan: CommitPlan, keys: KeyPair) -> BlockHeader:
    meta = get_meta(state)
    return BlockHeader(get_problem(state).chain_id, meta.height + 1, state.head, C.KIND_IMPROVEMENT,
                       plan.period, plan.timestamp, keys.public_key, C.ZERO_HASH, C.ZERO_HASH, EMPTY_SIGNATURE)


def select_transactions(state: State, pool: Mempool, header: BlockHeader, limit: int = C.MAX_TXS_PER_BLOCK) -> list[Transaction]:
    """Pending transactions by fee per byte that execute in order on top of ``state`` and fit the
    block's byte budget (``chain.limits``). Each sender's txs go in nonce order, so a sender's next
    tx competes with its fee once the one before it is in; a sender whose next tx does not execute
    or fit contributes nothing more (its later nonces could not run without it)."""
    scratch = state.copy()
    problem = get_problem(scratch)
    queues: dict[bytes, deque[Transaction]] = {}
    for tx in pool.pending_txs(state):  # by sender, then nonce
        queues.setdefault(tx.sender, deque()).append(tx)
    heap = [_fee_entry(q[0]) for q in queues.values()]
    heapq.heapify(heap)
    chosen: list[Transaction] = []
    used = 0
    while heap and len(chosen) < limit:
        _, _, sender = heapq.heappop(heap)
        queue = queues[sender]
        tx = queue.popleft()
        size = tx_size(tx)
        if not fits_tx_budget(used, size):
            continue
        trial = scratch.copy()
        try:
            process_transaction(trial, problem, header, tx)
        except ChainError:
            continue
        scratch = trial
        chosen.append(tx)
        used += size
        if queue:
            heapq.heappush(heap, _fee_entry(queue[0]))
    return chosen


def _fee_entry(tx: Transaction) -> tuple[Fraction, bytes, bytes]:
    """Heap key: highest fee per byte first; ties by tx hash, so every committer orders alike."""
    fee, size = fee_rank(tx)
    return -Fraction(fee, size), tx.hash, tx.sender


def select_settlement(state: State, pool: Mempool, period: int) -> Reveal | None:
    pending = get_meta(state).pending
    if pending is None or period != pending.period + 1:
        return None
    return pool.reveals.get(pending.anchor.poi.hash)


def select_anchor(state: State, pool: Mempool, header: BlockHeader) -> Anchor | None:
    """This period's PoI with the most votes that pass the chain's own anchor checks."""
    problem = get_problem(state)
    params = problem.params
    candidates: list[tuple[int, bytes, Anchor]] = []
    for poi in pool.pois.get(header.period, {}).values():
        if poi.parent != header.parent:
            continue
        votes = [v for v in pool.votes.get(poi.hash, {}).values() if v.parent == poi.parent and v.period == poi.period]
        votes.sort(key=lambda v: v.validator)
        anchor = _largest_valid_anchor(state, problem, header, poi, votes[: params.max_votes])
        if anchor is not None:
            candidates.append((len(anchor.votes), poi.hash, anchor))
    if not candidates:
        return None
    # Most votes; ties by the lowest PoI hash, so honest committers agree.
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return candidates[0][2]


def _largest_valid_anchor(state: State, problem, header: BlockHeader, poi: PoI, votes: list) -> Anchor | None:  # type: ignore[no-untyped-def]
    """Drop votes the chain would refuse (one at a time) until the anchor is valid."""
    votes = list(votes)
    while votes:
        anchor = Anchor(poi, tuple(votes))
        trial = state.copy()
        try:
            process_anchor(trial, problem, header, anchor)
            return anchor
        except ChainError as exc:
            bad = exc.values.get("validator") if hasattr(exc, "values") else None
            if bad is None:
                return None  # the PoI itself is not anchorable
            votes = [v for v in votes if v.validator != bad]
    return None


def build_block(state: State, pool: Mempool, keys: KeyPair, now: float, env: Env,
                has_signed: Callable[[int], bool] = lambda period: False) -> Block | None:
    """Seal the next block if this committer may and there is something to do.

    ``has_signed(k)``: whether this key already signed a block for period ``k`` (the
    node answers from its store, which indexes every block by committer and period).
    """
    plan = plan_commit(state, keys, now, has_signed)
    if plan is None:
        return None
    header = _stub_header(state, plan, keys)
    txs = select_transactions(state, pool, header)
    settlement = select_settlement(state, pool, plan.period)
    # The anchor is checked on the state after this block's transactions and settlement.
    after = state.copy()
    problem = get_problem(after)
    for tx in txs:
        process_transaction(after, problem, header, tx)
    anchor = select_anchor(_after_settlement(after, header, settlement, env), pool, header)
    meta = get_meta(state)
    season_reveal = None
    if meta.season is not None:
        season_reveal = pool.season_reveals.get(meta.season.index)
    if not txs and settlement is None and anchor is None and meta.pending is None and season_reveal is None:
        return None  # nothing to do: skip the period
    try:
        block, _ = build_improvement_block(
            state, keys, period=plan.period, timestamp=plan.timestamp, env=env,
            transactions=txs, settlement=settlement, season_reveal=season_reveal, anchor=anchor)
    except ChainError:
        # The season reveal is the only part not pre-checked; retry without it.
        block, _ = build_improvement_block(
            state, keys, period=plan.period, timestamp=plan.timestamp, env=env,
            transactions=txs, settlement=settlement, anchor=anchor)
    return block


def _after_settlement(state: State, header: BlockHeader, settlement: Reveal | None, env: Env) -> State:
    from chain.settlement import process_settlement

    trial = state.copy()
    try:
        process_settlement(trial, get_problem(trial), header, settlement, env)
    except ChainError:
        trial = state.copy()
        process_settlement(trial, get_problem(trial), header, None, env)
    return trial


def build_problem(proposal: Proposal, keys: KeyPair, now: float, env: Env,
                  tuples: Sequence[TestTuple] = ()) -> Block | None:
    """The Problem block, once T_p has ended, by the in-turn committer of period 0 (or any after grace),
    with the extra test tuples received during T_p (``tuples``) that are valid with the content at hand."""
    params = proposal.params
    if keys.public_key not in params.committers:
        return None
    end = period_end(params, 0)
    in_turn = in_turn_committer(params, 0) == keys.public_key
    if now < end or (not in_turn and now < end + params.grace):
        return None
    extra = includable_tuples(proposal, tuples, env)
    block, _ = build_problem_block(proposal, keys, max(int(now), end), env, extra_tuples=extra)
    return block


def includable_tuples(proposal: Proposal, tuples: Sequence[TestTuple], env: Env) -> list[TestTuple]:
    """The pooled tuples the Problem block can carry, in order: a tuple whose DEL has not arrived
    by the end of T_p (or that no longer fits after the others) is left out rather than stall the chain."""
    kept: list[TestTuple] = []
    for tup in tuples:
        try:
            check_extra_tuple(proposal, (proposal.first_tuple, *kept), tup, env)
        except ChainError as exc:  # MissingContent included: the block cannot wait for it
            log.warning("leaving test tuple %s out of the Problem block: %s", tup.z_id.hex()[:12], exc)
            continue
        kept.append(tup)
    return kept
