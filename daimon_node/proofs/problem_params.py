"""A problem's parameters: the creator's options, the defaults that follow from the data, and
the chain's own checks run before anything is written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from chain import constants as C
from chain.constants import DEFAULT_MIN_FEE
from chain.crypto import KeyPair
from chain.season import season_mint_bound
from chain.types import Allocation, InputSpec, ProblemParams, TestTuple
from del_embed.integer import PPB

from daimon_node.proofs.problem_del import LEARNED_DEL_SECONDS, LEARNED_DEL_STEPS
from daimon_node.proofs.problem_errors import ProblemKitError

if TYPE_CHECKING:
    from daimon_node.proofs.splits import Dataset


@dataclass(frozen=True)
class ProblemOptions:
    """Everything ``create_problem`` needs besides data and keys; defaults suit a local testnet."""

    name: str = "digits"
    token_symbol: str = "DIG"
    decimals: int = 18
    t_p: int = 60
    t_b: int = 60
    grace: int = 30
    delta_ppb: int = 1_000_000  # an improvement must beat d_c by 0.1%
    reward_a: int = 3
    reward_scale: int = 10**18
    committers: tuple[bytes, ...] = ()  # empty: the creator alone
    validator_bond: int = 10**18
    improver_bond: int = 10**17
    contributor_bond: int | None = None  # None: what a season can mint (chain.season.season_mint_bound)
    min_fee: int = DEFAULT_MIN_FEE  # base units every tx pays at least (1e-6 token at 18 decimals)
    tie_margin_ppb: int = 100_000  # top-two probability gap of 1e-4
    max_ambiguous: int | None = None  # None: 1% of all labelled positions
    max_model_bytes: int = 16 * 2**20
    max_infer_ms: int = 10_000
    max_votes: int = 16
    quorum_ppb: int = C.DEFAULT_QUORUM_PPB  # 3 of 4 equal validators reach it: one may be offline
    unbonding_periods: int = 2
    season_periods: int = 4  # used only with a holdout
    reveal_window: int = 2
    # Chosen in docs/soundness.md from benchmarks/soundness_bench.py (the paired holdout test).
    holdout_margin_ppb: int | None = None  # None: the smallest gain a holdout of m_h resolves (detectable_margin)
    consistency_ppb: int | None = None  # None: measured on this DEL and x_t (calibrate_consistency)
    holdout_z_centi: int = 258
    genesis: tuple[tuple[bytes, int], ...] = ()  # (address, amount); empty: the creator gets 1000 tokens
    t0: int | None = None  # None: now
    del_kind: str = "random"  # "random": untrained random projection; "learned": trained with torch
    del_n: int = 256  # the random projection's embedding size
    del_steps: int = LEARNED_DEL_STEPS  # learned only
    del_max_seconds: float = LEARNED_DEL_SECONDS  # learned only; 0: no cap
    seed: int = 0
    committer_bond: int = 0  # > 0: keys may join the committer set by bond (issue 17); 0: the list is fixed
    committer_delay: int = 2  # periods before a committer set change takes effect (used when bonded)
    committer_miss_limit: int = 0  # in-turn slots missed in a row that remove a committer; 0: never


ASSUMED_DISCORD: Final[float] = 0.15  # share of holdout items on which a model and its reference differ


def detectable_margin(m_h: int, z_centi: int, discord: float = ASSUMED_DISCORD) -> int:
    """The smallest true gain (ppb, rounded up to 0.5%) the paired test passes with probability
    about Phi(z) while a model no better than its reference passes with at most 1 - Phi(z):
    ``2 z sqrt(b + c) / m_h`` with ``b + c = discord * m_h`` (``chain.season`` docstring)."""
    if m_h <= 0:
        return 0
    gain = 2 * (z_centi / 100) * np.sqrt(discord / m_h)
    return int(min(PPB, np.ceil(gain * 200) * PPB // 200))


def default_contributor_bond(reward_a: int, reward_scale: int) -> int:
    """What a season can mint; 0 when ``a`` or the scale is one the reward cannot price, which
    ``validate_params`` then refuses by that parameter's own name."""
    try:
        return season_mint_bound(reward_a, reward_scale)
    except ValueError:
        return 0


def build_params(opts: ProblemOptions, ds: "Dataset", creator: KeyPair, m: int, m_h: int,
                 consistency_ppb: int | None = None) -> ProblemParams:
    """``ProblemParams`` from options, filling defaults that depend on the data and the creator."""
    genesis = opts.genesis or ((creator.address_bytes, 1000 * 10**opts.decimals),)
    if consistency_ppb is None:
        consistency_ppb = opts.consistency_ppb if opts.consistency_ppb is not None else 100_000_000
    margin = opts.holdout_margin_ppb
    if margin is None:
        margin = detectable_margin(m_h, opts.holdout_z_centi)
    return ProblemParams(
        name=opts.name,
        input_spec=InputSpec(tuple(int(d) for d in ds.x.shape[1:]), str(ds.x.dtype), ds.value_low, ds.value_high,
                             ds.value_den),
        num_classes=ds.num_classes,
        token_symbol=opts.token_symbol,
        decimals=opts.decimals,
        t_p=opts.t_p,
        t_b=opts.t_b,
        grace=opts.grace,
        delta_ppb=opts.delta_ppb,
        reward_a=opts.reward_a,
        reward_scale=opts.reward_scale,
        committers=opts.committers or (creator.public_key,),
        validator_bond=opts.validator_bond,
        improver_bond=opts.improver_bond,
        contributor_bond=(opts.contributor_bond if opts.contributor_bond is not None
                          else default_contributor_bond(opts.reward_a, opts.reward_scale)),
        min_fee=opts.min_fee,
        tie_margin_ppb=opts.tie_margin_ppb,
        max_ambiguous=opts.max_ambiguous if opts.max_ambiguous is not None else max(1, (m + 2 * m_h) // 100),
        max_model_bytes=opts.max_model_bytes,
        committer_bond=opts.committer_bond,
        committer_delay=opts.committer_delay if opts.committer_bond or opts.committer_miss_limit else 0,
        committer_miss_limit=opts.committer_miss_limit,
        max_infer_ms=opts.max_infer_ms,
        max_votes=opts.max_votes,
        quorum_ppb=opts.quorum_ppb,
        unbonding_periods=opts.unbonding_periods,
        season_periods=opts.season_periods if m_h else 0,
        reveal_window=opts.reveal_window,
        holdout_margin_ppb=margin,
        consistency_ppb=consistency_ppb,
        holdout_z_centi=opts.holdout_z_centi,
        genesis=tuple(Allocation(a, v) for a, v in genesis),
        t0=int(time.time()) if opts.t0 is None else opts.t0,
    )


def check_params(params: ProblemParams, sealed: bool) -> None:
    """The chain's ``validate_params`` (and, with a sealed holdout, its season rule), as a
    ``ProblemKitError`` whose cause is the chain's typed error."""
    from chain.errors import InvalidProblem
    from chain.problem_block import check_holdout_season, validate_params

    try:
        validate_params(params)
        check_holdout_season(params, sealed)
    except InvalidProblem as exc:
        raise ProblemKitError(f"the chain would refuse this problem: {exc}") from exc


def check_problem(params: ProblemParams, tup: TestTuple, holdout_sizes: list[int]) -> None:
    """Refuse, before anything is written, a problem the chain would refuse: its parameters, and
    the largest PoI, reveal and block of every season against the network caps (docs/protocol.md)."""
    from chain.errors import InvalidProblem
    from chain.limits import check_message_sizes
    from chain.problem_block import validate_params

    try:
        validate_params(params)
        for m_h in holdout_sizes or [0]:
            check_message_sizes(params, (tup,), m_h)
    except InvalidProblem as exc:
        raise ProblemKitError(f"the chain would refuse this problem: {exc}") from exc  # the rule, typed
