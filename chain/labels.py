"""Label vectors as the chain sees them: bytes, one label per byte.

The PoI commits to all its label vectors (one per test tuple, then the
holdout predictions) with one hash; a vote commits to the same vectors with the
ambiguous positions masked, behind the validator's key, so a validator who did
not compute the labels itself cannot produce a matching vote.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .codec import pack
from .constants import MASK_LABEL
from .crypto import sha256
from .proofs import Ambiguous


def labels_hash(labels: Sequence[bytes]) -> bytes:
    return sha256(b"daimon/labels/v1" + pack(list(labels)))


def mask_labels(labels: bytes, ambiguous: Iterable[Ambiguous]) -> bytes:
    out = bytearray(labels)
    for a in ambiguous:
        out[a.index] = MASK_LABEL
    return bytes(out)


def masked_digest(validator: bytes, labels: Sequence[bytes], ambiguous: Sequence[Sequence[Ambiguous]]) -> bytes:
    """``H(pk_V || masked labels)`` over every label vector of a PoI."""
    masked = [mask_labels(vec, amb) for vec, amb in zip(labels, ambiguous, strict=True)]
    return sha256(b"daimon/vote-labels/v1" + validator + pack(masked))


def labels_to_array(labels: bytes) -> np.ndarray:
    return np.frombuffer(labels, dtype=np.uint8).astype(np.int64)


def array_to_labels(arr: np.ndarray) -> bytes:
    a = np.asarray(arr)
    if a.size and (int(a.min()) < 0 or int(a.max()) >= MASK_LABEL):
        raise ValueError("labels must lie in 0..254")
    return a.astype(np.uint8).tobytes()
