"""Transaction payloads and the signed ``Transaction`` that carries them (docs/design.md §4).

A payload is encoded as ``[kind, fields]``; ``KIND`` is its number on the wire and an
unknown kind is a decode error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Final, Union

from . import constants as C
from .codec import Bytes, Schema, SInt, Struct, schema
from .crypto import sha256
from .errors import DecodeError
from .fields import ADDRESS, AMOUNT, HASH, PUBKEY, SIG, U8, U32, U64
from .header import BlockHeader
from .proofs import SealedHoldout

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


Payload = Union[Transfer, RegisterDigest, RegisterValidator, WithdrawBond, OfferService, Rate, NewHoldout,
                OpenChannel, RedeemVoucher, CloseChannel, ReportEquivocation, RegisterCommitter, LeaveCommitter]


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



PAYLOAD_TYPES: Final[dict[int, type]] = _payload_types()

