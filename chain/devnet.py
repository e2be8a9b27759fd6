"""A deterministic in-memory devnet: the protocol driven without a network or clock.

The demo, the benchmarks and the tests all build chains through this one
driver, so what they exercise is exactly what a committer produces. Keys come
from labels (``KeyPair.from_label``): never use them for real funds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from del_embed.integer import distance_ppb, f_int, integer_del_to_bytes, random_projection_del

from . import constants as C
from .builder import build_improvement_block, build_problem_block, make_paid_transaction
from .committers import committers_at
from .consensus import in_turn_committer, period_end
from .crypto import KeyPair
from .labels import array_to_labels, labels_hash, masked_digest
from .outcome import BlockOutcome, BlockReceipt, Env, memory_env
from .payloads import NewHoldout, Payload, RegisterDigest, RegisterValidator, Transaction
from .proofs import Ambiguous, PoI, Reveal, SealedHoldout, SeasonReveal, Vote, model_claim
from .season import holdout_commitment
from .settlement import model_order_seed
from .signing import EMPTY_SIGNATURE, sign
from .state import State, get_account, get_meta
from .types import Allocation, Anchor, Block, InputSpec, ProblemParams, Proposal, TestTuple


def content_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def corrupt(labels: np.ndarray, error: float, num_classes: int, seed: int) -> np.ndarray:
    """A copy of ``labels`` with a fraction ``error`` of positions set to another class."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    k = int(round(error * len(labels)))
    idx = rng.choice(len(labels), size=k, replace=False)
    out[idx] = (out[idx] + rng.integers(1, num_classes, size=k)) % num_classes
    return out


@dataclass
class DevnetConfig:
    m: int = 200
    num_classes: int = 10
    n: int = 128
    t0: int = 1_700_000_000
    t_p: int = 60
    t_b: int = 60
    grace: int = 30
    delta_ppb: int = 1_000_000
    reward_a: int = 3
    reward_scale: int = 10**18
    committers: int = 3
    validators: int = 4
    max_votes: int = 16
    quorum_ppb: int = C.DEFAULT_QUORUM_PPB
    validator_bond: int = 10**18
    improver_bond: int = 10**17
    contributor_bond: int = 2 * 10**18  # >= what a season can mint at reward_scale 10^18
    min_fee: int = 1  # base units; the consensus floor, so fees stay negligible in tests
    genesis_amount: int = 100 * 10**18
    holdout_m: int = 0  # >0: a sealed holdout of this many labels, with seasons
    season_periods: int = 4
    reveal_window: int = 2
    holdout_margin_ppb: int = 0
    consistency_ppb: int = 100_000_000
    holdout_z_centi: int = 258
    max_ambiguous: int | None = None  # None: 1% of m
    seed: int = 0
    committer_bond: int = 0  # > 0: committers by transaction (issue 17); 0 with no miss limit: a fixed list
    committer_delay: int = 0
    committer_miss_limit: int = 0
    spare_committers: int = 0  # keys funded at genesis that may register as committers later


@dataclass
class Devnet:
    """Builds and applies blocks for one problem chain, period by period."""

    cfg: DevnetConfig = field(default_factory=DevnetConfig)
    truth_labels: np.ndarray | None = None  # x_t; random when not given

    def __post_init__(self) -> None:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        if self.truth_labels is not None:
            cfg.m = len(self.truth_labels)
        self.creator = KeyPair.from_label("creator")
        self.committer_keys = [KeyPair.from_label(f"committer-{i}") for i in range(cfg.committers)]
        self.validator_keys = [KeyPair.from_label(f"validator-{i}") for i in range(cfg.validators)]
        self.improver_keys = [KeyPair.from_label(f"improver-{i}") for i in range(4)]
        self.spare_keys = [KeyPair.from_label(f"spare-committer-{i}") for i in range(cfg.spare_committers)]
        self.truth = (np.asarray(self.truth_labels, dtype=np.int64) if self.truth_labels is not None
                      else rng.integers(0, cfg.num_classes, cfg.m))
        self.del_model = random_projection_del(cfg.m, cfg.num_classes, n=cfg.n, seed=cfg.seed)
        del_bytes = integer_del_to_bytes(self.del_model)
        z_bytes = rng.integers(0, 256, cfg.m * 8, dtype=np.uint8).tobytes()  # stand-in inputs Z
        self.contents = {content_id(del_bytes): del_bytes, content_id(z_bytes): z_bytes}
        self.env: Env = memory_env(self.contents)
        self.holdout_truth: np.ndarray | None = None
        self.holdout_salt = b"devnet-salt"
        self.holdout_salts: dict[bytes, bytes] = {}  # commitment -> salt, for holdouts sealed later
        self.holdout_predictions: dict[bytes, np.ndarray] = {}  # model digest -> its labels on Z_h
        holdout = None
        if cfg.holdout_m:
            self.holdout_truth = rng.integers(0, cfg.num_classes, cfg.holdout_m)
            holdout = SealedHoldout(content_id(z_bytes), cfg.holdout_m,
                                    holdout_commitment(self.holdout_salt, array_to_labels(self.holdout_truth)))
        y_t = f_int(self.del_model, self.truth)
        tup = sign(TestTuple(content_id(z_bytes), content_id(del_bytes), cfg.m, y_t, self.creator.public_key, EMPTY_SIGNATURE), self.creator)
        everyone = [self.creator, *self.committer_keys, *self.validator_keys, *self.improver_keys, *self.spare_keys]
        params = ProblemParams(
            name="devnet", input_spec=InputSpec((8,), "uint8", 0, 255, 1), num_classes=cfg.num_classes,
            token_symbol="DEV", decimals=18, t_p=cfg.t_p, t_b=cfg.t_b, grace=cfg.grace,
            delta_ppb=cfg.delta_ppb, reward_a=cfg.reward_a, reward_scale=cfg.reward_scale,
            committers=tuple(k.public_key for k in self.committer_keys),
            validator_bond=cfg.validator_bond, improver_bond=cfg.improver_bond,
            contributor_bond=cfg.contributor_bond, min_fee=cfg.min_fee, tie_margin_ppb=1000,
            max_ambiguous=max(1, cfg.m // 100) if cfg.max_ambiguous is None else cfg.max_ambiguous,
            max_model_bytes=10**8, max_infer_ms=10_000, max_votes=cfg.max_votes, quorum_ppb=cfg.quorum_ppb,
            unbonding_periods=2,
            season_periods=cfg.season_periods if holdout else 0, reveal_window=cfg.reveal_window,
            holdout_margin_ppb=cfg.holdout_margin_ppb, consistency_ppb=cfg.consistency_ppb,
            holdout_z_centi=cfg.holdout_z_centi, genesis=tuple(Allocation(k.address_bytes, cfg.genesis_amount) for k in everyone),
            t0=cfg.t0, committer_bond=cfg.committer_bond, committer_delay=cfg.committer_delay,
            committer_miss_limit=cfg.committer_miss_limit,
        )
        self.proposal = sign(Proposal(params, tup, holdout, self.creator.public_key, EMPTY_SIGNATURE), self.creator)
        self.params = params
        self.chain_id = self.proposal.chain_id
        self.blocks: list[Block] = []
        self.receipts: list[BlockReceipt] = []  # per block; states are not kept (memory)
        self.state = State()
        self.nonces: dict[bytes, int] = {}
        self.period = 0

    # --- block production ------------------------------------------------------------
    def committer_for(self, period: int) -> KeyPair:
        """The in-turn key of ``period`` over the set in force then (the head's state fixes it)."""
        members = committers_at(self.state, self.params, period) if self.state.get(b"p") is not None else None
        pk = in_turn_committer(self.params, period, members)
        return next(k for k in (*self.committer_keys, *self.spare_keys) if k.public_key == pk)

    def start(self) -> Block:
        keys = self.committer_for(0)
        block, outcome = build_problem_block(self.proposal, keys, period_end(self.params, 0), self.env)
        return self._accept(block, outcome)

    def commit(self, *, transactions: Sequence[Transaction] = (), settlement: Reveal | None = None,
               season_reveal: SeasonReveal | None = None, anchor: Anchor | None = None,
               skip: int = 0, out_of_turn: KeyPair | None = None) -> Block:
        period = self.period + 1 + skip
        keys = out_of_turn or self.committer_for(period)
        ts = period_end(self.params, period) + (self.params.grace if out_of_turn else 0)
        block, outcome = build_improvement_block(
            self.state, keys, period=period, timestamp=ts, env=self.env, transactions=transactions,
            settlement=settlement, season_reveal=season_reveal, anchor=anchor)
        return self._accept(block, outcome)

    def _accept(self, block: Block, outcome: BlockOutcome) -> Block:
        self.blocks.append(block)
        self.receipts.append(outcome.receipt)
        self.state = outcome.state
        self.period = block.header.period
        return block

    # --- transactions ----------------------------------------------------------------
    def tx(self, keys: KeyPair, payload: Payload, fee: int | None = None) -> Transaction:
        """The next tx of ``keys``, paying ``fee`` or (None) the problem's minimum fee."""
        nonce = self.nonces.get(keys.public_key, get_account(self.state, keys.address_bytes).nonce)
        self.nonces[keys.public_key] = nonce + 1
        return make_paid_transaction(keys, self.params, self.chain_id, nonce, payload, fee)

    def register(self, keys: KeyPair, digest: bytes, fee: int | None = None) -> Transaction:
        """The tx claiming model ``digest`` for ``keys`` (``RegisterDigest`` of ``H(pk || digest)``)."""
        return self.tx(keys, RegisterDigest(model_claim(keys.public_key, digest)), fee)

    def bond_validators(self) -> Block:
        return self.commit(transactions=[self.tx(k, RegisterValidator()) for k in self.validator_keys])

    # --- proofs ----------------------------------------------------------------------
    def label_vectors(self, labels: np.ndarray, holdout_labels: np.ndarray | None,
                      baseline_labels: np.ndarray | None = None) -> list[bytes]:
        """The PoI's vectors: Z, then (in a sealed season) the model's and the confirmed model's on Z_h.

        The devnet's models are their label vectors, so the confirmed model's
        holdout labels default to the ones it was proven with (one Z_h for every season).
        """
        vecs = [array_to_labels(labels)]
        meta = get_meta(self.state)
        if meta.season is not None and holdout_labels is not None:
            vecs.append(array_to_labels(holdout_labels))
            if meta.confirmed is not None:
                if baseline_labels is None:
                    baseline_labels = self.holdout_predictions[meta.confirmed.digest]
                vecs.append(array_to_labels(baseline_labels))
        return vecs

    def prove(self, keys: KeyPair, digest: bytes, labels: np.ndarray, holdout_labels: np.ndarray | None = None,
              ambiguous: Sequence[Sequence[Ambiguous]] | None = None,
              baseline_labels: np.ndarray | None = None) -> tuple[PoI, Reveal]:
        """The PoI and its reveal for period ``self.period + 1`` on the current head.

        A devnet model is its label vector on Z, so its order seed is taken over those bytes."""
        vecs = self.label_vectors(labels, holdout_labels, baseline_labels)
        if holdout_labels is not None:
            self.holdout_predictions[digest] = np.asarray(holdout_labels)
        amb = tuple(tuple(s) for s in (ambiguous or [()] * len(vecs)))
        poi = PoI(self.chain_id, self.period + 1, self.state.head, digest, (f_int(self.del_model, labels),),
                  labels_hash(vecs), amb, model_order_seed(array_to_labels(labels)), keys.public_key, EMPTY_SIGNATURE)
        poi = sign(poi, keys, self.chain_id)
        reveal = sign(Reveal(self.chain_id, poi.hash, tuple(vecs), keys.public_key, EMPTY_SIGNATURE), keys, self.chain_id)
        return poi, reveal

    def vote(self, keys: KeyPair, poi: PoI, reveal: Reveal) -> Vote:
        digest = masked_digest(keys.public_key, reveal.labels, poi.ambiguous)
        vote = Vote(self.chain_id, poi.period, poi.hash, poi.parent, digest, keys.public_key, EMPTY_SIGNATURE)
        return sign(vote, keys, self.chain_id)

    def new_holdout(self, inputs_tag: bytes, salt: bytes) -> NewHoldout:
        """A holdout for a later season: stand-in inputs named by ``inputs_tag``, the devnet's
        holdout labels (one truth for every season) under a fresh ``salt``."""
        assert self.holdout_truth is not None
        commitment = holdout_commitment(salt, array_to_labels(self.holdout_truth))
        self.holdout_salts[commitment] = salt
        z_h_id = hashlib.sha256(b"devnet holdout inputs:" + inputs_tag).digest()
        return NewHoldout(SealedHoldout(z_h_id, len(self.holdout_truth), commitment))

    def season_reveal(self) -> SeasonReveal:
        """The contributor's reveal of the current season, with the salt its holdout was sealed with."""
        assert self.holdout_truth is not None
        season = get_meta(self.state).season
        assert season is not None
        salt = self.holdout_salt
        if season.holdout is not None:
            salt = self.holdout_salts.get(season.holdout.commitment, salt)
        sr = SeasonReveal(self.chain_id, season.index, salt, array_to_labels(self.holdout_truth),
                          self.creator.public_key, EMPTY_SIGNATURE)
        return sign(sr, self.creator, self.chain_id)

    def improve(self, keys: KeyPair, labels: np.ndarray, holdout_labels: np.ndarray | None = None,
                validators: Sequence[KeyPair] | None = None,
                baseline_labels: np.ndarray | None = None) -> tuple[Block, Block]:
        """Register a digest, anchor a PoI with votes, settle it: three blocks, the last two returned."""
        digest = hashlib.sha256(b"model:" + array_to_labels(labels)).digest()
        self.commit(transactions=[self.register(keys, digest)])
        poi, reveal = self.prove(keys, digest, labels, holdout_labels, baseline_labels=baseline_labels)
        votes = tuple(self.vote(v, poi, reveal) for v in (validators if validators is not None else self.validator_keys))
        anchored = self.commit(anchor=Anchor(poi, votes))
        settled = self.commit(settlement=reveal)
        return anchored, settled

    def improving_labels(self, count: int, start_error: float = 0.6, seed: int = 0) -> list[np.ndarray]:
        """``count`` label vectors, each fixing some of the last one's errors, with strictly
        decreasing DEL distance to ``x_t`` by more than delta (so each one settles)."""
        rng = np.random.default_rng(seed)
        y_t = f_int(self.del_model, self.truth)
        labels = corrupt(self.truth, start_error, self.cfg.num_classes, seed)
        out: list[np.ndarray] = []
        last = C.PPB
        while len(out) < count:
            d = distance_ppb(f_int(self.del_model, labels), y_t)
            if d < last - self.cfg.delta_ppb:
                out.append(labels)
                last = d
            wrong = np.flatnonzero(labels != self.truth)
            if wrong.size == 0:
                raise ValueError(f"only {len(out)} improving label vectors exist from error {start_error}")
            fix = rng.choice(wrong, size=max(1, wrong.size // (count - len(out) + 1)), replace=False)
            labels = labels.copy()
            labels[fix] = self.truth[fix]
        return out

    def balance(self, keys: KeyPair) -> tuple[int, int]:
        acct = get_account(self.state, keys.address_bytes)
        return acct.balance, acct.locked


__all__ = ["Devnet", "DevnetConfig", "corrupt", "content_id"]
