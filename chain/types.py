"""The problem definition and the block (docs/design.md §4), each with its canonical schema.

Types are frozen dataclasses; ``FIELDS`` fixes the encoding order. Signed types
end in ``signature`` and name their signer field in ``SIGNER``; what is signed
is the encoding of every other field, behind the type's domain tag and the
chain id (see ``chain.signing``). What a block carries has its own modules:
``chain.proofs`` (sealed holdout, PoI, vote, reveals), ``chain.payloads``
(transactions) and ``chain.header`` (the block header).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, ClassVar, Final

import msgpack

from . import constants as C
from .codec import ListOf, Optional_, Schema, Str, Struct, pack, schema, struct_from_obj, unpack_canonical
from .crypto import sha256
from .errors import DecodeError
from .fields import ADDRESS, AMOUNT, EMBEDDING, HASH, I64, PUBKEY, SIG, U8, U16, U32, U64
from .header import BlockHeader
from .payloads import Transaction, Voucher
from .proofs import PoI, Reveal, SealedHoldout, SeasonReveal, Vote


# ---------------------------------------------------------------------------
# Problem definition
# ---------------------------------------------------------------------------
@schema
@dataclass(frozen=True)
class InputSpec(Schema):
    """Shape and dtype of one model input; the range is a rational lo/den .. hi/den."""

    shape: tuple[int, ...]
    dtype: str
    range_num_low: int
    range_num_high: int
    range_den: int

    FIELDS = (
        ("shape", ListOf(U32, C.MAX_SHAPE_DIMS)),
        ("dtype", Str(C.MAX_DTYPE_BYTES)),
        ("range_num_low", I64),
        ("range_num_high", I64),
        ("range_den", U64),
    )


@schema
@dataclass(frozen=True)
class Allocation(Schema):
    address: bytes
    amount: int

    FIELDS = (("address", ADDRESS), ("amount", AMOUNT))


@schema
@dataclass(frozen=True)
class TestTuple(Schema):
    """``(Z, f, y_t)``: content ids of the inputs and the DEL, and ``y_t = f_int(x_t)``."""

    z_id: bytes
    del_id: bytes
    m: int
    y_t: tuple[int, ...]
    contributor: bytes
    signature: bytes

    FIELDS = (
        ("z_id", HASH),
        ("del_id", HASH),
        ("m", U32),
        ("y_t", EMBEDDING),
        ("contributor", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_TUPLE
    SIGNER: ClassVar[str] = "contributor"
    __test__ = False  # not a pytest class


@schema
@dataclass(frozen=True)
class ProblemParams(Schema):
    """Every per-problem constant; fixed at creation."""

    name: str
    input_spec: InputSpec
    num_classes: int
    token_symbol: str
    decimals: int
    t_p: int  # seconds, problem-definition period
    t_b: int  # seconds, competition period
    grace: int  # seconds after a period's end before out-of-turn commits
    delta_ppb: int  # an improvement must beat d_c by more than this
    reward_a: int
    reward_scale: int  # base units paid for R = 1
    committers: tuple[bytes, ...]
    validator_bond: int
    improver_bond: int
    contributor_bond: int
    min_fee: int  # base units every tx pays at least; at least 1 (no free spam)
    tie_margin_ppb: int  # top-two score gap (in 1e-9 of a score) that makes a position ambiguous
    max_ambiguous: int
    max_model_bytes: int
    max_infer_ms: int
    max_votes: int
    quorum_ppb: int  # share of the bonded stake whose votes an anchor, and matching votes a settlement, need
    unbonding_periods: int
    season_periods: int  # S; 0 = no seasons
    reveal_window: int  # W periods
    holdout_margin_ppb: int  # the true holdout gain over the reference model that the problem pays for
    consistency_ppb: int  # the DEL's relative fidelity: |mean d - e_h| <= this * max(d, e_h) + sampling slack
    holdout_z_centi: int  # z-score of the holdout tests, in hundredths (258 = one-sided 99.5%)
    genesis: tuple[Allocation, ...]
    t0: int  # seconds since the epoch
    # Committers by transaction (issue 17). All zero: the list above is the whole, fixed set.
    committer_bond: int = 0  # base units a RegisterCommitter locks; 0 = nobody may register
    committer_delay: int = 0  # D: a change made in period p takes effect at period p + D (>= 1 when bonded)
    committer_miss_limit: int = 0  # in-turn slots filled out of turn in a row that remove a committer; 0 = never

    FIELDS = (
        ("name", Str(C.MAX_NAME_BYTES)),
        ("input_spec", Struct(InputSpec)),
        ("num_classes", U8),
        ("token_symbol", Str(C.MAX_SYMBOL_BYTES)),
        ("decimals", U8),
        ("t_p", U32),
        ("t_b", U32),
        ("grace", U32),
        ("delta_ppb", U32),
        ("reward_a", U8),
        ("reward_scale", AMOUNT),
        ("committers", ListOf(PUBKEY, C.MAX_COMMITTERS)),
        ("validator_bond", AMOUNT),
        ("improver_bond", AMOUNT),
        ("contributor_bond", AMOUNT),
        ("min_fee", AMOUNT),
        ("tie_margin_ppb", U32),
        ("max_ambiguous", U32),
        ("max_model_bytes", U64),
        ("max_infer_ms", U32),
        ("max_votes", U16),
        ("quorum_ppb", U32),
        ("unbonding_periods", U32),
        ("season_periods", U32),
        ("reveal_window", U32),
        ("holdout_margin_ppb", U32),
        ("consistency_ppb", U32),
        ("holdout_z_centi", U16),
        ("genesis", ListOf(Struct(Allocation), C.MAX_GENESIS_ALLOCATIONS)),
        ("t0", U64),
        ("committer_bond", AMOUNT),
        ("committer_delay", U32),
        ("committer_miss_limit", U32),
    )


@schema
@dataclass(frozen=True)
class Proposal(Schema):
    """A signed problem proposal; the chain id is the hash of its encoding."""

    params: ProblemParams
    first_tuple: TestTuple
    holdout: SealedHoldout | None
    creator: bytes
    signature: bytes

    FIELDS = (
        ("params", Struct(ProblemParams)),
        ("first_tuple", Struct(TestTuple)),
        ("holdout", Optional_(Struct(SealedHoldout))),
        ("creator", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_PROPOSAL
    SIGNER: ClassVar[str] = "creator"

    @cached_property
    def chain_id(self) -> bytes:
        return sha256(self.encode())

# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------
@schema
@dataclass(frozen=True)
class Anchor(Schema):
    """This period's winning PoI and its votes; nothing is paid until settlement."""

    poi: PoI
    votes: tuple[Vote, ...]

    FIELDS = (("poi", Struct(PoI)), ("votes", ListOf(Struct(Vote), C.MAX_VOTES_PER_BLOCK)))


@schema
@dataclass(frozen=True)
class ProblemBody(Schema):
    proposal: Proposal
    extra_tuples: tuple[TestTuple, ...]

    FIELDS = (
        ("proposal", Struct(Proposal)),
        ("extra_tuples", ListOf(Struct(TestTuple), C.MAX_TUPLES - 1)),
    )


@schema
@dataclass(frozen=True)
class ImprovementBody(Schema):
    transactions: tuple[Transaction, ...]
    settlement: Reveal | None
    season_reveal: SeasonReveal | None
    anchor: Anchor | None

    FIELDS = (
        ("transactions", ListOf(Struct(Transaction), C.MAX_TXS_PER_BLOCK)),
        ("settlement", Optional_(Struct(Reveal))),
        ("season_reveal", Optional_(Struct(SeasonReveal))),
        ("anchor", Optional_(Struct(Anchor))),
    )




class BodyCodec:
    """A block body: ``[kind, fields]`` so the decoder knows which schema applies."""

    def to_obj(self, value: ProblemBody | ImprovementBody) -> list[Any]:
        if isinstance(value, ProblemBody):
            return [C.KIND_PROBLEM, Struct(ProblemBody).to_obj(value)]
        if isinstance(value, ImprovementBody):
            return [C.KIND_IMPROVEMENT, Struct(ImprovementBody).to_obj(value)]
        raise DecodeError(f"not a block body: {type(value).__name__}")

    def from_obj(self, obj: Any) -> ProblemBody | ImprovementBody:
        if type(obj) is not list or len(obj) != 2:
            raise DecodeError("a body is [kind, fields]")
        kind = U8.from_obj(obj[0])
        if kind == C.KIND_PROBLEM:
            return Struct(ProblemBody).from_obj(obj[1])
        if kind == C.KIND_IMPROVEMENT:
            return Struct(ImprovementBody).from_obj(obj[1])
        raise DecodeError(f"unknown block kind {kind}")


@schema
@dataclass(frozen=True)
class Block(Schema):
    header: BlockHeader
    body: ProblemBody | ImprovementBody

    FIELDS = (("header", Struct(BlockHeader)), ("body", BodyCodec()))

    @property
    def hash(self) -> bytes:
        return self.header.hash


def _max_header_bytes() -> int:
    """The longest canonical header: every integer at its codec's maximum."""
    widest = BlockHeader(C.ZERO_HASH, (1 << 64) - 1, C.ZERO_HASH, 255, (1 << 32) - 1, (1 << 64) - 1,
                         b"\x00" * C.PUBKEY_SIZE, C.ZERO_HASH, C.ZERO_HASH, b"\x00" * C.SIGNATURE_SIZE)
    return len(widest.encode())


MAX_HEADER_BYTES: Final[int] = _max_header_bytes()
BLOCK_ARRAY_PREFIX: Final[bytes] = b"\x92"  # msgpack fixarray of 2: [header, body]


def split_block(data: bytes) -> tuple[BlockHeader, bytes]:
    """Decode only the header of an encoded block; return it and the body's raw bytes.

    At most ``MAX_HEADER_BYTES`` are parsed, so a header's signature can be checked
    for a fixed, tiny cost whatever the body holds (issue 14). The block is canonical
    iff the header is (checked here) and the body is (checked by ``decode_body``).
    """
    if not isinstance(data, (bytes, bytearray)) or not bytes(data[:1]) == BLOCK_ARRAY_PREFIX:
        raise DecodeError("a block is a 2-item array")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=MAX_HEADER_BYTES,
                                max_str_len=0, max_map_len=0, max_ext_len=0,
                                max_array_len=len(BlockHeader.FIELDS), max_bin_len=C.SIGNATURE_SIZE)
    unpacker.feed(bytes(data[1 : 1 + MAX_HEADER_BYTES]))
    try:
        obj = unpacker.unpack()
    except msgpack.OutOfData:
        raise DecodeError(f"block header longer than {MAX_HEADER_BYTES} bytes") from None
    except Exception as exc:  # msgpack raises several kinds on hostile input
        raise DecodeError(f"malformed block header: {type(exc).__name__}") from None
    end = 1 + unpacker.tell()
    if pack(obj) != bytes(data[1:end]):
        raise DecodeError("non-canonical block header")
    return struct_from_obj(BlockHeader, obj), bytes(data[end:])


def decode_body(raw: bytes, check: "Callable[[Any], None] | None" = None) -> ProblemBody | ImprovementBody:
    """A body from its bytes; ``check`` sees the raw lists before any object is built."""
    obj = unpack_canonical(raw)
    if check is not None:
        check(obj)
    return BodyCodec().from_obj(obj)


def body_hash(body: ProblemBody | ImprovementBody) -> bytes:
    return sha256(pack(BodyCodec().to_obj(body)))


SIGNED_TYPES: Final[tuple[type, ...]] = (
    TestTuple,
    Proposal,
    PoI,
    Vote,
    Reveal,
    SeasonReveal,
    Transaction,
    BlockHeader,
    Voucher,
)
