"""The field codecs every chain schema is built from, with their caps (``chain.constants``)."""

from __future__ import annotations

from . import constants as C
from .codec import Amount, Bytes, ListOf, SInt, UInt

U8, U16, U32, U64 = UInt(8), UInt(16), UInt(32), UInt(64)
I64 = SInt(64)
AMOUNT = Amount()
HASH = Bytes(exact=C.HASH_SIZE)
PUBKEY = Bytes(exact=C.PUBKEY_SIZE)
SIG = Bytes(exact=C.SIGNATURE_SIZE)
ADDRESS = Bytes(exact=C.ADDRESS_SIZE)
LABELS = Bytes(max_len=C.MAX_LABELS)  # one byte per label
EMBEDDING = ListOf(SInt(32), C.MAX_EMBEDDING_DIM)
