"""Protocol constants, grouped as in a spec table. Units in comments.

Per-problem parameters (periods, bonds, limits) live in the problem proposal;
these are the fixed limits every node shares.
"""

from __future__ import annotations

from typing import Final

# --- Misc ---------------------------------------------------------------------
PPB: Final[int] = 1_000_000_000  # parts per billion: 1.0
HASH_SIZE: Final[int] = 32  # bytes, SHA-256
PUBKEY_SIZE: Final[int] = 32  # bytes, Ed25519
SIGNATURE_SIZE: Final[int] = 64  # bytes, Ed25519
ADDRESS_SIZE: Final[int] = 20  # bytes
ZERO_HASH: Final[bytes] = b"\x00" * HASH_SIZE
MASK_LABEL: Final[int] = 0xFF  # byte written at an ambiguous position in masked labels

# --- Size limits (decoding rejects anything larger) -------------------------------
MAX_NAME_BYTES: Final[int] = 128
MAX_SYMBOL_BYTES: Final[int] = 12
MAX_DTYPE_BYTES: Final[int] = 16
MAX_SHAPE_DIMS: Final[int] = 8
MAX_COMMITTERS: Final[int] = 64
MAX_GENESIS_ALLOCATIONS: Final[int] = 1024
MAX_TUPLES: Final[int] = 16  # test tuples per problem
MAX_EMBEDDING_DIM: Final[int] = 4096  # n
MAX_LABELS: Final[int] = 1_000_000  # m, m_h: one byte per label
MAX_CLASSES: Final[int] = 255  # labels are bytes; 0xFF is the mask
MAX_AMBIGUOUS: Final[int] = 100_000
MAX_VOTES_PER_BLOCK: Final[int] = 256
MAX_TXS_PER_BLOCK: Final[int] = 4096
MAX_PEER_ID_BYTES: Final[int] = 128
MAX_SALT_BYTES: Final[int] = 64
MAX_PROBLEM_DATA_BYTES: Final[int] = 1024
# A block's transactions, encoded, in bytes. The committer fills this budget by fee per byte;
# with the largest PoI, reveal, season reveal and votes a problem allows it keeps a block under
# MAX_BLOCK_MESSAGE_BYTES (``chain.limits``).
MAX_BLOCK_TX_BYTES: Final[int] = 256 * 1024

# --- Network message caps (bytes) -------------------------------------------------------
# The one place both the consensus size bounds (``chain.limits``, checked when a problem is
# created and when a holdout is sealed) and the node's gossip topics and sync read: every
# object a valid chain can hold fits the message that carries it.
KIB: Final[int] = 1024
MIB: Final[int] = 1024 * KIB
MAX_TX_MESSAGE_BYTES: Final[int] = 16 * KIB  # txs topic: one transaction
MAX_VOTE_MESSAGE_BYTES: Final[int] = 16 * KIB  # votes topic: one vote
MAX_PROOF_MESSAGE_BYTES: Final[int] = 256 * KIB  # proofs topic: one PoI, reveal or season reveal
MAX_PROBLEM_MESSAGE_BYTES: Final[int] = 256 * KIB  # /daimon/problems: one proposal
MAX_BLOCK_MESSAGE_BYTES: Final[int] = 3 * MIB // 2  # blocks topic and one sync item: one block

# --- Time parameters ---------------------------------------------------------------
MIN_PERIOD_SECONDS: Final[int] = 1  # T_p, T_b lower bound
MAX_PERIOD_SECONDS: Final[int] = 10 * 365 * 24 * 3600

# --- Amounts -----------------------------------------------------------------------------
MAX_AMOUNT: Final[int] = (1 << 128) - 1  # base units; the largest amount the codec encodes
# Everything a chain can mint, in units of its reward scale: rewards telescope (R sums to at
# most I(1) - I(0) = 1 along the chain of settled improvements) and the validators of a
# settlement get less than its improver, so the vested chain mints under 2 scales and the
# not-yet-judged improvements of open seasons under 2 more. Doubled again for margin.
MINTABLE_SCALES: Final[int] = 8
DEFAULT_MIN_FEE: Final[int] = 10**12  # base units per tx: 1e-6 token at 18 decimals (problem_kit's default)

# --- Rewards and penalties -------------------------------------------------------------
DEFAULT_QUORUM_PPB: Final[int] = 666_666_667  # just over 2/3 of the bonded stake: 3 of 4 equal validators
VOTE_SLASH_DIVISOR: Final[int] = 2  # a vote for a PoI that fails settlement loses bond / 2
COMMITTER_MISS_BURN_DIVISOR: Final[int] = 2  # a committer removed for missed turns loses bond / 2
MAX_COMMITTER_DELAY: Final[int] = 32  # periods; the largest committer_delay a problem may set
# The committer schedule keeps the versions in force from D periods back to D periods ahead.
MAX_COMMITTER_VERSIONS: Final[int] = 2 * MAX_COMMITTER_DELAY + 2
MAX_REWARD_A: Final[int] = 64

# --- Domain tags for signatures ---------------------------------------------------------
DOMAIN_PROPOSAL: Final[bytes] = b"daimon/proposal/v1"
DOMAIN_TUPLE: Final[bytes] = b"daimon/tuple/v1"
DOMAIN_POI: Final[bytes] = b"daimon/poi/v1"
DOMAIN_VOTE: Final[bytes] = b"daimon/vote/v1"
DOMAIN_REVEAL: Final[bytes] = b"daimon/reveal/v1"
DOMAIN_TX: Final[bytes] = b"daimon/tx/v1"
DOMAIN_HEADER: Final[bytes] = b"daimon/header/v1"
DOMAIN_SEASON_REVEAL: Final[bytes] = b"daimon/season-reveal/v1"
DOMAIN_VOUCHER: Final[bytes] = b"daimon/voucher/v1"
DOMAIN_MODEL_CLAIM: Final[bytes] = b"daimon/model-claim/v1"  # hashed, not signed

# --- Block kinds -----------------------------------------------------------------
KIND_PROBLEM: Final[int] = 0
KIND_IMPROVEMENT: Final[int] = 1
