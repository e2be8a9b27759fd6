"""A block's receipt as the store keeps it: what executing the block did.

``process_block`` returns a ``BlockReceipt`` (fees paid, the PoI it anchored, the
settlement it decided with its rewards and slashes, the season note) beside the
new state. The store writes it with the block, in the same batch, so readers (RPC,
the web page) never execute the chain to learn it. The encoding is canonical
msgpack with the chain codec's field rules (amounts as 16 bytes), so a receipt
decodes to exactly the value execution produced.
"""

from __future__ import annotations

from typing import Any, Final

from . import constants as C
from .codec import Amount, Bytes, ListOf, Optional_, Str, UInt, pack, unpack_canonical
from .errors import DecodeError
from .outcome import BlockReceipt, Settlement

MAX_NOTE_BYTES: Final[int] = 4096  # a settlement's reason or a season note: a sentence, never data


class _RewardPair:
    """``(address, amount)``: one validator's reward in a settlement."""

    address = Bytes(exact=C.ADDRESS_SIZE)
    amount = Amount()

    def to_obj(self, value: tuple[bytes, int]) -> list[Any]:
        return [self.address.to_obj(value[0]), self.amount.to_obj(value[1])]

    def from_obj(self, obj: Any) -> tuple[bytes, int]:
        if type(obj) is not list or len(obj) != 2:
            raise DecodeError("a validator reward is [address, amount]")
        return self.address.from_obj(obj[0]), self.amount.from_obj(obj[1])


SETTLEMENT_FIELDS: Final = (
    ("poi_hash", Bytes(exact=C.HASH_SIZE)),
    ("improver", Bytes(exact=C.ADDRESS_SIZE)),
    ("outcome", Str(32)),
    ("distances", ListOf(UInt(32), C.MAX_TUPLES)),
    ("improver_reward", Amount()),
    ("validator_rewards", ListOf(_RewardPair(), C.MAX_VOTES_PER_BLOCK)),
    ("slashed", Amount()),
    ("reason", Str(MAX_NOTE_BYTES)),
)


class _SettlementCodec:
    def to_obj(self, value: Settlement) -> list[Any]:
        return [codec.to_obj(getattr(value, name)) for name, codec in SETTLEMENT_FIELDS]

    def from_obj(self, obj: Any) -> Settlement:
        return Settlement(**_fields_from_obj("Settlement", SETTLEMENT_FIELDS, obj))


RECEIPT_FIELDS: Final = (
    ("settlement", Optional_(_SettlementCodec())),
    ("anchored", Optional_(Bytes(exact=C.HASH_SIZE))),
    ("fees", Amount()),
    ("season", Str(MAX_NOTE_BYTES)),
)


def _fields_from_obj(what: str, table: Any, obj: Any) -> dict[str, Any]:
    if type(obj) is not list or len(obj) != len(table):
        raise DecodeError(f"{what}: expected an array of {len(table)} fields")
    try:
        return {name: codec.from_obj(item) for (name, codec), item in zip(table, obj)}
    except DecodeError as exc:
        raise DecodeError(f"{what}: {exc}") from None


def encode_receipt(receipt: BlockReceipt) -> bytes:
    return pack([codec.to_obj(getattr(receipt, name)) for name, codec in RECEIPT_FIELDS])


def decode_receipt(data: bytes) -> BlockReceipt:
    """The stored receipt, or ``DecodeError`` for bytes no store wrote."""
    return BlockReceipt(**_fields_from_obj("BlockReceipt", RECEIPT_FIELDS, unpack_canonical(data)))
