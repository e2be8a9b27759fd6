"""Signing and checking protocol objects.

What is signed: the domain tag of the type, the chain id, then the canonical
encoding of every field but ``signature``. Objects made before a chain exists
(the proposal and its first test tuple) sign with ``ZERO_HASH`` as chain id.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .codec import pack
from .constants import SIGNATURE_SIZE, ZERO_HASH
from .crypto import KeyPair, signing_message, verify
from .errors import InvalidSignature

S = TypeVar("S")

EMPTY_SIGNATURE = b"\x00" * SIGNATURE_SIZE  # on objects about to be signed


def signing_bytes(obj: Any, chain_id: bytes) -> bytes:
    fields = [codec.to_obj(getattr(obj, name)) for name, codec in obj.FIELDS if name != "signature"]
    return signing_message(obj.DOMAIN, chain_id, pack(fields))


def sign(obj: S, keys: KeyPair, chain_id: bytes = ZERO_HASH) -> S:
    """Return ``obj`` with its signer field set to ``keys`` and a fresh signature."""
    unsigned = dataclasses.replace(obj, **{obj.SIGNER: keys.public_key, "signature": EMPTY_SIGNATURE})  # type: ignore[attr-defined]
    signature = keys.sign(signing_bytes(unsigned, chain_id))
    return dataclasses.replace(unsigned, signature=signature)  # type: ignore[type-var]


def is_valid_signature(obj: Any, chain_id: bytes = ZERO_HASH) -> bool:
    return verify(getattr(obj, obj.SIGNER), obj.signature, signing_bytes(obj, chain_id))


def check_signature(obj: Any, chain_id: bytes = ZERO_HASH) -> None:
    """Raise ``InvalidSignature`` naming the type unless ``obj`` is validly signed."""
    if not is_valid_signature(obj, chain_id):
        raise InvalidSignature(f"bad {type(obj).__name__} signature by {getattr(obj, obj.SIGNER).hex()[:16]}")
