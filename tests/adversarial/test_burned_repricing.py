"""Finding 7 of issue 14: an honest improvement settled after a burned one.

Rewards are priced at settlement against the provisional ``d_c``; when the
improvement that set it burns at the judge, the next one stays priced against
its ``d`` (about -25% here), and the cheater's bond came back at settlement, so
trying cost it nothing. The defence: the judge pays each vested improvement (and
its voters) as if the burned ones had never settled, and a season's improver
bond stays locked until the judge, burning with an improvement that does not vest.
"""

from __future__ import annotations

from chain import constants as C
from chain.devnet import corrupt
from chain.rewards import improvement_reward, validator_reward
from chain.state import get_meta
from helpers import reveal_at_window, season_devnet, worth


def test_a_vested_improvement_is_paid_as_if_the_burned_one_never_settled():
    d = season_devnet()
    cheater, honest = d.improver_keys[1], d.improver_keys[0]
    people = (cheater, honest, *d.validator_keys)
    before = {k.public_key: worth(d, k) for k in people}
    # The cheater: 30% error on Z, random answers on Z_h (its claimed d is far from its e_h).
    d.improve(cheater, corrupt(d.truth, 0.3, 10, 1), corrupt(d.holdout_truth, 0.9, 10, 2))
    cheat = d.receipts[-1].settlement
    assert cheat.outcome == "settled"
    # The honest model: 20% error on Z and on Z_h; priced against the cheater's d at settlement.
    d.improve(honest, corrupt(d.truth, 0.2, 10, 3), corrupt(d.holdout_truth, 0.2, 10, 4))
    fair = d.receipts[-1].settlement
    assert fair.outcome == "settled"
    reveal_at_window(d)
    assert "1/2 improvements vested" in d.receipts[-1].season
    # As if the cheater had never settled: priced against the d_c the season started from.
    repriced = improvement_reward(fair.distances[0], C.PPB, d.params.reward_a, d.params.reward_scale)
    assert repriced > fair.improver_reward  # the underpayment the judge must make good
    assert worth(d, honest) == before[honest.public_key] + repriced - d.params.min_fee  # its registration fee
    for position, (addr, _) in enumerate(fair.validator_rewards, start=1):
        v = next(k for k in d.validator_keys if k.address_bytes == addr)
        assert worth(d, v) == before[v.public_key] + validator_reward(repriced, position)
    # The cheater gains nothing and loses its improver bond.
    assert worth(d, cheater) == before[cheater.public_key] - d.params.improver_bond - d.params.min_fee
    meta = get_meta(d.state)
    assert meta.confirmed.owner == honest.address_bytes and meta.d_c == fair.distances


def test_a_missed_reveal_returns_the_held_improver_bonds():
    """The contributor's failure is not the improvers': bonds held for the judge come back."""
    d = season_devnet()
    keys = d.improver_keys[0]
    before = worth(d, keys)
    d.improve(keys, corrupt(d.truth, 0.2, 10, 3), corrupt(d.holdout_truth, 0.2, 10, 4))
    season = get_meta(d.state).season
    late = season.start_period + d.params.season_periods + d.params.reveal_window
    d.commit(skip=late - d.period - 1)
    assert "reveal missed" in d.receipts[-1].season
    # its locked reward burned and was compensated from the contributor's bond; the bond is back
    assert worth(d, keys) >= before
    assert d.balance(keys)[1] == 0
