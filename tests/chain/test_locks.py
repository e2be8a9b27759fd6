"""``chain.locks``: each kind of locked funds is named with the period it can come back from, and
the parts add up to ``Account.locked`` exactly (nothing locked goes unexplained)."""

from __future__ import annotations

from chain.crypto import KeyPair
from chain.locks import (
    CHANNEL_DEPOSIT,
    CONTRIBUTOR_BOND,
    IMPROVER_BOND,
    SEASON_REWARD,
    UNBONDING,
    VALIDATOR_BOND,
    locked_parts,
)
from chain.season import season_end
from chain.state import get_meta
from chain.payloads import OpenChannel, WithdrawBond
from factories import account, accept, make_proof, new_devnet, next_block


def parts_match_account(d, keys: KeyPair) -> dict[str, list]:
    funds = locked_parts(d.state, keys.address_bytes)
    assert funds.total == account(d, keys).locked, (funds, account(d, keys))
    by_kind: dict[str, list] = {}
    for part in funds.parts:
        by_kind.setdefault(part.kind, []).append(part)
    return by_kind


def test_validator_bond_then_unbonding_until_its_period(devnet):
    keys = devnet.validator_keys[0]
    [active] = parts_match_account(devnet, keys)[VALIDATOR_BOND]
    assert (active.amount, active.free_from, active.action) == (devnet.params.validator_bond, None, "validator unbond")
    block = accept(devnet, next_block(devnet, transactions=[devnet.tx(keys, WithdrawBond())]))
    [unbonding] = parts_match_account(devnet, keys)[UNBONDING]
    assert unbonding.free_from == block.header.period + devnet.params.unbonding_periods
    assert unbonding.action == "validator withdraw" and unbonding.ref == keys.public_key


def test_channel_deposit_less_redeemed_until_expiry(devnet):
    payer, runner = devnet.improver_keys[0], devnet.improver_keys[1]
    expires = devnet.period + 4
    accept(devnet, next_block(devnet, transactions=[devnet.tx(payer, OpenChannel(runner.address_bytes, 700, expires))]))
    [part] = parts_match_account(devnet, payer)[CHANNEL_DEPOSIT]
    assert (part.amount, part.free_from, part.ref) == (700, expires, runner.address_bytes)
    assert parts_match_account(devnet, runner) == {}  # the runner locks nothing


def test_improver_bond_held_until_settlement():
    d = new_devnet()
    proof = make_proof(d)
    block = accept(d, next_block(d, anchor=proof.anchor))
    [held] = parts_match_account(d, proof.keys)[IMPROVER_BOND]
    assert (held.amount, held.free_from) == (d.params.improver_bond, block.header.period + 1)
    accept(d, next_block(d, settlement=proof.reveal))
    assert parts_match_account(d, proof.keys) == {}  # settled without a season: bond back, reward spendable


def test_season_locks_rewards_bonds_and_the_contributor_bond_until_the_reveal():
    d = new_devnet(holdout_m=50)
    end = season_end(get_meta(d.state).season, d.params.season_periods)
    [contributor] = parts_match_account(d, d.creator)[CONTRIBUTOR_BOND]
    assert (contributor.amount, contributor.free_from) == (d.params.contributor_bond, end)
    proof = make_proof(d)
    accept(d, next_block(d, anchor=proof.anchor))
    accept(d, next_block(d, settlement=proof.reveal))
    improver = parts_match_account(d, proof.keys)
    [reward], [bond] = improver[SEASON_REWARD], improver[IMPROVER_BOND]
    assert reward.free_from == bond.free_from == end and reward.season == 0
    assert reward.amount == d.receipts[-1].settlement.improver_reward and bond.amount == d.params.improver_bond
    for voter in d.validator_keys:  # a validator's locked vote reward sits beside its bond
        kinds = parts_match_account(d, voter)
        assert set(kinds) == {VALIDATOR_BOND, SEASON_REWARD}
