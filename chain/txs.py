"""Transactions: the checks every one passes (chain, fee, signature, nonce) and the kinds that
need no module of their own (transfer, model claim, offer, rating, equivocation report).
"""

from __future__ import annotations

from dataclasses import replace

from .bonds import process_register_validator, process_withdraw_bond
from .channels import process_close_channel, process_open_channel, process_redeem_voucher
from .committers import eject_committer, is_committer_key, process_leave_committer, process_register_committer
from .crypto import address_bytes as address_of
from .errors import InvalidEquivocationReport, InvalidTransaction, ModelClaimTaken
from .header import BlockHeader
from .holdouts import process_new_holdout
from .limits import check_fee
from .payloads import (
    CloseChannel,
    LeaveCommitter,
    NewHoldout,
    OfferService,
    OpenChannel,
    Rate,
    RedeemVoucher,
    RegisterCommitter,
    RegisterDigest,
    RegisterValidator,
    ReportEquivocation,
    Transaction,
    Transfer,
    WithdrawBond,
)
from .records import Account, DigestRecord, Ejection, Offer, ProblemRecord, RatingMark, Reputation
from .signing import EMPTY_SIGNATURE, is_valid_signature
from .state import (
    State,
    credit,
    get_account,
    get_digest,
    get_meta,
    get_rating_mark,
    get_reputation,
    is_ejected,
    set_account,
    set_digest,
    set_ejection,
    set_meta,
    set_offer,
    set_rating_mark,
    set_reputation,
)


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


