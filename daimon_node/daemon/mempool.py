"""Pending transactions, proofs, votes and reveals of one chain: bounded and deduplicated.

Every ``add_*`` checks what can be checked against the head state now (chain,
signature, nonce window, bonds, registrations, period window) and returns a
``Verdict``: ``ACCEPT`` (kept, relay it), ``REJECT`` (invalid: penalise the
sender), ``IGNORE`` (duplicate, stale or over a cap: drop quietly). The
committer re-checks everything by executing the block, so the pool only has to
keep garbage out, not be the last word.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from fractions import Fraction

from chain.consensus import is_in_window, period_of
from chain.crypto import address_bytes
from chain.labels import labels_hash
from chain.limits import check_fee, fee_rank
from chain.signing import is_valid_signature
from chain.state import State, get_account, get_bond, get_meta, get_problem
from chain.constants import KIND_IMPROVEMENT, ZERO_HASH
from chain.errors import (
    BalanceOverflow,
    ChainError,
    FeeTooLow,
    InvalidAnchor,
    MissingContent,
    TupleWindowClosed,
)
from chain.anchor import check_model_claimed
from chain.bonds import check_vote_bond
from chain.txs import process_transaction
from chain.header import BlockHeader
from chain.payloads import Transaction, Transfer
from chain.outcome import Env
from chain.proofs import PoI, Reveal, SeasonReveal, Vote
from chain.tuples import check_extra_tuple, check_tuple_window
from chain.types import Proposal, TestTuple

MAX_TXS: Final[int] = 10_000
MAX_TXS_PER_SENDER: Final[int] = 64
NONCE_WINDOW: Final[int] = 64
MAX_POIS_PER_PERIOD: Final[int] = 64
MAX_VOTES_PER_POI: Final[int] = 256


def _per_byte(tx: Transaction) -> Fraction:
    fee, size = fee_rank(tx)
    return Fraction(fee, size)


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass
class Mempool:
    """The pools of one chain; keys are hashes, values are decoded objects."""

    chain_id: bytes
    clock_drift_s: float = 2.0
    txs: "OrderedDict[bytes, Transaction]" = field(default_factory=OrderedDict)
    # (fee per byte, hash) of every tx taken, cheapest first; entries of txs that left are skipped
    tx_rates: list[tuple[Fraction, bytes]] = field(default_factory=list)
    pois: dict[int, dict[bytes, PoI]] = field(default_factory=dict)  # period -> hash -> PoI
    votes: dict[bytes, dict[bytes, Vote]] = field(default_factory=dict)  # PoI hash -> validator -> Vote
    reveals: dict[bytes, Reveal] = field(default_factory=dict)  # PoI hash -> Reveal
    season_reveals: dict[int, SeasonReveal] = field(default_factory=dict)
    test_tuples: list[TestTuple] = field(default_factory=list)  # extra tuples received during T_p, in order
    reasons: dict[str, int] = field(default_factory=dict)  # rejection reasons, for metrics
    last_reason: str = ""  # why the last add_* call did not accept (for RPC replies)
    last_rule: str = ""  # the chain rule (its error class) the last refusal broke, "" if none

    def _reject(self, reason: str, rule: str = "") -> Verdict:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.last_reason, self.last_rule = reason, rule
        return Verdict.REJECT

    def _ignore(self, reason: str) -> Verdict:
        self.last_reason, self.last_rule = reason, ""
        return Verdict.IGNORE

    def _reject_rule(self, prefix: str, exc: ChainError) -> Verdict:
        """Reject for a broken chain rule; the reason names the rule's class, never its text."""
        rule = type(exc).__name__
        return self._reject(f"{prefix}_{rule}", rule)

    # --- transactions ----------------------------------------------------------------
    def add_tx(self, tx: Transaction, state: State) -> Verdict:
        if tx.hash in self.txs:
            return self._ignore("already known")
        if tx.chain_id != self.chain_id:
            return self._reject("tx_wrong_chain")
        problem = get_problem(state)
        try:
            check_fee(problem.params, tx)
        except FeeTooLow as exc:
            return self._reject_rule("tx", exc)
        if not is_valid_signature(tx, self.chain_id):
            return self._reject("tx_bad_signature")
        acct = get_account(state, address_bytes(tx.sender))
        if tx.nonce < acct.nonce:
            return self._ignore("nonce too low (already included)")
        if tx.nonce >= acct.nonce + NONCE_WINDOW:
            return self._reject("tx_nonce_too_far")
        if tx.fee + (tx.payload.amount if isinstance(tx.payload, Transfer) else 0) > acct.balance:
            return self._reject("tx_cost_above_balance")
        if tx.nonce == acct.nonce:
            try:  # the next tx of its sender: run it on the head, as the committer will
                process_transaction(state.copy(), problem, self._next_header(state), tx)
            except BalanceOverflow as exc:  # would credit past the amount bound
                return self._reject_rule("tx", exc)
            except ChainError:
                pass  # may still execute after other txs land; the committer decides
        if sum(1 for t in self.txs.values() if t.sender == tx.sender) >= MAX_TXS_PER_SENDER:
            return self._ignore("too many pending txs from this sender")
        if len(self.txs) >= MAX_TXS and not self._evict_cheaper_than(tx):
            return self._ignore("pool full of txs paying as much per byte")
        self.txs[tx.hash] = tx
        heapq.heappush(self.tx_rates, (_per_byte(tx), tx.hash))
        return Verdict.ACCEPT

    def _evict_cheaper_than(self, tx: Transaction) -> bool:
        """Make room by dropping the pooled tx paying least per byte, if it pays less than ``tx``:
        a flood of minimum-fee txs cannot push a better-paying one out of a full pool."""
        while self.tx_rates and self.tx_rates[0][1] not in self.txs:
            heapq.heappop(self.tx_rates)  # left the pool (included, pruned)
        if not self.tx_rates or self.tx_rates[0][0] >= _per_byte(tx):
            return False
        _, cheapest = heapq.heappop(self.tx_rates)
        del self.txs[cheapest]
        return True

    def _next_header(self, state: State) -> BlockHeader:
        """A stand-in header for the next block (what a tx sees when run on the head)."""
        meta = get_meta(state)
        return BlockHeader(self.chain_id, meta.height + 1, state.head, KIND_IMPROVEMENT, meta.period + 1, 0,
                           b"\x00" * 32, ZERO_HASH, ZERO_HASH, b"\x00" * 64)

    def pending_txs(self, state: State) -> list[Transaction]:
        """Transactions not yet included, ordered by sender then nonce."""
        out = []
        for tx in self.txs.values():
            if tx.nonce >= get_account(state, address_bytes(tx.sender)).nonce:
                out.append(tx)
        return sorted(out, key=lambda t: (t.sender, t.nonce))

    # --- proofs, votes, reveals ---------------------------------------------------------
    def add_poi(self, poi: PoI, state: State, now: float) -> Verdict:
        params = get_problem(state).params
        if poi.hash in self.pois.get(poi.period, {}):
            return self._ignore("already known")
        if poi.chain_id != self.chain_id:
            return self._reject("poi_wrong_chain")
        if not is_in_window(params, poi.period, int(now), int(self.clock_drift_s)):
            return self._ignore(f"PoI for period {poi.period} outside its period")  # not provably invalid
        if not is_valid_signature(poi, self.chain_id):
            return self._reject("poi_bad_signature")
        try:
            check_model_claimed(state, poi, get_meta(state).height + 1)
        except InvalidAnchor as exc:
            return self._reject_rule("poi", exc)
        bucket = self.pois.setdefault(poi.period, {})
        if len(bucket) >= MAX_POIS_PER_PERIOD:
            return self._ignore("too many PoIs this period")
        bucket[poi.hash] = poi
        return Verdict.ACCEPT

    def find_poi(self, poi_hash: bytes) -> PoI | None:
        for bucket in self.pois.values():
            if poi_hash in bucket:
                return bucket[poi_hash]
        return None

    def add_vote(self, vote: Vote, state: State, now: float) -> Verdict:
        params = get_problem(state).params
        votes = self.votes.setdefault(vote.poi_hash, {})
        if vote.validator in votes:
            return self._ignore("already known")
        if vote.chain_id != self.chain_id:
            return self._reject("vote_wrong_chain")
        if not is_in_window(params, vote.period, int(now), int(self.clock_drift_s)):
            return self._ignore(f"vote for period {vote.period} outside its period")
        if not is_valid_signature(vote, self.chain_id):
            return self._reject("vote_bad_signature")
        try:
            check_vote_bond(params, vote.validator, get_bond(state, vote.validator), get_meta(state).height + 1)
        except InvalidAnchor as exc:
            return self._reject_rule("vote", exc)
        if len(votes) >= MAX_VOTES_PER_POI:
            return self._ignore("too many votes for this PoI")
        votes[vote.validator] = vote
        return Verdict.ACCEPT

    def add_reveal(self, reveal: Reveal, state: State, now: float) -> Verdict:
        """Only the reveal of the anchored PoI, in the period after its anchor: earlier, the
        labels would leak before validators of a competing PoI have voted."""
        if reveal.poi_hash in self.reveals:
            return self._ignore("already known")
        if reveal.chain_id != self.chain_id:
            return self._reject("reveal_wrong_chain")
        if not is_valid_signature(reveal, self.chain_id):
            return self._reject("reveal_bad_signature")
        pending = get_meta(state).pending
        if pending is None or pending.anchor.poi.hash != reveal.poi_hash:
            return self._ignore("reveal for a PoI that is not anchored")
        params = get_problem(state).params
        if not is_in_window(params, pending.period + 1, int(now), int(self.clock_drift_s)):
            return self._ignore("reveal outside the period after its anchor")
        poi = pending.anchor.poi
        if poi.prover != reveal.prover or labels_hash(reveal.labels) != poi.labels_hash:
            return self._reject("reveal_mismatch")
        self.reveals[reveal.poi_hash] = reveal
        return Verdict.ACCEPT

    def add_season_reveal(self, reveal: SeasonReveal, state: State) -> Verdict:
        if reveal.season in self.season_reveals:
            return self._ignore("already known")
        problem = get_problem(state)
        if reveal.chain_id != self.chain_id or address_bytes(reveal.contributor) != problem.contributor:
            return self._reject("season_reveal_not_contributor")
        if not is_valid_signature(reveal, self.chain_id):
            return self._reject("season_reveal_bad_signature")
        self.season_reveals[reveal.season] = reveal
        return Verdict.ACCEPT

    def add_test_tuple(self, tup: TestTuple, proposal: Proposal, *, started: bool, now: float, env: Env) -> Verdict:
        """An extra test tuple during T_p (``chain.tuples``' rules; its DEL may still be on its way)."""
        if tup in self.test_tuples:
            return self._ignore("already known")
        try:
            check_tuple_window(proposal.params, started=started, now=now)
        except TupleWindowClosed:
            return self._ignore("T_p is over")  # late, not forged: nothing to penalise
        try:
            check_extra_tuple(proposal, (proposal.first_tuple, *self.test_tuples), tup, env)
        except MissingContent:
            pass  # signed by the contributor: kept; its DEL is checked once fetched (``build_problem``)
        except ChainError as exc:
            return self._reject_rule("tuple", exc)
        self.test_tuples.append(tup)
        return Verdict.ACCEPT

    # --- upkeep -----------------------------------------------------------------------
    def prune(self, state: State, now: float) -> None:
        """Drop what the head made stale: included txs, proofs of ended periods."""
        params = get_problem(state).params
        current = period_of(params, int(now))
        for h, tx in list(self.txs.items()):
            if tx.nonce < get_account(state, address_bytes(tx.sender)).nonce:
                del self.txs[h]
        self.drop_unexecutable(state)
        if len(self.tx_rates) > 2 * len(self.txs):  # forget the rates of txs that left
            self.tx_rates = [(rate, h) for rate, h in self.tx_rates if h in self.txs]
            heapq.heapify(self.tx_rates)
        for period in [p for p in self.pois if p < current - 2]:
            for poi_hash in self.pois.pop(period):
                self.votes.pop(poi_hash, None)
                self.reveals.pop(poi_hash, None)
        meta = get_meta(state)
        if meta.season is not None:
            for season in [s for s in self.season_reveals if s < meta.season.index]:
                del self.season_reveals[season]

    def drop_unexecutable(self, state: State) -> None:
        """Drop a sender's txs from the first that no longer executes on the head (its balance
        was spent, its digest taken...): otherwise it and every later nonce would wait forever."""
        problem = get_problem(state)
        header = self._next_header(state)
        scratch = state.copy()
        broken: set[bytes] = set()
        gapped: set[bytes] = set()
        for tx in self.pending_txs(state):
            if tx.sender in broken:
                self.txs.pop(tx.hash, None)
                continue
            if tx.sender in gapped or tx.nonce != get_account(scratch, address_bytes(tx.sender)).nonce:
                gapped.add(tx.sender)  # an earlier nonce may still arrive: keep waiting
                continue
            trial = scratch.copy()
            try:
                process_transaction(trial, problem, header, tx)
            except ChainError:
                broken.add(tx.sender)
                self.txs.pop(tx.hash, None)
                continue
            scratch = trial

    def sizes(self) -> dict[str, int]:
        return {
            "txs": len(self.txs),
            "pois": sum(len(b) for b in self.pois.values()),
            "votes": sum(len(v) for v in self.votes.values()),
            "reveals": len(self.reveals),
        }
