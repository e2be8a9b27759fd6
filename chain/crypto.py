"""Ed25519 keys, SHA-256 and addresses (docs/design.md §3).

Every signature covers ``domain tag || chain id || canonical bytes`` so a
signature made in one role or on one chain is never valid elsewhere.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PUBKEY_BYTES: Final[int] = 32
SIGNATURE_BYTES: Final[int] = 64
SEED_BYTES: Final[int] = 32
HASH_BYTES: Final[int] = 32
ADDRESS_BYTES: Final[int] = 20


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def address_bytes(pubkey: bytes) -> bytes:
    """The first 20 bytes of SHA-256(public key): how state keys accounts."""
    return sha256(pubkey)[:ADDRESS_BYTES]


def address_of(pubkey: bytes) -> str:
    """The address as users see it: hex of ``address_bytes``."""
    return address_bytes(pubkey).hex()


def signing_message(domain: bytes, chain_id: bytes, body: bytes) -> bytes:
    """What is signed: a length-prefixed domain tag, the chain id, then the body."""
    return len(domain).to_bytes(1, "big") + domain + chain_id + body


def verify(pubkey: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``pubkey``."""
    if len(pubkey) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _public_key(pubkey).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _public_key(pubkey: bytes) -> Ed25519PublicKey:
    """The parsed key, kept: a runner checks the same payer's vouchers call after call, a
    node the same validators' votes, and parsing is a fifth of a verification."""
    return Ed25519PublicKey.from_public_bytes(pubkey)


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair held as its 32-byte seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed has {SEED_BYTES} bytes, not {len(self.seed)}")
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        object.__setattr__(self, "_key", key)
        pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        object.__setattr__(self, "_pub", pub)

    @classmethod
    def generate(cls) -> "KeyPair":
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed)

    @classmethod
    def from_label(cls, label: str) -> "KeyPair":
        """A deterministic key for tests and devnets (never for real funds)."""
        return cls(sha256(b"daimon-devkey:" + label.encode()))

    @property
    def public_key(self) -> bytes:
        return self._pub  # type: ignore[attr-defined,no-any-return]

    @property
    def address(self) -> str:
        return address_of(self.public_key)

    @property
    def address_bytes(self) -> bytes:
        return address_bytes(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:  # never print the seed
        return f"KeyPair(address={self.address})"
