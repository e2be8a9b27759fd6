"""What the adversarial tests share: a season devnet, attempts that the chain may refuse, balances."""

from __future__ import annotations

import numpy as np

from chain.devnet import Devnet, DevnetConfig
from chain.errors import InvalidBlock
from chain.crypto import KeyPair
from chain.labels import array_to_labels
from chain.season import holdout_commitment
from chain.state import get_meta
from chain.payloads import NewHoldout
from chain.proofs import SealedHoldout
from chain.types import Block


def season_devnet(**kw: object) -> Devnet:
    """Seasons of 8 periods on a 400-label test set and a 300-label holdout (margin 1%)."""
    cfg: dict[str, object] = dict(m=400, holdout_m=300, season_periods=8, reveal_window=2,
                                  holdout_margin_ppb=10_000_000, consistency_ppb=60_000_000)
    cfg.update(kw)
    d = Devnet(DevnetConfig(**cfg))  # type: ignore[arg-type]
    d.start()
    d.bond_validators()
    return d


def try_commit(d: Devnet, **block: object) -> Block | None:
    """The attacker's block if the chain accepts it, else None (the attempt was refused)."""
    nonces = dict(d.nonces)
    try:
        return d.commit(**block)  # type: ignore[arg-type]
    except InvalidBlock:
        d.nonces = nonces
        return None


def worth(d: Devnet, keys: KeyPair) -> int:
    """Everything an account holds, spendable and locked."""
    spendable, locked = d.balance(keys)
    return spendable + locked


def reveal_at_window(d: Devnet) -> None:
    """The contributor opens the season's holdout in the first period of its window."""
    season = get_meta(d.state).season
    end = season.start_period + d.params.season_periods
    d.commit(season_reveal=d.season_reveal(), skip=max(0, end - d.period - 1))


def open_next_season(d: Devnet, seed: int, m_h: int = 300) -> np.ndarray:
    """Seal a fresh holdout of ``m_h`` labels; return them (the contributor's secret)."""
    truth = np.random.default_rng(seed).integers(0, d.cfg.num_classes, m_h)
    d.holdout_salt = b"season-%d" % seed
    d.holdout_truth = truth
    sealed = SealedHoldout(b"\x23" * 32, m_h, holdout_commitment(d.holdout_salt, array_to_labels(truth)))
    d.commit(transactions=[d.tx(d.creator, NewHoldout(sealed))])
    return truth
