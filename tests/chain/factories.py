"""Factories for chain tests: valid signed blocks that a test then breaks in one field.

Everything is built through ``chain.devnet.Devnet`` (the same code a committer
runs), so a "valid" block here is exactly what the protocol produces. Helpers
that break a block re-sign the object they touched and re-seal the header
(body hash + committer signature) so that the block gets past the signature and
body-hash checks and fails on the rule the test names.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from chain.builder import build_improvement_block
from chain.consensus import period_end
from chain.crypto import KeyPair
from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.labels import array_to_labels, masked_digest
from chain.signing import EMPTY_SIGNATURE, sign
from chain.records import Account
from chain.state import State, get_account, get_bond, get_meta
from chain.transition import process_block
from chain.header import BlockHeader
from chain.payloads import Transaction
from chain.proofs import PoI, Reveal, SeasonReveal, Vote
from chain.types import Anchor, Block, ImprovementBody, body_hash

OTHER_CHAIN = hashlib.sha256(b"another chain").digest()


def new_devnet(**overrides: Any) -> Devnet:
    """A started devnet (problem block applied) with the validators bonded."""
    d = Devnet(DevnetConfig(**overrides))
    d.start()
    d.bond_validators()
    return d


def digest_for(tag: str) -> bytes:
    return hashlib.sha256(b"model:" + tag.encode()).digest()


def keys_of(d: Devnet, pubkey: bytes) -> KeyPair:
    """The devnet key pair behind a public key."""
    everyone = [d.creator, *d.committer_keys, *d.validator_keys, *d.improver_keys, *d.spare_keys]
    return next(k for k in everyone if k.public_key == pubkey)


# ---------------------------------------------------------------------------
# Blocks: build valid ones without accepting them, then break them
# ---------------------------------------------------------------------------
def next_block(
    d: Devnet,
    *,
    transactions: Sequence[Transaction] = (),
    settlement: Reveal | None = None,
    season_reveal: SeasonReveal | None = None,
    anchor: Anchor | None = None,
    skip: int = 0,
    out_of_turn: KeyPair | None = None,
) -> Block:
    """A valid block for the devnet's next period (as ``Devnet.commit`` would build); not applied."""
    period = d.period + 1 + skip
    keys = out_of_turn or d.committer_for(period)
    ts = period_end(d.params, period) + (d.params.grace if out_of_turn else 0)
    block, _ = build_improvement_block(
        d.state, keys, period=period, timestamp=ts, env=d.env, transactions=transactions,
        settlement=settlement, season_reveal=season_reveal, anchor=anchor)
    return block


def draft_block(
    d: Devnet,
    *,
    transactions: Sequence[Transaction] = (),
    settlement: Reveal | None = None,
    season_reveal: SeasonReveal | None = None,
    anchor: Anchor | None = None,
    skip: int = 0,
) -> Block:
    """A block for the next period whose body may be invalid: correct header fields,
    body hash and committer signature, but a zero state root (execution must fail first)."""
    period = d.period + 1 + skip
    keys = d.committer_for(period)
    body = ImprovementBody(tuple(transactions), settlement, season_reveal, anchor)
    header = BlockHeader(
        chain_id=d.chain_id, height=get_meta(d.state).height + 1, parent=d.state.head, kind=1,
        period=period, timestamp=period_end(d.params, period), committer=keys.public_key,
        body_hash=body_hash(body), state_root=b"\x00" * 32, signature=EMPTY_SIGNATURE)
    return Block(sign(header, keys, d.chain_id), body)


def resign_header(d: Devnet, block: Block, keys: KeyPair | None = None, **changes: Any) -> Block:
    """``block`` with header fields changed and the header signed again."""
    header = dataclasses.replace(block.header, **changes)
    keys = keys or keys_of(d, header.committer)
    return Block(sign(header, keys, header.chain_id), block.body)


def with_body(d: Devnet, block: Block, **changes: Any) -> Block:
    """``block`` with body fields changed, the body hash updated and the header re-signed."""
    body = dataclasses.replace(block.body, **changes)
    return resign_header(d, Block(block.header, body), body_hash=body_hash(body))


def apply(d: Devnet, block: Block) -> Any:
    """Apply ``block`` to the devnet's head state (the state is not changed)."""
    return process_block(d.state, block, d.env)


def accept(d: Devnet, block: Block) -> Block:
    """Apply a valid block and make it the devnet's head."""
    return d._accept(block, process_block(d.state, block, d.env))


# ---------------------------------------------------------------------------
# Proofs and votes
# ---------------------------------------------------------------------------
@dataclass
class Proof:
    """A PoI ready to anchor in the devnet's next period, with its reveal and votes."""

    keys: KeyPair
    digest: bytes
    labels: np.ndarray
    poi: PoI
    reveal: Reveal
    votes: tuple[Vote, ...]

    @property
    def anchor(self) -> Anchor:
        return Anchor(self.poi, self.votes)


def register(d: Devnet, keys: KeyPair, digest: bytes) -> Block:
    return d.commit(transactions=[d.register(keys, digest)])


def make_proof(
    d: Devnet,
    keys: KeyPair | None = None,
    *,
    error: float = 0.2,
    seed: int = 1,
    holdout_error: float = 0.2,
    validators: Sequence[KeyPair] | None = None,
    do_register: bool = True,
    tag: str | None = None,
    holdout_labels: np.ndarray | None = None,
) -> Proof:
    """Register a digest (one block) and build a PoI for the following period with votes."""
    keys = keys or d.improver_keys[0]
    labels = corrupt(d.truth, error, d.cfg.num_classes, seed)
    digest = digest_for(tag or f"{keys.public_key.hex()}:{error}:{seed}")
    if do_register:
        register(d, keys, digest)
    holdout = holdout_labels
    if holdout is None and d.holdout_truth is not None:
        holdout = corrupt(d.holdout_truth, holdout_error, d.cfg.num_classes, seed + 1000)
    poi, reveal = d.prove(keys, digest, labels, holdout)
    vals = d.validator_keys if validators is None else validators
    votes = tuple(d.vote(v, poi, reveal) for v in vals)
    return Proof(keys, digest, labels, poi, reveal, votes)


def resign_poi(d: Devnet, poi: PoI, keys: KeyPair | None = None, **changes: Any) -> PoI:
    poi = dataclasses.replace(poi, **changes)
    return sign(poi, keys or keys_of(d, poi.prover), poi.chain_id)


def resign_vote(d: Devnet, vote: Vote, keys: KeyPair | None = None, **changes: Any) -> Vote:
    vote = dataclasses.replace(vote, **changes)
    return sign(vote, keys or keys_of(d, vote.validator), vote.chain_id)


def resign_reveal(d: Devnet, reveal: Reveal, keys: KeyPair | None = None, **changes: Any) -> Reveal:
    reveal = dataclasses.replace(reveal, **changes)
    return sign(reveal, keys or keys_of(d, reveal.prover), reveal.chain_id)


def votes_for(d: Devnet, poi: PoI, reveal: Reveal, validators: Sequence[KeyPair] | None = None) -> tuple[Vote, ...]:
    vals = d.validator_keys if validators is None else validators
    return tuple(d.vote(v, poi, reveal) for v in vals)


def wrong_vote(d: Devnet, keys: KeyPair, poi: PoI, labels: Sequence[bytes], ambiguous: Any = None) -> Vote:
    """A vote for ``poi`` whose digest is over ``labels`` (masked by ``ambiguous``, default the PoI's)."""
    digest = masked_digest(keys.public_key, labels, poi.ambiguous if ambiguous is None else ambiguous)
    vote = Vote(d.chain_id, poi.period, poi.hash, poi.parent, digest, keys.public_key, EMPTY_SIGNATURE)
    return sign(vote, keys, d.chain_id)


def flip(sig: bytes) -> bytes:
    return bytes([sig[0] ^ 1]) + sig[1:]


def labels_bytes(arr: np.ndarray) -> bytes:
    return array_to_labels(arr)


# ---------------------------------------------------------------------------
# Accounting
# ---------------------------------------------------------------------------
def account(d: Devnet, keys: KeyPair) -> Account:
    return get_account(d.state, keys.address_bytes)


def bond_amount(d: Devnet, keys: KeyPair) -> int | None:
    bond = get_bond(d.state, keys.public_key)
    return None if bond is None else bond.amount


def total_supply(state: State) -> int:
    """Sum of spendable and locked balances of every account."""
    total = 0
    for key, raw in state.items(b"a"):
        acct = Account.decode(raw)
        total += acct.balance + acct.locked
    return total


def genesis_total(d: Devnet) -> int:
    return sum(a.amount for a in d.params.genesis)


def assert_supply(d: Devnet) -> None:
    meta = get_meta(d.state)
    assert total_supply(d.state) == genesis_total(d) + meta.minted - meta.burned


# ---------------------------------------------------------------------------
# Hypothesis settings: modest and deterministic (the folder runs in ~2 min on 2 cores)
# ---------------------------------------------------------------------------
def fuzz_settings(max_examples: int = 60) -> Any:
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------
# A problem with several test tuples (the devnet builds one)
# ---------------------------------------------------------------------------
def multi_tuple_devnet(extra: int = 1, **overrides: Any) -> tuple[Devnet, list[np.ndarray]]:
    """A devnet whose problem block carries ``extra`` more test tuples (same DEL, other x_t).

    Returns the devnet (started, validators bonded) and the true labels of every tuple.
    """
    from chain.builder import build_problem_block
    from chain.types import TestTuple
    from del_embed.integer import f_int

    d = Devnet(DevnetConfig(**overrides))
    first = d.proposal.first_tuple
    truths = [d.truth]
    tuples = []
    for i in range(extra):
        truth = np.random.default_rng(100 + i).integers(0, d.cfg.num_classes, d.cfg.m)
        z_id = hashlib.sha256(b"extra tuple inputs %d" % i).digest()  # other inputs: a tuple repeats none
        tup = TestTuple(z_id, first.del_id, d.cfg.m, f_int(d.del_model, truth), d.creator.public_key,
                        EMPTY_SIGNATURE)
        tuples.append(sign(tup, d.creator, d.chain_id))
        truths.append(truth)
    keys = d.committer_for(0)
    block, outcome = build_problem_block(d.proposal, keys, period_end(d.params, 0), d.env, extra_tuples=tuples)
    d._accept(block, outcome)
    d.bond_validators()
    return d, truths


def multi_tuple_proof(d: Devnet, keys: KeyPair, label_sets: Sequence[np.ndarray], tag: str) -> Proof:
    """Register a digest and build a PoI over several tuples (one label vector each)."""
    from chain.labels import labels_hash
    from chain.settlement import model_order_seed
    from del_embed.integer import f_int

    digest = digest_for(tag)
    register(d, keys, digest)
    vecs = tuple(array_to_labels(x) for x in label_sets)
    poi = PoI(d.chain_id, d.period + 1, d.state.head, digest, tuple(f_int(d.del_model, x) for x in label_sets),
              labels_hash(vecs), tuple(() for _ in vecs), model_order_seed(vecs[0]), keys.public_key, EMPTY_SIGNATURE)
    poi = sign(poi, keys, d.chain_id)
    reveal = sign(Reveal(d.chain_id, poi.hash, vecs, keys.public_key, EMPTY_SIGNATURE), keys, d.chain_id)
    return Proof(keys, digest, np.asarray(label_sets[0]), poi, reveal, votes_for(d, poi, reveal))
