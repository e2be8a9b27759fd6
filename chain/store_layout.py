"""The chain store's keys in LevelDB: one database per chain, one-byte prefixes.

    B + hash            block bytes (every block seen, canonical or not)
    W + hash            [height, cumulative weight, parent]  (fork choice)
    H + height(8 BE)    canonical block hash at that height
    S + key             the head state's entries
    U + hash            undo journal of a canonical block: [[key, old value or nil], ...]
    R + hash            receipt of an executed block (``chain.receipts``): what it did
    C + committer + period(4 BE)   hashes of the (at most two) blocks stored for that committer and period
    h                   head hash
    v                   layout version, 4 bytes BE (2: every executed block has its receipt;
                        a store without the key predates receipts)
"""

from __future__ import annotations

from typing import Final

from .header import BlockHeader

P_BLOCK: Final[bytes] = b"B"
P_WEIGHT: Final[bytes] = b"W"
P_HEIGHT: Final[bytes] = b"H"
P_STATE: Final[bytes] = b"S"
P_UNDO: Final[bytes] = b"U"
P_RECEIPT: Final[bytes] = b"R"
P_SIGNED: Final[bytes] = b"C"
K_HEAD: Final[bytes] = b"h"
K_VERSION: Final[bytes] = b"v"
LAYOUT_VERSION: Final[int] = 2


def height_key(height: int) -> bytes:
    return P_HEIGHT + height.to_bytes(8, "big")


def signed_key(header: BlockHeader) -> bytes:
    return P_SIGNED + header.committer + header.period.to_bytes(4, "big")


def version_bytes(version: int = LAYOUT_VERSION) -> bytes:
    return version.to_bytes(4, "big")
