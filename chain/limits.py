"""Economic and size limits: minimum fees, the block's byte budget, the supply bound, and the
largest objects a problem allows against the network caps (issue 14, findings 5, 10, 11).

Each rule is one function raising its own typed error; the transition, the mempool and the
committer all call these, so a rule is written once. Sizes are measured by encoding the
largest object of each kind a problem allows (every integer at its widest, every list and
byte string at its longest), so they follow the schemas in ``chain.types`` without a second
copy of the encoding in arithmetic.
"""

from __future__ import annotations

from typing import Sequence

from . import constants as C
from .errors import BlockTransactionsTooLarge, FeeTooLow, MinimumFeeMissing, SizeBeyondNetworkCap, SupplyTooLarge
from .header import BlockHeader
from .payloads import Transaction
from .proofs import Ambiguous, PoI, Reveal, SeasonReveal, Vote
from .types import Anchor, Block, ImprovementBody, ProblemParams, TestTuple

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
I32_MIN = -(1 << 31)
FULL_HASH = b"\xff" * C.HASH_SIZE
FULL_KEY = b"\xff" * C.PUBKEY_SIZE
FULL_SIG = b"\xff" * C.SIGNATURE_SIZE
# An empty ambiguous set encodes its array header in 1 byte; a set of 2^16 or more in 5.
AMBIGUOUS_SET_HEADER_SLACK = 4
# The tx list's array header: 1 byte when empty, at most 5 with any count.
TX_LIST_HEADER_SLACK = 4


# ---------------------------------------------------------------------------
# Fees and the block's byte budget (finding 5)
# ---------------------------------------------------------------------------
def tx_size(tx: Transaction) -> int:
    """Encoded bytes of ``tx``; the fee is a fixed-width amount, so this does not depend on it."""
    return len(tx.encode())


def check_fee(params: ProblemParams, tx: Transaction) -> None:
    """A tx pays at least the problem's minimum fee: spam costs its sender, and a key that was
    never funded cannot send at all (so it adds no account record either)."""
    if tx.fee < params.min_fee:
        raise FeeTooLow(tx.fee, params.min_fee)


def fits_tx_budget(used_bytes: int, size: int) -> bool:
    """Whether a tx of ``size`` bytes still fits a block whose txs already take ``used_bytes``."""
    return used_bytes + size <= C.MAX_BLOCK_TX_BYTES


def check_block_tx_bytes(txs: Sequence[Transaction]) -> None:
    """A block's transactions stay within the byte budget, so the block fits its network cap."""
    size = sum(tx_size(tx) for tx in txs)
    if size > C.MAX_BLOCK_TX_BYTES:
        raise BlockTransactionsTooLarge(size, C.MAX_BLOCK_TX_BYTES)


def fee_rank(tx: Transaction) -> tuple[int, int]:
    """``(fee, size)``: compare two txs' fee per byte as ``fee_a * size_b`` vs ``fee_b * size_a``."""
    return tx.fee, tx_size(tx)


# ---------------------------------------------------------------------------
# Supply (finding 10)
# ---------------------------------------------------------------------------
def mintable_bound(params: ProblemParams) -> int:
    """An upper bound on what the chain can ever have minted and not burned (``MINTABLE_SCALES``)."""
    return C.MINTABLE_SCALES * params.reward_scale


def check_supply(params: ProblemParams) -> None:
    """Genesis plus everything mintable fits an amount, so no balance can overflow the encoding."""
    genesis = sum(a.amount for a in params.genesis)
    mintable = mintable_bound(params)
    if genesis + mintable > C.MAX_AMOUNT:
        raise SupplyTooLarge(genesis, mintable, C.MAX_AMOUNT)


def check_min_fee_param(params: ProblemParams) -> None:
    if params.min_fee < 1:
        raise MinimumFeeMissing(params.min_fee)


# ---------------------------------------------------------------------------
# Largest objects of a problem (finding 11)
# ---------------------------------------------------------------------------
def label_sizes(tuples: Sequence[TestTuple], holdout_m: int) -> list[int]:
    """Label vector lengths a PoI may commit to: one per tuple, then the model's and the
    confirmed model's labels on ``Z_h`` (``chain.season.label_vector_sizes`` at its largest)."""
    return [t.m for t in tuples] + ([holdout_m, holdout_m] if holdout_m else [])


def largest_poi(params: ProblemParams, tuples: Sequence[TestTuple], holdout_m: int) -> PoI:
    sets = len(label_sizes(tuples, holdout_m))
    full_set = tuple(Ambiguous(U32_MAX, 0xFF) for _ in range(params.max_ambiguous))
    ambiguous = (full_set,) + tuple(() for _ in range(sets - 1))
    ys = tuple(tuple(I32_MIN for _ in t.y_t) for t in tuples)
    return PoI(FULL_HASH, U32_MAX, FULL_HASH, FULL_HASH, ys, FULL_HASH, ambiguous, FULL_HASH, FULL_KEY, FULL_SIG)


def largest_poi_bytes(params: ProblemParams, tuples: Sequence[TestTuple], holdout_m: int) -> int:
    sets = len(label_sizes(tuples, holdout_m))
    return len(largest_poi(params, tuples, holdout_m).encode()) + AMBIGUOUS_SET_HEADER_SLACK * sets


def largest_reveal(tuples: Sequence[TestTuple], holdout_m: int) -> Reveal:
    labels = tuple(b"\xff" * size for size in label_sizes(tuples, holdout_m))
    return Reveal(FULL_HASH, FULL_HASH, labels, FULL_KEY, FULL_SIG)


def largest_season_reveal(holdout_m: int) -> SeasonReveal | None:
    if not holdout_m:
        return None
    return SeasonReveal(FULL_HASH, U32_MAX, b"\xff" * C.MAX_SALT_BYTES, b"\xff" * holdout_m, FULL_KEY, FULL_SIG)


def largest_vote() -> Vote:
    return Vote(FULL_HASH, U32_MAX, FULL_HASH, FULL_HASH, FULL_HASH, FULL_KEY, FULL_SIG)


def largest_block_bytes(params: ProblemParams, tuples: Sequence[TestTuple], holdout_m: int) -> int:
    """A block with the widest header, the largest reveal, season reveal and anchor, and a full tx budget."""
    header = BlockHeader(FULL_HASH, U64_MAX, FULL_HASH, 0xFF, U32_MAX, U64_MAX, FULL_KEY, FULL_HASH, FULL_HASH,
                         FULL_SIG)
    anchor = Anchor(largest_poi(params, tuples, holdout_m), tuple(largest_vote() for _ in range(params.max_votes)))
    body = ImprovementBody((), largest_reveal(tuples, holdout_m), largest_season_reveal(holdout_m), anchor)
    sets = len(label_sizes(tuples, holdout_m))
    return (len(Block(header, body).encode()) + C.MAX_BLOCK_TX_BYTES + TX_LIST_HEADER_SLACK
            + AMBIGUOUS_SET_HEADER_SLACK * sets)


def check_message_sizes(params: ProblemParams, tuples: Sequence[TestTuple], holdout_m: int) -> None:
    """Every PoI, reveal, season reveal, vote and block the problem allows fits the network cap
    that carries it; otherwise an honest improvement could be valid and still never travel."""
    season_reveal = largest_season_reveal(holdout_m)
    sizes = {
        "PoI": (largest_poi_bytes(params, tuples, holdout_m), C.MAX_PROOF_MESSAGE_BYTES),
        "reveal": (len(largest_reveal(tuples, holdout_m).encode()), C.MAX_PROOF_MESSAGE_BYTES),
        "season reveal": (len(season_reveal.encode()) if season_reveal else 0, C.MAX_PROOF_MESSAGE_BYTES),
        "vote": (len(largest_vote().encode()), C.MAX_VOTE_MESSAGE_BYTES),
        "block": (largest_block_bytes(params, tuples, holdout_m), C.MAX_BLOCK_MESSAGE_BYTES),
    }
    for kind, (size, cap) in sizes.items():
        if size > cap:
            raise SizeBeyondNetworkCap(kind, size, cap)


__all__ = [
    "tx_size",
    "check_fee",
    "fits_tx_budget",
    "check_block_tx_bytes",
    "fee_rank",
    "mintable_bound",
    "check_supply",
    "check_min_fee_param",
    "check_message_sizes",
    "largest_poi_bytes",
    "largest_block_bytes",
]
