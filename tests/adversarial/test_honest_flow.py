"""The honest flow through a node's pool and committer, under the new rules: every tx pays the
default minimum fee, the model is claimed as ``H(pk || digest)``, votes come from full bonds,
and the PoI settles with the improver and every validator paid exactly."""

from __future__ import annotations

from adversary import commit_from_pool, pool_of
from chain import constants as C
from chain.consensus import period_start
from chain.rewards import validator_reward
from chain.settlement import vote_order_key
from daimon_node.daemon.mempool import Verdict
from factories import account, assert_supply, digest_for, new_devnet


def test_register_anchor_settle_through_pool_and_committer_with_default_fees():
    d = new_devnet(min_fee=C.DEFAULT_MIN_FEE)
    prover = d.improver_keys[0]
    pool = pool_of(d)
    start = {k.public_key: account(d, k) for k in (prover, *d.validator_keys)}
    digest = digest_for("honest")
    assert pool.add_tx(d.register(prover, digest), d.state) is Verdict.ACCEPT
    commit_from_pool(d, pool)
    poi, reveal = d.prove(prover, digest, d.improving_labels(1)[0])
    now = period_start(d.params, d.period + 1)
    assert pool.add_poi(poi, d.state, now) is Verdict.ACCEPT
    for v in d.validator_keys:
        assert pool.add_vote(d.vote(v, poi, reveal), d.state, now) is Verdict.ACCEPT
    anchored = commit_from_pool(d, pool)
    assert anchored.body.anchor.poi == poi and len(anchored.body.anchor.votes) == len(d.validator_keys)
    assert pool.add_reveal(reveal, d.state, period_start(d.params, d.period + 1)) is Verdict.ACCEPT
    commit_from_pool(d, pool)
    settlement = d.receipts[-1].settlement
    assert settlement.outcome == "settled"
    assert account(d, prover).balance == (start[prover.public_key].balance - C.DEFAULT_MIN_FEE
                                          + settlement.improver_reward)
    order = sorted(d.validator_keys, key=lambda k: vote_order_key(poi, k.public_key))
    for position, v in enumerate(order, start=1):
        gained = account(d, v).balance - start[v.public_key].balance
        assert gained == validator_reward(settlement.improver_reward, position)
    assert_supply(d)
