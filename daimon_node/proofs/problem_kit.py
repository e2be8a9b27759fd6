"""The problem contributor's kit: dataset in, signed problem proposal out (docs/design.md §1, §4).

``create_problem`` splits a labelled dataset into

- a *train* split, published for improvers (``train_x.npy``, ``train_y.npy``);
- the *test* inputs ``Z`` (published, content-addressed) whose labels ``x_t``
  stay hidden: only ``y_t = f_int(x_t)`` is published, in the test tuple;
- optionally a *holdout* ``Z_h`` whose labels ``x_h`` are sealed by
  ``H(salt || x_h)`` in the proposal and opened at the end of a season.

It builds the DEL for ``x_t`` (trained with ``del_embed`` when ``del_steps > 0``,
otherwise an untrained MLP initialised as a random projection of the one-hot
labels, docs/design.md §9's baseline), signs the test tuple and the proposal, and
writes a problem directory:

    problem.json    human-readable summary (ids in hex, parameters, file names)
    proposal.bin    the proposal's canonical bytes (its SHA-256 is the chain id)
    <hex sha256>    each content file (Z, DEL, Z_h) named by its content id
    train_x.npy, train_y.npy

The secrets (``x_t``, ``x_h`` and the salt) go to a separate private file,
mode 0600, never into the published directory. ``load_problem`` reads a
problem directory back, checking every content file against its id, and
``np.load`` never unpickles (``allow_pickle=False``): the files come from peers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from chain import constants as C
from chain.constants import DEFAULT_MIN_FEE, ZERO_HASH
from chain.crypto import KeyPair
from chain.errors import DecodeError
from chain.labels import array_to_labels
from chain.season import holdout_commitment, season_mint_bound
from chain.signing import EMPTY_SIGNATURE, is_valid_signature, sign
from chain.proofs import SealedHoldout
from chain.types import Allocation, InputSpec, ProblemParams, Proposal, TestTuple
from del_embed.integer import (
    PPB,
    IntegerDEL,
    IntegerDELError,
    distance_ppb,
    f_int,
    integer_del_from_bytes,
    integer_del_to_bytes,
    random_projection_del as projection_del,
)

from daimon_node.errors import DaimonError

PROBLEM_FILE: Final[str] = "problem.json"
PROPOSAL_FILE: Final[str] = "proposal.bin"
TRAIN_X_FILE: Final[str] = "train_x.npy"
TRAIN_Y_FILE: Final[str] = "train_y.npy"
DATASETS: Final[tuple[str, ...]] = ("digits",)
SPLIT_SEED: Final[int] = 0


class ProblemKitError(DaimonError):
    """A dataset, a parameter or a problem directory is unusable."""


class TooFewItems(ProblemKitError):
    """The split would leave the test set, a season's holdout or the training part empty."""

    def __init__(self, items: int, part: str, needed: int) -> None:
        self.items, self.part, self.needed = items, part, needed
        super().__init__(f"{items} items are too few for the split: {part} needs at least {needed}; "
                         "add data or change --test-fraction/--holdout-fraction/--seasons")


# ---------------------------------------------------------------------------
# Datasets and splits
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, ...) as float32 or uint8, labels ``y`` (N,) in 0..C-1, and the value
    range ``value_low/value_den .. value_high/value_den`` (the problem's ``InputSpec``).

    ``class_names[c]`` is class ``c``'s original label (empty when the labels were ids already);
    user data is read into a ``Dataset`` by ``daimon_node.proofs.datasets``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    value_low: int
    value_high: int
    value_den: int = 1
    class_names: tuple[str, ...] = ()


def load_dataset(name: str) -> Dataset:
    """A bundled, offline dataset by name (scikit-learn's digits: 1,797 8x8 images, values 0..16)."""
    if name != "digits":
        raise ProblemKitError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", d.data.astype(np.float32), d.target.astype(np.int64), 10, 0, 16)


@dataclass(frozen=True)
class Split:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    holdout_x: np.ndarray | None
    holdout_y: np.ndarray | None


def split_dataset(ds: Dataset, *, test_fraction: float = 0.3, holdout_fraction: float = 0.0, seed: int = SPLIT_SEED) -> Split:
    """A seeded permutation cut into test, holdout and train (in that order).

    The same dataset, fractions and seed always give the same split, so the
    examples (``daimon_node.harness.examples``) can train on exactly the published train split.
    """
    n = len(ds.y)
    if not (0.0 < test_fraction <= 1.0 and 0.0 <= holdout_fraction < 1.0 and test_fraction + holdout_fraction <= 1.0):
        raise ProblemKitError(f"bad split fractions test={test_fraction} holdout={holdout_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_hold = int(round(holdout_fraction * n))
    if n_test < 1:
        raise TooFewItems(n, f"a test share of {test_fraction}", min_items(test_fraction))
    if holdout_fraction > 0 and n_hold < 1:
        raise TooFewItems(n, f"a holdout share of {holdout_fraction}", min_items(holdout_fraction))
    if n_test + n_hold > n:
        raise TooFewItems(n, f"test and holdout shares rounded to {n_test} + {n_hold} items", n_test + n_hold)
    test, hold, train = perm[:n_test], perm[n_test : n_test + n_hold], perm[n_test + n_hold :]
    return Split(
        ds.x[train], ds.y[train], ds.x[test], ds.y[test],
        ds.x[hold] if n_hold else None, ds.y[hold] if n_hold else None,
    )


def min_items(fraction: float) -> int:
    """The fewest items of which ``fraction`` rounds to at least one (``round`` as the split uses it)."""
    k = 1
    while int(round(fraction * k)) < 1:
        k += 1
    return k


# ---------------------------------------------------------------------------
# The DEL for x_t
# ---------------------------------------------------------------------------
def random_projection_del(x_t: np.ndarray, num_classes: int, *, n: int = 256, seed: int = 0) -> bytes:
    """An untrained random-projection DEL artifact for ``x_t`` (see ``del_embed.integer.random_projection_del``)."""
    return integer_del_to_bytes(projection_del(int(len(x_t)), num_classes, n=n, seed=seed))


def trained_del(x_t: np.ndarray, num_classes: int, *, steps: int, seed: int = 0, max_seconds: float = 0.0) -> bytes:
    """A DEL trained on GENERATEDATA(x_t) by ``del_embed`` (imports torch: the ``train`` extra)."""
    try:
        from del_embed.artifact import to_bytes
        from del_embed.model import DELConfig
        from del_embed.train import train_artifact
    except ImportError as exc:
        raise ProblemKitError(f"training a DEL needs torch (pip install '.[train]'): {exc}") from None
    cfg = DELConfig(m=int(len(x_t)), num_classes=num_classes, steps=steps, seed=seed, max_seconds=max_seconds)
    art, _ = train_artifact(np.asarray(x_t, dtype=np.int64), cfg)
    return to_bytes(art)


# ---------------------------------------------------------------------------
# Problem parameters
# ---------------------------------------------------------------------------
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
    del_steps: int = 0  # 0: untrained random-projection DEL
    del_n: int = 256
    del_max_seconds: float = 0.0
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


CALIBRATION_RATES: Final[tuple[float, ...]] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def calibrate_consistency(del_model: IntegerDEL, x_t: np.ndarray, num_classes: int, *, seed: int = 0,
                          per_rate: int = 4) -> int:
    """The DEL's relative fidelity on this ``x_t``, for the holdout consistency test.

    Label vectors with known error ``e`` (uniform wrong labels, and confusions
    where each class is always mistaken for one other) go through ``f_int``; the
    largest ``|d - e| / e`` times 1.25, rounded up to a whole percent, is the
    allowance. A problem's creator knows ``x_t``, so this is a measurement of
    the DEL actually used, not a guess; it reveals one number about it.
    """
    rng = np.random.default_rng(seed)
    truth = np.asarray(x_t, dtype=np.int64)
    y_t = f_int(del_model, truth)
    worst = 0.0
    for rate in CALIBRATION_RATES:
        for k in range(2 * per_rate):
            x = truth.copy()
            wrong = rng.choice(len(x), size=max(1, int(round(rate * len(x)))), replace=False)
            if k % 2 == 0:  # uniform wrong labels
                x[wrong] = (x[wrong] + rng.integers(1, num_classes, len(wrong))) % num_classes
            else:  # confusions: class c is always taken for confuse[c]
                confuse = (np.arange(num_classes) + rng.integers(1, num_classes, num_classes)) % num_classes
                x[wrong] = confuse[x[wrong]]
            e = float((x != truth).mean())
            d = distance_ppb(f_int(del_model, x), y_t) / PPB
            worst = max(worst, abs(d - e) / e)
    return int(min(PPB, np.ceil(worst * 1.25 * 100) * PPB // 100))


def default_contributor_bond(reward_a: int, reward_scale: int) -> int:
    """What a season can mint; 0 when ``a`` or the scale is one the reward cannot price, which
    ``validate_params`` then refuses by that parameter's own name."""
    try:
        return season_mint_bound(reward_a, reward_scale)
    except ValueError:
        return 0


def build_params(opts: ProblemOptions, ds: Dataset, creator: KeyPair, m: int, m_h: int,
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


# ---------------------------------------------------------------------------
# Writing and reading a problem directory
# ---------------------------------------------------------------------------
def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """Parse npy bytes from anyone: no pickles, numeric dtypes only."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ProblemKitError(f"malformed npy content: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ProblemKitError("npy content must be a numeric array")
    return arr


def content_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Problem:
    """What PROVE and VERIFY need of a problem: the proposal, its tuples and their content.

    ``tuples`` may hold test tuples beyond the proposal's first (added during
    T_p); ``holdout`` is the sealed holdout in force (the season's), if any;
    ``confirmed_model`` is the season's confirmed model, whose labels on ``Z_h``
    every PoI of the season carries for the paired holdout check (docs/design.md §5).
    """

    proposal: Proposal
    tuples: tuple[TestTuple, ...]
    dels: tuple[IntegerDEL, ...]
    z: tuple[np.ndarray, ...]
    holdout: SealedHoldout | None = None
    z_h: np.ndarray | None = None
    confirmed_model: bytes | None = None

    @property
    def params(self) -> ProblemParams:
        return self.proposal.params

    @property
    def chain_id(self) -> bytes:
        return self.proposal.chain_id

    def inputs(self) -> list[tuple[bytes, np.ndarray]]:
        """(content id, array) of every input set a model is run on: tuples' Z, then Z_h."""
        out = [(t.z_id, z) for t, z in zip(self.tuples, self.z)]
        if self.holdout is not None and self.z_h is not None:
            out.append((self.holdout.z_h_id, self.z_h))
        return out

    def sizes(self) -> list[int]:
        """Lengths of a PoI's label vectors (``chain.season.label_vector_sizes``)."""
        sizes = [t.m for t in self.tuples]
        if self.holdout is not None:
            sizes.append(self.holdout.m_h)
            if self.confirmed_model is not None:
                sizes.append(self.holdout.m_h)
        return sizes


@dataclass(frozen=True)
class CreatedProblem:
    problem: Problem
    directory: Path
    secret_path: Path
    split: Split


def create_problem(
    out_dir: Path,
    creator: KeyPair,
    *,
    dataset: Dataset | str = "digits",
    test_fraction: float = 0.3,
    holdout_fraction: float = 0.0,
    opts: ProblemOptions | None = None,
    secret_path: Path | None = None,
    seasons: int = 1,
) -> CreatedProblem:
    """Split, build the DEL, sign tuple and proposal, and write the problem directory.

    ``secret_path`` (default ``<out_dir>.secret.json``, beside, not inside, the
    published directory) receives ``x_t``, ``x_h`` and the salt with mode 0600.

    With a holdout, ``seasons`` K > 1 cuts the holdout share into K disjoint sets,
    one per season: season 0's is sealed in the proposal; the others' inputs go to
    a private directory ``<out_dir>.holdouts/`` (published only when their season
    is sealed, so nobody can study them early) and their labels and fresh salts
    to the secret file's ``holdouts`` list (see ``holdout_for_season``).
    """
    opts = opts or ProblemOptions()
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    split = split_dataset(ds, test_fraction=test_fraction, holdout_fraction=holdout_fraction, seed=opts.seed)
    if seasons < 1:
        raise ProblemKitError(f"seasons must be at least 1, not {seasons}")
    if split.holdout_y is not None and len(split.holdout_y) < seasons:
        raise TooFewItems(len(ds.y), f"a holdout of {len(split.holdout_y)} inputs cut into {seasons} seasons", seasons)
    first_m_h = -(-len(split.holdout_y) // seasons) if split.holdout_y is not None else 0  # np.array_split's first
    check_params(build_params(opts, ds, creator, len(split.test_y), first_m_h), first_m_h > 0)  # before the DEL
    out_dir = Path(out_dir)
    if (out_dir / PROPOSAL_FILE).exists():
        raise ProblemKitError(f"{out_dir} already holds a problem; refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    x_t = split.test_y
    if opts.del_steps > 0:
        del_bytes = trained_del(x_t, ds.num_classes, steps=opts.del_steps, seed=opts.seed, max_seconds=opts.del_max_seconds)
    else:
        del_bytes = random_projection_del(x_t, ds.num_classes, n=opts.del_n, seed=opts.seed)
    del_model = integer_del_from_bytes(del_bytes)
    z_bytes = npy_bytes(split.test_x)
    contents = {content_id(z_bytes): z_bytes, content_id(del_bytes): del_bytes}
    m = len(x_t)
    tup = sign(TestTuple(content_id(z_bytes), content_id(del_bytes), m, f_int(del_model, x_t),
                         creator.public_key, EMPTY_SIGNATURE), creator)
    holdout = None
    salt = b""
    season_sets: list[dict[str, Any]] = []
    hold_x, hold_y = split.holdout_x, split.holdout_y
    if hold_x is not None and hold_y is not None:
        cuts = np.array_split(np.arange(len(hold_y)), seasons)
        for k, idx in enumerate(cuts):
            k_salt = secrets.token_bytes(32)
            k_bytes = npy_bytes(hold_x[idx])
            season_sets.append({"season": k, "z_h_id": content_id(k_bytes).hex(), "m_h": len(idx),
                                "x_h": array_to_labels(hold_y[idx]).hex(), "salt": k_salt.hex(),
                                "commitment": holdout_commitment(k_salt, array_to_labels(hold_y[idx])).hex(),
                                "bytes": k_bytes})
        first = season_sets[0]
        salt = bytes.fromhex(first["salt"])
        hold_x, hold_y = hold_x[cuts[0]], hold_y[cuts[0]]
        contents[bytes.fromhex(first["z_h_id"])] = first["bytes"]
        holdout = SealedHoldout(bytes.fromhex(first["z_h_id"]), len(hold_y), bytes.fromhex(first["commitment"]))
    consistency = opts.consistency_ppb
    if consistency is None and holdout is not None:
        consistency = calibrate_consistency(del_model, x_t, ds.num_classes, seed=opts.seed)
    params = build_params(opts, ds, creator, m, holdout.m_h if holdout else 0, consistency)
    check_problem(params, tup, [int(held["m_h"]) for held in season_sets])
    proposal = sign(Proposal(params, tup, holdout, creator.public_key, EMPTY_SIGNATURE), creator)
    for cid, data in contents.items():
        (out_dir / cid.hex()).write_bytes(data)
    (out_dir / TRAIN_X_FILE).write_bytes(npy_bytes(split.train_x))
    (out_dir / TRAIN_Y_FILE).write_bytes(npy_bytes(split.train_y))
    (out_dir / PROPOSAL_FILE).write_bytes(proposal.encode())
    summary = problem_summary(proposal, del_model)
    summary["dataset"] = {"name": ds.name, "train": len(split.train_y), "test": m,
                          "holdout": holdout.m_h if holdout else 0, "split_seed": opts.seed,
                          "seasons": len(season_sets), "classes": list(ds.class_names)}
    (out_dir / PROBLEM_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    secret = Path(secret_path) if secret_path is not None else out_dir.with_name(out_dir.name + ".secret.json")
    private_dir = out_dir.with_name(out_dir.name + ".holdouts")
    for entry in season_sets[1:]:
        private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (private_dir / entry["z_h_id"]).write_bytes(entry["bytes"])
    write_private_json(secret, {
        "chain_id": proposal.chain_id.hex(),
        "x_t": array_to_labels(x_t).hex(),
        "x_h": array_to_labels(hold_y).hex() if hold_y is not None else None,
        "salt": salt.hex() if holdout else None,
        "holdouts": [{k: v for k, v in e.items() if k != "bytes"} for e in season_sets],
        "holdout_dir": str(private_dir.resolve()) if len(season_sets) > 1 else None,
    })
    problem = Problem(proposal, (tup,), (del_model,), (split.test_x,), holdout, hold_x)
    return CreatedProblem(problem, out_dir, secret, split)


def write_private_json(path: Path, obj: dict[str, Any]) -> None:
    """Write a secret file created with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def problem_summary(proposal: Proposal, del_model: IntegerDEL | None = None) -> dict[str, Any]:
    """A JSON-ready view of a proposal: hex for bytes, every parameter by name."""
    p = proposal.params
    params: dict[str, Any] = {}
    for name, _ in ProblemParams.FIELDS:
        v = getattr(p, name)
        if name == "input_spec":
            v = {"shape": list(v.shape), "dtype": v.dtype, "range": [v.range_num_low, v.range_num_high, v.range_den]}
        elif name == "committers":
            v = [c.hex() for c in v]
        elif name == "genesis":
            v = [{"address": a.address.hex(), "amount": str(a.amount)} for a in v]
        elif name in ("reward_scale", "validator_bond", "improver_bond", "contributor_bond", "committer_bond"):
            v = str(v)
        params[name] = v
    tup = proposal.first_tuple
    out: dict[str, Any] = {
        "chain_id": proposal.chain_id.hex(),
        "creator": proposal.creator.hex(),
        "params": params,
        "tuples": [{"z_id": tup.z_id.hex(), "del_id": tup.del_id.hex(), "m": tup.m, "y_t_len": len(tup.y_t)}],
        "holdout": None,
        "files": {"proposal": PROPOSAL_FILE, "train_x": TRAIN_X_FILE, "train_y": TRAIN_Y_FILE},
    }
    if del_model is not None:
        out["del"] = {"m": del_model.m, "hidden": del_model.hidden, "n": del_model.n,
                      "encoding": del_model.encoding, "kind": del_model.config.get("kind", "trained")}
    if proposal.holdout is not None:
        h = proposal.holdout
        out["holdout"] = {"z_h_id": h.z_h_id.hex(), "m_h": h.m_h, "commitment": h.commitment.hex()}
    return out


def read_content(directory: Path, cid: bytes) -> bytes:
    path = Path(directory) / cid.hex()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProblemKitError(f"content {cid.hex()[:16]} is missing from {directory}") from None
    if content_id(data) != cid:
        raise ProblemKitError(f"content file {path.name[:16]} does not match its id")
    return data


def load_problem(directory: Path) -> Problem:
    """Read and check a problem directory: signatures, content ids, and that Z fits its tuple."""
    directory = Path(directory)
    try:
        proposal = Proposal.decode((directory / PROPOSAL_FILE).read_bytes())
    except FileNotFoundError:
        raise ProblemKitError(f"no {PROPOSAL_FILE} in {directory}; run 'daimon-node problem create'") from None
    except DecodeError as exc:
        raise ProblemKitError(f"{directory / PROPOSAL_FILE} is malformed: {exc}") from None
    if not is_valid_signature(proposal, ZERO_HASH) or not is_valid_signature(proposal.first_tuple, ZERO_HASH):
        raise ProblemKitError(f"{directory / PROPOSAL_FILE} carries a bad signature")
    params = proposal.params
    tup = proposal.first_tuple
    try:
        del_model = integer_del_from_bytes(read_content(directory, tup.del_id))
    except IntegerDELError as exc:
        raise ProblemKitError(f"DEL artifact is malformed: {exc}") from None
    if del_model.m != tup.m or del_model.num_classes != params.num_classes or del_model.n != len(tup.y_t):
        raise ProblemKitError("DEL artifact does not fit its test tuple")
    z = check_inputs(load_npy(read_content(directory, tup.z_id)), tup.m, params.input_spec)
    z_h = None
    if proposal.holdout is not None:
        z_h = check_inputs(load_npy(read_content(directory, proposal.holdout.z_h_id)), proposal.holdout.m_h, params.input_spec)
    return Problem(proposal, (tup,), (del_model,), (z,), proposal.holdout, z_h)


def check_inputs(z: np.ndarray, m: int, spec: InputSpec) -> np.ndarray:
    """``Z`` must hold ``m`` inputs of the spec's shape and dtype, every value in its range."""
    if z.shape != (m, *spec.shape) or str(z.dtype) != spec.dtype:
        raise ProblemKitError(f"inputs are {z.dtype}{list(z.shape)}, expected {spec.dtype}{[m, *spec.shape]}")
    if not is_within_range(z, spec):
        raise ProblemKitError(f"inputs hold values outside the problem's range "
                              f"[{spec.range_num_low}/{spec.range_den}, {spec.range_num_high}/{spec.range_den}]")
    return z


def is_within_range(arr: np.ndarray, spec: InputSpec) -> bool:
    """Every value finite and ``value * den`` within ``[low, high]`` (compared exactly for integers)."""
    if arr.size == 0:
        return True
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return False
    den = spec.range_den or 1
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind in "iu":
        return int(lo) * den >= spec.range_num_low and int(hi) * den <= spec.range_num_high
    return float(lo) * den >= spec.range_num_low and float(hi) * den <= spec.range_num_high


def load_train_split(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The published train split of a problem directory (for improvers)."""
    directory = Path(directory)
    try:
        x = load_npy((directory / TRAIN_X_FILE).read_bytes())
        y = load_npy((directory / TRAIN_Y_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise ProblemKitError(f"{directory} has no train split: {exc.filename}") from None
    if x.ndim < 2 or y.shape != (len(x),):
        raise ProblemKitError(f"train split shapes {x.shape} and {y.shape} do not fit")
    return x, y.astype(np.int64)


def read_secret(path: Path) -> dict[str, Any]:
    """The contributor's private file: ``x_t``, ``x_h`` (numpy arrays) and ``salt`` (bytes)."""
    obj = json.loads(Path(path).read_text())
    return {
        "chain_id": bytes.fromhex(obj["chain_id"]),
        "x_t": np.frombuffer(bytes.fromhex(obj["x_t"]), dtype=np.uint8).astype(np.int64),
        "x_h": None if obj["x_h"] is None else np.frombuffer(bytes.fromhex(obj["x_h"]), dtype=np.uint8).astype(np.int64),
        "salt": None if obj["salt"] is None else bytes.fromhex(obj["salt"]),
        "holdouts": list(obj.get("holdouts") or []),
        "holdout_dir": obj.get("holdout_dir"),
        "path": str(path),
    }


@dataclass(frozen=True)
class SeasonHoldout:
    """One season's sealed holdout as the contributor holds it: inputs, labels and salt."""

    season: int
    sealed: SealedHoldout
    x_h: bytes  # one byte per label
    salt: bytes
    z_h_bytes: bytes | None  # npy bytes, when the inputs are found (season 0's live in the problem dir)


def holdout_for_season(secret: dict[str, Any], season: int, problem_dir: Path | None = None) -> SeasonHoldout | None:
    """Season ``season``'s holdout from a secret file read by ``read_secret`` (None: none left).

    A secret file from before seasons (no ``holdouts`` list) holds season 0 only.
    """
    entries = secret.get("holdouts") or []
    if not entries and season == 0 and secret.get("x_h") is not None and secret.get("salt") is not None:
        labels = array_to_labels(secret["x_h"])
        commitment = holdout_commitment(secret["salt"], labels)
        if problem_dir is not None:
            try:
                proposal = Proposal.decode((Path(problem_dir) / PROPOSAL_FILE).read_bytes())
                if proposal.holdout is not None and proposal.holdout.commitment == commitment:
                    return SeasonHoldout(0, proposal.holdout, labels, secret["salt"],
                                         read_content(problem_dir, proposal.holdout.z_h_id))
            except (FileNotFoundError, DecodeError, ProblemKitError):
                pass
        return None
    for e in entries:
        if int(e["season"]) != season:
            continue
        z_h_id = bytes.fromhex(e["z_h_id"])
        data = None
        for folder in (secret.get("holdout_dir"), problem_dir):
            if folder and (Path(folder) / e["z_h_id"]).exists():
                data = read_content(Path(folder), z_h_id)
                break
        sealed = SealedHoldout(z_h_id, int(e["m_h"]), bytes.fromhex(e["commitment"]))
        return SeasonHoldout(season, sealed, bytes.fromhex(e["x_h"]), bytes.fromhex(e["salt"]), data)
    return None


def season_reveal_for(holdout: SeasonHoldout, chain_id: bytes, keys: KeyPair):  # type: ignore[no-untyped-def]
    """The contributor's signed ``SeasonReveal`` opening ``holdout``."""
    from chain.proofs import SeasonReveal

    if holdout_commitment(holdout.salt, holdout.x_h) != holdout.sealed.commitment:
        raise ProblemKitError(f"the secret file's season {holdout.season} does not open its commitment")
    return sign(SeasonReveal(chain_id, holdout.season, holdout.salt, holdout.x_h, keys.public_key, EMPTY_SIGNATURE),
                keys, chain_id)


__all__ = [
    "Dataset", "Split", "Problem", "ProblemOptions", "CreatedProblem", "ProblemKitError", "TooFewItems",
    "is_within_range", "check_inputs",
    "load_dataset", "split_dataset", "random_projection_del", "trained_del", "build_params",
    "create_problem", "load_problem", "load_train_split", "read_secret", "problem_summary",
    "npy_bytes", "load_npy", "SeasonHoldout", "holdout_for_season", "season_reveal_for",
]
