"""What the competition commits to and proves: the sealed holdout, proofs of improvement,
votes, reveals and the season reveal (docs/design.md §4).

Signed types end in ``signature`` and name their signer field in ``SIGNER``; what is
signed is the encoding of every other field, behind the type's domain tag and the chain
id (see ``chain.signing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from . import constants as C
from .codec import Bytes, ListOf, Schema, Struct, schema
from .crypto import sha256
from .fields import EMBEDDING, HASH, LABELS, PUBKEY, SIG, U8, U32

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




def model_claim(prover: bytes, digest: bytes) -> bytes:
    """``H(domain || pk || digest)``: what a ``RegisterDigest`` registers for a prover's model."""
    return sha256(C.DOMAIN_MODEL_CLAIM + prover + digest)

