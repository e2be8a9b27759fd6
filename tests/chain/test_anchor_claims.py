"""An anchored PoI must claim to beat the d_c in force when it is anchored."""

from __future__ import annotations

import pytest

from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.errors import InvalidAnchor
from chain.state import get_meta
from chain.types import Anchor


def test_invalid_stale_poi_after_a_better_settlement() -> None:
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    good, weak = corrupt(d.truth, 0.05, 10, 1), corrupt(d.truth, 0.3, 10, 2)
    better = d.improver_keys[0]
    stale = d.improver_keys[1]
    digest_weak = b"\x11" * 32
    d.commit(transactions=[d.register(stale, digest_weak)])
    d.improve(better, good)  # registers, anchors and settles the good model
    assert get_meta(d.state).d_c[0] < 10**9
    # The weak PoI would have improved on the genesis d_c, but not on the settled one.
    poi, reveal = d.prove(stale, digest_weak, weak)
    votes = tuple(d.vote(v, poi, reveal) for v in d.validator_keys)
    with pytest.raises(InvalidAnchor, match="does not claim to beat d_c"):
        d.commit(anchor=Anchor(poi, votes))  # invalid: stale claim


def test_valid_poi_claim_is_anchored() -> None:
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    anchored, settled = d.improve(d.improver_keys[0], corrupt(d.truth, 0.2, 10, 3))
    assert anchored.body.anchor is not None  # type: ignore[union-attr]
    assert d.receipts[-1].settlement is not None and d.receipts[-1].settlement.outcome == "settled"
