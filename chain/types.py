"""The whole data model of docs/design.md §4, each type with its canonical schema.

Types are frozen dataclasses; ``FIELDS`` fixes the encoding order. Signed types
end in ``signature`` and name their signer field in ``SIGNER``; what is signed
is the encoding of every other field, behind the type's domain tag and the
chain id (see ``chain.signing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, ClassVar, Final, Union

import msgpack

from . import constants as C
from .codec import (
    Amount,
    Bytes,
    ListOf,
    Optional_,
    Schema,
    SInt,
    Str,
    Struct,
    UInt,
    pack,
    schema,
    struct_from_obj,
    unpack_canonical,
)
from .crypto import sha256
from .errors import DecodeError

U8, U16, U32, U64 = UInt(8), UInt(16), UInt(32), UInt(64)
I64 = SInt(64)
AMOUNT = Amount()
HASH = Bytes(exact=C.HASH_SIZE)
PUBKEY = Bytes(exact=C.PUBKEY_SIZE)
SIG = Bytes(exact=C.SIGNATURE_SIZE)
ADDRESS = Bytes(exact=C.ADDRESS_SIZE)
LABELS = Bytes(max_len=C.MAX_LABELS)  # one byte per label
EMBEDDING = ListOf(SInt(32), C.MAX_EMBEDDING_DIM)


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
class SealedHoldout(Schema):
    """Holdout inputs and a commitment ``H(salt || canonical(x_h))`` to their labels."""

    z_h_id: bytes
    m_h: int
    commitment: bytes

    FIELDS = (("z_h_id", HASH), ("m_h", U32), ("commitment", HASH))


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
# Competition: proof of improvement, votes, reveal
# ---------------------------------------------------------------------------
@schema
@dataclass(frozen=True)
class Ambiguous(Schema):
    """A position whose top-two scores are within the tie margin, and the prover's label."""

    index: int
    label: int

    FIELDS = (("index", U32), ("label", U8))


AMBIGUOUS_SET = ListOf(Struct(Ambiguous), C.MAX_AMBIGUOUS)


@schema
@dataclass(frozen=True)
class PoI(Schema):
    """A proof of improvement for period ``period``.

    ``ambiguous`` has one set per test tuple, then one for the holdout inputs
    when the problem has a sealed holdout; ``labels_hash`` commits to the same
    label vectors in the same order (see ``chain.labels``).
    """

    chain_id: bytes
    period: int
    parent: bytes
    model_digest: bytes
    ys: tuple[tuple[int, ...], ...]
    labels_hash: bytes
    ambiguous: tuple[tuple[Ambiguous, ...], ...]
    order_seed: bytes  # H(domain || model bytes): fixed with the digest, orders the votes (validators check it)
    prover: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("period", U32),
        ("parent", HASH),
        ("model_digest", HASH),
        ("ys", ListOf(EMBEDDING, C.MAX_TUPLES)),
        ("labels_hash", HASH),
        ("ambiguous", ListOf(AMBIGUOUS_SET, C.MAX_TUPLES + 1)),
        ("order_seed", HASH),
        ("prover", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_POI
    SIGNER: ClassVar[str] = "prover"

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.encode())


@schema
@dataclass(frozen=True)
class Vote(Schema):
    """A validator's verification: ``labels_digest = H(pk_V || masked labels)``."""

    chain_id: bytes
    period: int
    poi_hash: bytes
    parent: bytes
    labels_digest: bytes
    validator: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("period", U32),
        ("poi_hash", HASH),
        ("parent", HASH),
        ("labels_digest", HASH),
        ("validator", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_VOTE
    SIGNER: ClassVar[str] = "validator"


@schema
@dataclass(frozen=True)
class Reveal(Schema):
    """The improver's labels for an anchored PoI, published in the next period."""

    chain_id: bytes
    poi_hash: bytes
    labels: tuple[bytes, ...]
    prover: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("poi_hash", HASH),
        ("labels", ListOf(LABELS, C.MAX_TUPLES + 1)),
        ("prover", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_REVEAL
    SIGNER: ClassVar[str] = "prover"


@schema
@dataclass(frozen=True)
class SeasonReveal(Schema):
    """The contributor opens the sealed holdout: ``salt`` and the true labels ``x_h``."""

    chain_id: bytes
    season: int
    salt: bytes
    labels: bytes
    contributor: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("season", U32),
        ("salt", Bytes(max_len=C.MAX_SALT_BYTES)),
        ("labels", LABELS),
        ("contributor", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_SEASON_REVEAL
    SIGNER: ClassVar[str] = "contributor"


# ---------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------
@schema
@dataclass(frozen=True)
class Transfer(Schema):
    to: bytes
    amount: int

    FIELDS = (("to", ADDRESS), ("amount", AMOUNT))
    KIND: ClassVar[int] = 0


@schema
@dataclass(frozen=True)
class RegisterDigest(Schema):
    """Claims a model before its PoI may be anchored (front-running defence).

    ``claim`` is ``model_claim(prover, digest)``: it binds the prover and hides the
    digest until the PoI, so a copy of the tx from another key registers the
    claim for the prover who made it and blocks no one.
    """

    claim: bytes

    FIELDS = (("claim", HASH),)
    KIND: ClassVar[int] = 1


@schema
@dataclass(frozen=True)
class RegisterValidator(Schema):
    """Locks the problem's validator bond; votes count from the next block on."""

    FIELDS = ()
    KIND: ClassVar[int] = 2


@schema
@dataclass(frozen=True)
class WithdrawBond(Schema):
    """Starts unbonding; a second withdraw after the delay returns the bond."""

    FIELDS = ()
    KIND: ClassVar[int] = 3


@schema
@dataclass(frozen=True)
class OfferService(Schema):
    """A model runner's inference offer."""

    price: int
    peer_id: bytes
    model_digest: bytes

    FIELDS = (
        ("price", AMOUNT),
        ("peer_id", Bytes(max_len=C.MAX_PEER_ID_BYTES)),
        ("model_digest", HASH),
    )
    KIND: ClassVar[int] = 4


@schema
@dataclass(frozen=True)
class Rate(Schema):
    """An up (+1) or down (-1) vote on a participant's reputation."""

    target: bytes
    score: int

    FIELDS = (("target", ADDRESS), ("score", SInt(8)))
    KIND: ClassVar[int] = 5

    def __post_init__(self) -> None:
        if self.score not in (-1, 1):
            raise ValueError(f"a rating is +1 or -1, not {self.score}")


@schema
@dataclass(frozen=True)
class NewHoldout(Schema):
    """The contributor seals the holdout of the next season."""

    holdout: SealedHoldout

    FIELDS = (("holdout", Struct(SealedHoldout)),)
    KIND: ClassVar[int] = 6


@schema
@dataclass(frozen=True)
class Voucher(Schema):
    """A model user's promise to a runner: ``cumulative`` base units in total from one channel.

    Signed by the payer off chain and handed to the runner with each paid call; the
    runner redeems the highest one in a ``RedeemVoucher`` tx (docs/market.md).
    ``epoch`` names the channel's current opening, so vouchers of a closed channel
    are worthless after it is reopened.
    """

    chain_id: bytes
    runner: bytes  # address
    epoch: int
    cumulative: int
    payer: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("runner", ADDRESS),
        ("epoch", U32),
        ("cumulative", AMOUNT),
        ("payer", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_VOUCHER
    SIGNER: ClassVar[str] = "payer"


@schema
@dataclass(frozen=True)
class OpenChannel(Schema):
    """Locks ``amount`` of the sender's funds for paying ``runner``; closable from ``expires_period``.

    On an open channel it adds to the deposit and may push the expiry later.
    """

    runner: bytes
    amount: int
    expires_period: int

    FIELDS = (("runner", ADDRESS), ("amount", AMOUNT), ("expires_period", U32))
    KIND: ClassVar[int] = 7


@schema
@dataclass(frozen=True)
class RedeemVoucher(Schema):
    """The runner (the sender) collects ``voucher.cumulative`` minus what it redeemed before."""

    voucher: Voucher

    FIELDS = (("voucher", Struct(Voucher)),)
    KIND: ClassVar[int] = 8


@schema
@dataclass(frozen=True)
class CloseChannel(Schema):
    """The payer (the sender) takes back the unredeemed deposit once the channel has expired."""

    runner: bytes

    FIELDS = (("runner", ADDRESS),)
    KIND: ClassVar[int] = 9


@schema
@dataclass(frozen=True)
class RegisterCommitter(Schema):
    """Locks the problem's committer bond; the sender joins the rotation ``committer_delay`` periods later."""

    FIELDS = ()
    KIND: ClassVar[int] = 11


@schema
@dataclass(frozen=True)
class LeaveCommitter(Schema):
    """First call: leave the rotation ``committer_delay`` periods later. A later call, once
    ``committer_delay`` more periods have passed, returns what is left of the bond."""

    FIELDS = ()
    KIND: ClassVar[int] = 12


Payload = Union[Transfer, RegisterDigest, RegisterValidator, WithdrawBond, OfferService, Rate, NewHoldout,
                OpenChannel, RedeemVoucher, CloseChannel, "ReportEquivocation", RegisterCommitter, LeaveCommitter]


def _payload_types() -> dict[int, type]:
    return {
        cls.KIND: cls  # type: ignore[attr-defined]
        for cls in (Transfer, RegisterDigest, RegisterValidator, WithdrawBond, OfferService, Rate, NewHoldout,
                    OpenChannel, RedeemVoucher, CloseChannel, ReportEquivocation, RegisterCommitter, LeaveCommitter)
    }


class PayloadCodec:
    """``[kind, fields]``; an unknown kind is a decode error."""

    def to_obj(self, value: Payload) -> list[Any]:
        if type(value) not in PAYLOAD_TYPES.values():
            raise DecodeError(f"not a transaction payload: {type(value).__name__}")
        return [value.KIND, Struct(type(value)).to_obj(value)]

    def from_obj(self, obj: Any) -> Payload:
        if type(obj) is not list or len(obj) != 2:
            raise DecodeError("a payload is [kind, fields]")
        kind = U8.from_obj(obj[0])
        cls = PAYLOAD_TYPES.get(kind)
        if cls is None:
            raise DecodeError(f"unknown transaction kind {kind}")
        return Struct(cls).from_obj(obj[1])  # type: ignore[no-any-return]


@schema
@dataclass(frozen=True)
class Transaction(Schema):
    chain_id: bytes
    nonce: int
    fee: int
    payload: Payload
    sender: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("nonce", U64),
        ("fee", AMOUNT),
        ("payload", PayloadCodec()),
        ("sender", PUBKEY),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_TX
    SIGNER: ClassVar[str] = "sender"

    @cached_property
    def hash(self) -> bytes:
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


@schema
@dataclass(frozen=True)
class BlockHeader(Schema):
    chain_id: bytes
    height: int
    parent: bytes
    kind: int
    period: int
    timestamp: int
    committer: bytes
    body_hash: bytes
    state_root: bytes
    signature: bytes

    FIELDS = (
        ("chain_id", HASH),
        ("height", U64),
        ("parent", HASH),
        ("kind", U8),
        ("period", U32),
        ("timestamp", U64),
        ("committer", PUBKEY),
        ("body_hash", HASH),
        ("state_root", HASH),
        ("signature", SIG),
    )
    DOMAIN: ClassVar[bytes] = C.DOMAIN_HEADER
    SIGNER: ClassVar[str] = "committer"

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.encode())


@schema
@dataclass(frozen=True)
class ReportEquivocation(Schema):
    """Two headers one committer signed for one period: anyone may submit them (issue 14).

    The evidence is the signed headers alone, as Ethereum's ``ProposerSlashing``:
    no body is needed, since the signature covers the body hash.
    """

    first: BlockHeader
    second: BlockHeader

    FIELDS = (("first", Struct(BlockHeader)), ("second", Struct(BlockHeader)))
    KIND: ClassVar[int] = 10


PAYLOAD_TYPES: Final[dict[int, type]] = _payload_types()


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


def model_claim(prover: bytes, digest: bytes) -> bytes:
    """``H(domain || pk || digest)``: what a ``RegisterDigest`` registers for a prover's model."""
    return sha256(C.DOMAIN_MODEL_CLAIM + prover + digest)


def body_hash(body: ProblemBody | ImprovementBody) -> bytes:
    from .codec import pack

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
