"""Findings 10 and 11: amounts past 2^128 and objects past the network caps.

10. Before the fix, a problem could allocate more than an amount encodes; a transfer that
    pushed a balance past 2^128 was taken by the pool and then stalled the committer (a
    ``DecodeError`` escaped ``build_block`` when the state root was computed). Now genesis plus
    everything mintable is bounded when the problem is created, and a credit past the bound is
    an invalid tx (``BalanceOverflow``) that the pool refuses and the committer skips.
11. Before the fix, a problem could allow a PoI (``max_ambiguous`` = 100,000: about 800 KB)
    or a reveal (300,000 labels) that no proofs topic (256 KiB) carries, so an honest
    improvement was valid and could never settle. Now the largest PoI, reveal, season reveal,
    vote and block a problem allows must fit the caps the node uses (``chain.constants``).
"""

from __future__ import annotations

import dataclasses

import pytest

from adversary import commit_from_pool, pool_of
from chain import constants as C
from chain.builder import make_transaction
from chain.devnet import Devnet, DevnetConfig
from chain.errors import BalanceOverflow, MinimumFeeMissing, SizeBeyondNetworkCap, SupplyTooLarge
from chain.limits import check_message_sizes, largest_block_bytes, largest_poi_bytes, mintable_bound
from chain.records import Account
from chain.state import get_account, get_meta, get_problem, set_account
from chain.problem_block import validate_params
from chain.payloads import NewHoldout, OfferService, RedeemVoucher, Transfer, Voucher
from chain.proofs import SealedHoldout
from chain.types import Allocation
from daimon_node.daemon.mempool import Verdict
from factories import accept, account, apply, assert_supply, draft_block, new_devnet, next_block


# --- finding 10: amounts ---------------------------------------------------------------------
def test_genesis_past_the_amount_bound_is_refused():
    """Two allocations that each encode, but whose sum (plus what can be minted) does not."""
    d = new_devnet()
    half = (C.MAX_AMOUNT + 1) // 2
    genesis = (Allocation(d.improver_keys[0].address_bytes, half), Allocation(d.improver_keys[1].address_bytes, half))
    with pytest.raises(SupplyTooLarge) as err:
        validate_params(dataclasses.replace(d.params, genesis=genesis))
    assert err.value.genesis == 2 * half and err.value.mintable == mintable_bound(d.params)
    # The largest genesis that leaves room for everything mintable is valid.
    room = C.MAX_AMOUNT - mintable_bound(d.params)
    validate_params(dataclasses.replace(d.params, genesis=(Allocation(d.creator.address_bytes, room),)))


def test_devnet_with_an_overflowing_genesis_never_starts():
    d = Devnet(DevnetConfig(genesis_amount=C.MAX_AMOUNT // 2))  # 12 accounts: far past the bound
    with pytest.raises(SupplyTooLarge):
        d.start()


def rich_state(d, keys):
    """``keys`` holds all but a few units of the largest amount: a state no valid problem
    reaches now (genesis is bounded), made by hand to test the credit rule behind the bound."""
    acct = get_account(d.state, keys.address_bytes)
    set_account(d.state, keys.address_bytes, Account(C.MAX_AMOUNT - 5 - acct.locked, acct.locked, acct.nonce))


def test_credit_past_the_bound_is_refused_by_pool_chain_and_committer():
    d = new_devnet()
    rich, sender, other = d.improver_keys[0], d.improver_keys[1], d.improver_keys[2]
    rich_state(d, rich)
    overflow = d.tx(sender, Transfer(rich.address_bytes, 6))  # one unit past MAX_AMOUNT
    fine = d.tx(other, Transfer(sender.address_bytes, 1))
    with pytest.raises(BalanceOverflow) as err:
        apply(d, draft_block(d, transactions=[overflow]))
    assert (err.value.address, err.value.amount, err.value.limit) == (rich.address_bytes, 6, C.MAX_AMOUNT)
    pool = pool_of(d)
    assert pool.add_tx(overflow, d.state) is Verdict.REJECT
    assert pool.last_reason == "tx_BalanceOverflow"
    pool.txs[overflow.hash] = overflow  # a pool that took it anyway: the committer must not stall
    assert pool.add_tx(fine, d.state) is Verdict.ACCEPT
    before = account(d, sender)
    block = commit_from_pool(d, pool)
    assert block is not None and block.body.transactions == (fine,)
    assert account(d, sender).balance == before.balance + 1  # the honest transfer landed
    assert account(d, rich).balance == C.MAX_AMOUNT - 5 - account(d, rich).locked


# --- finding 11: sizes -------------------------------------------------------------------------
def test_poi_beyond_the_proofs_topic_is_refused_at_problem_creation():
    """``max_ambiguous`` = 100,000: the largest PoI is about 800 KB, past 256 KiB."""
    d = Devnet(DevnetConfig(max_ambiguous=C.MAX_AMBIGUOUS))
    with pytest.raises(SizeBeyondNetworkCap) as err:
        d.start()
    assert err.value.kind == "PoI" and err.value.cap == C.MAX_PROOF_MESSAGE_BYTES
    assert err.value.size > 8 * C.MAX_AMBIGUOUS  # each ambiguous entry encodes in up to 8 bytes


def test_reveal_beyond_the_proofs_topic_is_refused_at_problem_creation():
    """A holdout of 150,000 labels: the reveal carries it twice (model and confirmed model), 300 KB."""
    d = Devnet(DevnetConfig(holdout_m=150_000))
    with pytest.raises(SizeBeyondNetworkCap) as err:
        d.start()
    assert err.value.kind == "reveal" and err.value.size > 2 * 150_000 > C.MAX_PROOF_MESSAGE_BYTES


def test_new_holdout_beyond_the_caps_is_an_invalid_tx():
    """The next season's holdout is checked like the first: a reveal of twice ``m_h`` labels
    must fit the proofs topic, so a contributor cannot seal a season no improvement can settle."""
    d = new_devnet(holdout_m=50)
    season = get_meta(d.state).season
    window_start = season.start_period + d.params.season_periods
    accept(d, next_block(d, season_reveal=d.season_reveal(), skip=window_start - d.period - 1))
    assert get_meta(d.state).season.holdout is None  # judged; the next season waits for its holdout
    m_h = C.MAX_PROOF_MESSAGE_BYTES // 2  # the reveal carries it twice, plus its envelope
    too_big = SealedHoldout(b"\x01" * 32, m_h, b"\x02" * 32)
    with pytest.raises(SizeBeyondNetworkCap) as err:
        apply(d, draft_block(d, transactions=[d.tx(d.creator, NewHoldout(too_big))]))
    assert err.value.kind == "reveal"
    d.nonces.pop(d.creator.public_key)
    fits = SealedHoldout(b"\x01" * 32, 300, b"\x02" * 32)
    accept(d, next_block(d, transactions=[d.tx(d.creator, NewHoldout(fits))]))  # the honest flow goes on
    assert get_meta(d.state).season.holdout == fits


def test_honest_problem_fits_every_cap_with_room():
    """The devnet's problem (m = 200, a holdout of 50): every object fits, the block by far."""
    d = new_devnet(holdout_m=50)
    problem = get_problem(d.state)
    check_message_sizes(problem.params, problem.tuples, 50)
    assert largest_poi_bytes(problem.params, problem.tuples, 50) < C.MAX_PROOF_MESSAGE_BYTES
    assert largest_block_bytes(problem.params, problem.tuples, 50) < C.MAX_BLOCK_MESSAGE_BYTES


def test_every_tx_kind_at_its_largest_fits_the_txs_topic():
    """The widest fields the codec allows: the largest tx is a few hundred bytes, under 16 KiB."""
    d = new_devnet()
    keys = d.improver_keys[0]
    widest = [
        OfferService(C.MAX_AMOUNT, b"\xff" * C.MAX_PEER_ID_BYTES, b"\xff" * 32),
        RedeemVoucher(Voucher(b"\xff" * 32, b"\xff" * 20, (1 << 32) - 1, C.MAX_AMOUNT, b"\xff" * 32, b"\xff" * 64)),
        NewHoldout(SealedHoldout(b"\xff" * 32, (1 << 32) - 1, b"\xff" * 32)),
        Transfer(b"\xff" * 20, C.MAX_AMOUNT),
    ]
    for payload in widest:
        tx = make_transaction(keys, d.chain_id, (1 << 64) - 1, payload, C.MAX_AMOUNT)
        assert len(tx.encode()) <= C.MAX_TX_MESSAGE_BYTES


def test_caps_fit_the_transport():
    """The block cap is what a sync item and a gossip frame (2 MiB less 4 KiB of envelope) carry."""
    assert C.MAX_BLOCK_MESSAGE_BYTES <= 2 * C.MIB - 4 * C.KIB
    assert C.MAX_PROOF_MESSAGE_BYTES * 3 + C.MAX_BLOCK_TX_BYTES < C.MAX_BLOCK_MESSAGE_BYTES
    assert_supply(new_devnet())


def test_problem_kit_refuses_what_the_chain_would_refuse():
    """``problem create`` checks the same rules before it writes or publishes anything."""
    from daimon_node.proofs.problem_errors import ProblemKitError
    from daimon_node.proofs.problem_params import check_problem

    d = new_devnet()
    tup = d.proposal.first_tuple
    check_problem(d.params, tup, [50])
    with pytest.raises(ProblemKitError) as err:
        check_problem(dataclasses.replace(d.params, max_ambiguous=C.MAX_AMBIGUOUS), tup, [50])
    assert isinstance(err.value.__cause__, SizeBeyondNetworkCap) and err.value.__cause__.kind == "PoI"
    with pytest.raises(ProblemKitError) as err:
        check_problem(dataclasses.replace(d.params, min_fee=0), tup, [50])
    assert isinstance(err.value.__cause__, MinimumFeeMissing)
