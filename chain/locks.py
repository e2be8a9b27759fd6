"""What an account's locked balance is made of, and from which period each part comes back.

``Account.locked`` is one number; a user who sees tokens there needs to know why they
are locked and what returns them. Every rule that locks funds (``transition`` and
``season``) has a record in the state that says so, and ``locked_parts`` reads those
records back: a validator bond (active or unbonding), channel deposits, rewards minted
locked in a season, improver bonds held until a settlement or a season's judge, and the
contributor's bond behind a sealed holdout. The parts add up to ``Account.locked``
(``tests/chain/test_locks.py`` checks it for each kind); the RPC and ``daimon-node
status`` show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .crypto import address_bytes as address_of
from .records import Bond, Channel
from .season import season_end, season_improvements
from .state import PREFIX_BOND, PREFIX_CHANNEL, State, get_meta, get_problem, iter_records

# What locked an amount; each kind names the rule that returns it.
VALIDATOR_BOND: Final = "validator_bond"  # active: `validator unbond` starts unbonding
UNBONDING: Final = "unbonding"  # `validator withdraw` returns it from `free_from` on
CHANNEL_DEPOSIT: Final = "channel_deposit"  # `channel close` returns what was not redeemed, from `free_from` on
SEASON_REWARD: Final = "season_reward"  # vests (or burns) when the season's holdout is revealed
IMPROVER_BOND: Final = "improver_bond"  # returned at the settlement (or the season's judge), burned if it fails
CONTRIBUTOR_BOND: Final = "contributor_bond"  # returned when the season's holdout is revealed in its window


@dataclass(frozen=True)
class LockedPart:
    """One reason an amount is locked.

    ``free_from``: the first period in which it can come back (None: not before the owner
    acts, as an active bond). ``action``: the command that returns it ("" when the chain
    returns it by itself). ``ref``: what it is tied to (the runner's address for a channel,
    the validator key for a bond, ``b""`` otherwise); ``season``: the season index, or -1.
    """

    kind: str
    amount: int
    free_from: int | None
    action: str = ""
    ref: bytes = b""
    season: int = -1


@dataclass(frozen=True)
class LockedFunds:
    parts: tuple[LockedPart, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(p.amount for p in self.parts)


def bond_parts(state: State, address: bytes) -> list[LockedPart]:
    """Bonds are keyed by the validator's public key; an address may hold one per key."""
    parts = []
    for validator, bond in iter_records(state, PREFIX_BOND, Bond):
        if address_of(validator) != address:
            continue
        if bond.unbond_period == 0:
            parts.append(LockedPart(VALIDATOR_BOND, bond.amount, None, "validator unbond", validator))
        else:
            parts.append(LockedPart(UNBONDING, bond.amount, bond.unbond_period, "validator withdraw", validator))
    return parts


def channel_parts(state: State, payer: bytes) -> list[LockedPart]:
    return [LockedPart(CHANNEL_DEPOSIT, ch.deposit - ch.redeemed, ch.expires_period, "channel close", runner)
            for runner, ch in iter_records(state, PREFIX_CHANNEL + payer, Channel)
            if ch.is_open and ch.deposit > ch.redeemed]


def season_parts(state: State, address: bytes) -> list[LockedPart]:
    """Locked rewards, held improver bonds and the contributor's bond of the open season:
    all come back (or burn) at the holdout's reveal, from the season's end on."""
    meta = get_meta(state)
    season = meta.season
    parts: list[LockedPart] = []
    problem = get_problem(state)
    params = problem.params
    if season is not None and season.holdout is not None:
        end = season_end(season, params.season_periods)
        rewards = sum(e.amount for e in season.locked if e.address == address)
        if rewards:
            parts.append(LockedPart(SEASON_REWARD, rewards, end, season=season.index))
        held = sum(imp.improver_bond for imp in season_improvements(state, season) if imp.owner == address)
        if held:
            parts.append(LockedPart(IMPROVER_BOND, held, end, season=season.index))
        if problem.contributor == address:
            parts.append(LockedPart(CONTRIBUTOR_BOND, params.contributor_bond, end, season=season.index))
            # each season sealed ahead holds its own bond until its reveal; when it opens is not known yet
            parts += [LockedPart(CONTRIBUTOR_BOND, params.contributor_bond, None, season=season.index + k)
                      for k in range(1, season.sealed_ahead + 1)]
    pending = meta.pending
    if pending is not None and address_of(pending.anchor.poi.prover) == address:
        parts.append(LockedPart(IMPROVER_BOND, pending.improver_bond, pending.period + 1))
    return parts


def locked_parts(state: State, address: bytes) -> LockedFunds:
    """Every part of ``address``'s locked balance, bonds first."""
    return LockedFunds(tuple(bond_parts(state, address) + channel_parts(state, address) + season_parts(state, address)))


__all__ = ["LockedPart", "LockedFunds", "locked_parts", "VALIDATOR_BOND", "UNBONDING", "CHANNEL_DEPOSIT",
           "SEASON_REWARD", "IMPROVER_BOND", "CONTRIBUTOR_BOND"]
