"""Finding 4, digest squatting: a copy of a pending ``RegisterDigest`` blocks no one.

The attacker watches the pool, copies the prover's registration from its own (funded) key and
outbids it, so the copy lands first. A registration is the claim ``H(pk || digest)``: the copy
registers the prover's claim, the prover anchors and is paid in full, and the attacker has
spent fees for nothing and cannot anchor the model itself.
"""

from __future__ import annotations

import pytest

from adversary import commit_from_pool, pool_of
from chain.errors import ModelClaimTaken, ModelNotClaimed
from chain.consensus import period_start
from chain.state import get_digest, get_meta
from chain.proofs import model_claim
from chain.types import Anchor
from daimon_node.daemon.mempool import Verdict
from factories import account, apply, assert_supply, digest_for, draft_block, new_devnet


def test_copied_registration_blocks_no_one():
    d = new_devnet()
    prover, attacker = d.improver_keys[0], d.improver_keys[1]
    fee = d.params.min_fee
    labels = d.improving_labels(1)[0]
    digest = digest_for("honest model")
    pool = pool_of(d)
    honest_reg = d.register(prover, digest)
    assert pool.add_tx(honest_reg, d.state) is Verdict.ACCEPT
    # The attacker copies the payload from its own key and pays more, so the committer takes it first.
    copy = d.tx(attacker, honest_reg.payload, fee=10 * fee)
    assert pool.add_tx(copy, d.state) is Verdict.ACCEPT
    before = {k.public_key: account(d, k) for k in (prover, attacker)}
    block = commit_from_pool(d, pool)
    assert block.body.transactions[0] == copy  # the copy won the race ...
    assert honest_reg not in block.body.transactions  # ... and the prover's own tx no longer executes
    claim = get_digest(d.state, model_claim(prover.public_key, digest))
    assert claim is not None and claim.height == block.header.height  # ... but it claimed for the prover

    # The prover anchors and settles its model as if nothing had happened.
    poi, reveal = d.prove(prover, digest, labels)
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    d.commit(settlement=reveal)
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "settled" and get_meta(d.state).provisional.owner == prover.address_bytes
    after_prover = account(d, prover)
    assert after_prover.balance == before[prover.public_key].balance + settlement.improver_reward  # lost nothing
    # The attacker paid its fee and holds nothing more.
    assert account(d, attacker).balance == before[attacker.public_key].balance - 10 * fee
    assert_supply(d)


def test_copied_claim_does_not_let_the_copier_anchor():
    d = new_devnet()
    prover, attacker = d.improver_keys[0], d.improver_keys[1]
    digest = digest_for("honest model")
    honest_reg = d.register(prover, digest)
    d.commit(transactions=[d.tx(attacker, honest_reg.payload)])  # the copy is on chain, sent by the attacker
    # The attacker proves the same model under its own key: its claim was never registered.
    poi, reveal = d.prove(attacker, digest, d.improving_labels(1)[0])
    anchor = Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys))
    with pytest.raises(ModelNotClaimed) as err:
        apply(d, draft_block(d, anchor=anchor))
    assert err.value.prover == attacker.public_key and err.value.registered_height is None
    # The pool refuses the attacker's PoI with the same rule.
    pool = pool_of(d)
    assert pool.add_poi(poi, d.state, period_start(d.params, d.period + 1)) is Verdict.REJECT
    assert pool.last_reason == "poi_ModelNotClaimed"


def test_repeating_a_claim_on_chain_is_refused():
    """A second copy of a claim already on chain is an invalid tx (it would only burn a fee)."""
    d = new_devnet()
    prover, attacker = d.improver_keys[0], d.improver_keys[1]
    reg = d.register(prover, digest_for("m"))
    d.commit(transactions=[reg])
    with pytest.raises(ModelClaimTaken) as err:
        apply(d, draft_block(d, transactions=[d.tx(attacker, reg.payload)]))
    assert err.value.claim == model_claim(prover.public_key, digest_for("m"))


def test_two_provers_of_one_model_each_hold_a_claim():
    """Re-saving a model is not needed to claim it: each prover's claim is its own record."""
    d = new_devnet()
    a, b = d.improver_keys[0], d.improver_keys[1]
    digest = digest_for("shared")
    d.commit(transactions=[d.register(a, digest), d.register(b, digest)])
    assert get_digest(d.state, model_claim(a.public_key, digest)).owner == a.address_bytes
    assert get_digest(d.state, model_claim(b.public_key, digest)).owner == b.address_bytes
    # Either may prove it; the first anchored and settled moves d_c, so the other cannot repeat it.
    poi, reveal = d.prove(b, digest, d.improving_labels(1)[0])
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    d.commit(settlement=reveal)
    assert d.receipts[-1].settlement.outcome == "settled"
