"""Canonical codec: round trips for every type, and hostile bytes raise only DecodeError."""

from __future__ import annotations

import dataclasses
import inspect

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import chain.header
import chain.payloads
import chain.proofs
import chain.records
import chain.types
from chain.codec import (
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
    unpack_canonical,
)
from chain.errors import DecodeError
from chain.payloads import PAYLOAD_TYPES, OfferService, PayloadCodec, Rate, RegisterDigest, Transaction, Transfer
from chain.proofs import PoI, SeasonReveal
from chain.records import Account
from chain.types import Anchor, Block, BodyCodec, ImprovementBody, InputSpec, ProblemBody, ProblemParams, TestTuple
from factories import fuzz_settings, make_proof


def _schema_types(module) -> list[type]:
    return sorted(
        (
            obj
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if obj.__module__ == module.__name__ and dataclasses.is_dataclass(obj) and issubclass(obj, Schema)
        ),
        key=lambda c: c.__name__,
    )


TYPES = [cls for module in (chain.types, chain.proofs, chain.payloads, chain.header) for cls in _schema_types(module)]
RECORDS = _schema_types(chain.records)
ALL_TYPES = TYPES + RECORDS

# Values a field must hold beyond its codec (checked in ``__post_init__``).
OVERRIDES = {(Rate, "score"): st.sampled_from([-1, 1])}

SMALL_LIST = 3  # list lengths in generated values (limits are tested apart)
SMALL_BYTES = 40


def strategy_for_codec(codec) -> st.SearchStrategy:
    if isinstance(codec, UInt):
        return st.integers(0, codec.limit - 1)
    if isinstance(codec, SInt):
        return st.integers(codec.low, codec.high - 1)
    if isinstance(codec, Amount):
        return st.integers(0, (1 << 128) - 1)
    if isinstance(codec, Bytes):
        if codec.exact is not None:
            return st.binary(min_size=codec.exact, max_size=codec.exact)
        return st.binary(max_size=min(codec.max_len, SMALL_BYTES))
    if isinstance(codec, Str):
        text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=min(codec.max_len, 12))
        return text.filter(lambda s: len(s.encode()) <= codec.max_len)
    if isinstance(codec, ListOf):
        return st.lists(strategy_for_codec(codec.item), max_size=min(codec.max_len, SMALL_LIST)).map(tuple)
    if isinstance(codec, Optional_):
        return st.none() | strategy_for_codec(codec.inner)
    if isinstance(codec, Struct):
        return strategy_for(codec.cls)
    if isinstance(codec, PayloadCodec):
        return st.one_of([strategy_for(cls) for cls in PAYLOAD_TYPES.values()])
    if isinstance(codec, BodyCodec):
        return st.one_of(strategy_for(ProblemBody), strategy_for(ImprovementBody))
    raise AssertionError(f"no strategy for codec {codec!r}: extend the test")


def strategy_for(cls: type) -> st.SearchStrategy:
    """A strategy for any schema'd dataclass, built from its ``FIELDS`` table."""
    fields = {
        name: OVERRIDES[(cls, name)] if (cls, name) in OVERRIDES
        else st.deferred(lambda c=codec: strategy_for_codec(c))
        for name, codec in cls.FIELDS
    }
    return st.builds(cls, **fields)


def test_every_type_is_covered():
    # the generic strategies must reach the whole data model, records included
    names = {c.__name__ for c in ALL_TYPES}
    for expected in ("Block", "BlockHeader", "Proposal", "ProblemParams", "PoI", "Vote", "Reveal", "SeasonReveal",
                     "Transaction", "Anchor", "ImprovementBody", "ProblemBody", "TestTuple", "SealedHoldout",
                     "Account", "ChainMeta", "Season", "PendingAnchor", "ProblemRecord", "Bond", "BestModel"):
        assert expected in names
    for cls in ALL_TYPES:
        for name, codec in cls.FIELDS:
            assert strategy_for_codec(codec) is not None, (cls, name)


def _decode_only_decode_error(cls: type, data: bytes) -> None:
    try:
        value = cls.decode(data)
    except DecodeError:
        return
    # whatever decodes is canonical: it re-encodes to the very same bytes
    assert value.encode() == data


def _mutate(data, encoded: bytes) -> bytes:
    out = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(out)))
        byte = data.draw(st.integers(0, 255))
        if op == "set" and pos < len(out):
            out[pos] = byte
        elif op == "insert":
            out.insert(pos, byte)
        elif pos < len(out):
            del out[pos]
    return bytes(out)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@fuzz_settings(15)
@given(data=st.data())
def test_round_trip(cls, data):
    value = data.draw(strategy_for(cls), label="value")
    encoded = value.encode()
    decoded = cls.decode(encoded)
    assert decoded == value
    assert decoded.encode() == encoded  # decode -> encode is byte-equal
    # every proper prefix is rejected
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        cls.decode(encoded[:cut])
    # trailing bytes are rejected
    extra = data.draw(st.binary(min_size=1, max_size=8), label="extra")
    with pytest.raises(DecodeError, match="malformed msgpack"):
        cls.decode(encoded + extra)
    # a mutated encoding either fails with DecodeError or is itself canonical
    _decode_only_decode_error(cls, _mutate(data, encoded))


# ---------------------------------------------------------------------------
# Fuzzed bytes
# ---------------------------------------------------------------------------
@fuzz_settings(300)
@given(cls=st.sampled_from(ALL_TYPES), data=st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(cls, data):
    _decode_only_decode_error(cls, data)


def _any_msgpack() -> st.SearchStrategy:
    """Arbitrary msgpack values: floats, maps, ext types, bools, nil, big and negative ints."""
    leaves = (
        st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats(allow_nan=False)
        | st.binary(max_size=40) | st.text(max_size=10)
        | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=20,
    )


@fuzz_settings(200)
@given(cls=st.sampled_from(ALL_TYPES), obj=_any_msgpack())
def test_arbitrary_msgpack_values_raise_only_decode_error(cls, obj):
    _decode_only_decode_error(cls, pack(obj))


@fuzz_settings(60)
@given(data=st.data())
def test_any_field_replaced_by_a_foreign_value_is_rejected(data):
    cls = data.draw(st.sampled_from(ALL_TYPES))
    value = data.draw(strategy_for(cls))
    obj = msgpack.unpackb(value.encode(), raw=False)
    if not obj:
        return
    index = data.draw(st.integers(0, len(obj) - 1))
    foreign = data.draw(st.floats(allow_nan=False) | st.dictionaries(st.text(max_size=3), st.integers(0, 9), min_size=1)
                        | st.booleans())
    obj[index] = foreign
    with pytest.raises(DecodeError):
        cls.decode(pack(obj))


# ---------------------------------------------------------------------------
# Specific hostile encodings
# ---------------------------------------------------------------------------
ACCOUNT = Account


def test_invalid_non_minimal_int():
    good = ACCOUNT(1, 2, 5).encode()
    assert good.endswith(b"\x05")
    # invalid nonce: 5 written as a uint8 (0xcc) instead of a positive fixint
    with pytest.raises(DecodeError, match="non-canonical"):
        ACCOUNT.decode(good[:-1] + b"\xcc\x05")
    # invalid nonce: 5 written as a uint64
    with pytest.raises(DecodeError, match="non-canonical"):
        ACCOUNT.decode(good[:-1] + b"\xcf" + (5).to_bytes(8, "big"))


def test_invalid_float():
    fields = [bytes(16), bytes(16)]
    # invalid nonce: a float64 where an integer belongs
    with pytest.raises(DecodeError, match="expected u64, got float"):
        ACCOUNT.decode(pack(fields + [5.0]))
    # invalid nonce: a float32 (which msgpack-python never emits: non-canonical)
    with pytest.raises(DecodeError, match="non-canonical"):
        ACCOUNT.decode(b"\x93" + pack(bytes(16)) * 2 + b"\xca\x40\xa0\x00\x00")


def test_invalid_map():
    # invalid container: a map instead of the field array
    with pytest.raises(DecodeError, match="expected an array, got dict"):
        ACCOUNT.decode(pack({"balance": bytes(16), "locked": bytes(16), "nonce": 5}))


def test_invalid_bool_as_int():
    # invalid nonce: msgpack true is not the integer 1
    with pytest.raises(DecodeError, match="expected u64, got bool"):
        ACCOUNT.decode(pack([bytes(16), bytes(16), True]))


def test_invalid_negative_unsigned():
    with pytest.raises(DecodeError, match="expected u64"):
        ACCOUNT.decode(pack([bytes(16), bytes(16), -1]))


def test_invalid_field_count():
    with pytest.raises(DecodeError, match="expected 3 fields, got 4"):
        ACCOUNT.decode(pack([bytes(16), bytes(16), 1, 2]))


def test_invalid_amount_size():
    # invalid balance: 17 bytes
    with pytest.raises(DecodeError, match="an amount is 16 bytes"):
        ACCOUNT.decode(pack([bytes(17), bytes(16), 1]))


def test_invalid_amount_is_an_int():
    # invalid balance: a msgpack int instead of 16 bytes
    with pytest.raises(DecodeError, match="an amount is 16 bytes"):
        ACCOUNT.decode(pack([7, bytes(16), 1]))


def test_invalid_unknown_transaction_kind(devnet):
    tx = devnet.tx(devnet.improver_keys[0], Transfer(bytes(20), 1))
    obj = msgpack.unpackb(tx.encode(), raw=False)
    assert obj[3][0] == Transfer.KIND
    obj[3] = [99, obj[3][1]]  # invalid payload kind
    with pytest.raises(DecodeError, match="unknown transaction kind 99"):
        Transaction.decode(pack(obj))


def test_invalid_payload_fields_of_another_kind(devnet):
    tx = devnet.tx(devnet.improver_keys[0], Transfer(bytes(20), 1))
    obj = msgpack.unpackb(tx.encode(), raw=False)
    obj[3] = [RegisterDigest.KIND, obj[3][1]]  # invalid: a Transfer's fields under kind 1
    with pytest.raises(DecodeError, match="RegisterDigest"):
        Transaction.decode(pack(obj))


def test_invalid_rating_score(devnet):
    tx = devnet.tx(devnet.improver_keys[0], Rate(bytes(20), 1))
    obj = msgpack.unpackb(tx.encode(), raw=False)
    obj[3][1][1] = 2  # invalid score: only +1 or -1
    with pytest.raises(DecodeError, match="a rating is"):
        Transaction.decode(pack(obj))


def test_invalid_unknown_block_kind(devnet):
    block = devnet.blocks[-1]
    obj = msgpack.unpackb(block.encode(), raw=False)
    obj[1] = [7, obj[1][1]]  # invalid body kind
    with pytest.raises(DecodeError, match="unknown block kind 7"):
        Block.decode(pack(obj))


def test_real_blocks_round_trip(devnet):
    make_proof(devnet)
    for block in devnet.blocks:
        encoded = block.encode()
        assert Block.decode(encoded) == block
        assert Block.decode(encoded).encode() == encoded


@pytest.mark.parametrize(
    "cls, index, value, phrase",
    [
        # invalid hash: 31 bytes
        (RegisterDigest, 0, bytes(31), "expected 32 bytes, got 31"),
        # invalid hash: 33 bytes
        (RegisterDigest, 0, bytes(33), "expected 32 bytes, got 33"),
        # invalid peer id: over MAX_PEER_ID_BYTES
        (OfferService, 1, bytes(129), "exceed the limit of 128"),
        # invalid salt: over MAX_SALT_BYTES
        (SeasonReveal, 2, bytes(65), "exceed the limit of 64"),
        # invalid name: over MAX_NAME_BYTES (counted in UTF-8 bytes)
        (ProblemParams, 0, "é" * 65, "string exceeds 128 bytes"),
        # invalid dtype: over MAX_DTYPE_BYTES
        (InputSpec, 1, "x" * 17, "string exceeds 16 bytes"),
        # invalid shape: more than MAX_SHAPE_DIMS dimensions
        (InputSpec, 0, [1] * 9, "exceeds the limit of 8"),
        # invalid ys: more than MAX_TUPLES embeddings
        (PoI, 4, [[1]] * 17, "exceeds the limit of 16"),
        # invalid committers: more than MAX_COMMITTERS
        (ProblemParams, 11, [bytes(32)] * 65, "exceeds the limit of 64"),
        # invalid votes: more than MAX_VOTES_PER_BLOCK
        (Anchor, 1, [None] * 257, "exceeds the limit of 256"),
        # invalid class count: u8 overflow
        (ProblemParams, 2, 256, "expected u8"),
        # invalid embedding entry: beyond i32
        (TestTuple, 3, [1 << 31], "TestTuple.y_t: .*out of range"),
        # invalid embedding entry: a float among integers
        (TestTuple, 3, [1, 2.0], "TestTuple.y_t: expected a list of integers"),
        # invalid label vector: one byte over MAX_LABELS
        (SeasonReveal, 3, bytes(1_000_001), "exceed the limit of 1000000"),
        # invalid string type: bytes where a str belongs
        (InputSpec, 1, b"uint8", "expected a string"),
    ],
)
@fuzz_settings(3)
@given(data=st.data())
def test_invalid_oversized_or_mistyped_field(cls, index, value, phrase, data):
    valid = data.draw(strategy_for(cls))
    obj = msgpack.unpackb(valid.encode(), raw=False)
    obj[index] = value
    with pytest.raises(DecodeError, match=phrase):
        cls.decode(pack(obj))


def test_invalid_not_bytes():
    with pytest.raises(DecodeError, match="expected bytes"):
        unpack_canonical("not bytes")  # type: ignore[arg-type]


def test_invalid_message_over_the_cap(monkeypatch):
    import chain.codec as codec

    monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 10)
    with pytest.raises(DecodeError, match="message cap"):
        ACCOUNT.decode(ACCOUNT(1, 2, 3).encode())


@pytest.mark.parametrize("depth", [10, 600, 2000, 100_000])
def test_deeply_nested_arrays_raise_only_decode_error(depth):
    with pytest.raises(DecodeError):
        Block.decode(b"\x91" * depth + b"\x00")


def test_invalid_utf8_string():
    # invalid dtype: a str8 holding bytes that are not UTF-8
    spec = InputSpec((1,), "ab", 0, 1, 1).encode()
    bad = spec.replace(b"\xa2ab", b"\xa2\xff\xfe")
    assert bad != spec
    with pytest.raises(DecodeError, match="malformed"):
        InputSpec.decode(bad)


def test_encoding_refuses_out_of_range_values():
    with pytest.raises(DecodeError):
        ACCOUNT(-1, 0, 0).encode()
    with pytest.raises(DecodeError):
        ACCOUNT(1 << 128, 0, 0).encode()
    with pytest.raises(DecodeError):
        ACCOUNT(0, 0, 1 << 64).encode()
