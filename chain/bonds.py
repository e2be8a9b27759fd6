"""Validator bonds: placing, withdrawing, and the stake a bond may vote with (docs/protocol.md
"Exits, locked funds and parameter ranges").
"""

from __future__ import annotations

from dataclasses import replace

from .crypto import address_bytes as address_of
from .errors import (
    BondBelowMinimum,
    BondStillUnbonding,
    InvalidAnchor,
    InvalidTransaction,
    NoBondToWithdraw,
    ValidatorAlreadyBonded,
)
from .header import BlockHeader
from .records import Bond, ProblemRecord
from .state import State, get_bond, get_meta, lock, set_bond, set_meta, unlock
from .types import ProblemParams


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


