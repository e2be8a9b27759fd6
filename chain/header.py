"""The block header: what a committer signs, and all a node reads before a block's body."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from . import constants as C
from .codec import Schema, schema
from .crypto import sha256
from .fields import HASH, PUBKEY, SIG, U8, U32, U64

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

