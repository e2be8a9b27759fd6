"""What the transition needs from outside (content by id) and what it reports (a block's receipt).

``Env`` supplies content by id, which is deterministic because content is addressed by its
hash; a missing artifact raises ``MissingContent`` so the node defers rather than rejects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from del_embed.integer import IntegerDEL, integer_del_from_bytes

from .errors import MissingContent
from .state import State


# ---------------------------------------------------------------------------
# Environment: content by id
# ---------------------------------------------------------------------------
@dataclass
class Env:
    """Content lookup for the transition; caches parsed DEL artifacts by id."""

    get_content: Callable[[bytes], bytes | None]
    _dels: dict[bytes, IntegerDEL] = field(default_factory=dict)

    def load_del(self, content_id: bytes) -> IntegerDEL:
        cached = self._dels.get(content_id)
        if cached is not None:
            return cached
        data = self.get_content(content_id)
        if data is None or hashlib.sha256(data).digest() != content_id:
            raise MissingContent(content_id)
        model = integer_del_from_bytes(data)
        self._dels[content_id] = model
        return model


def memory_env(contents: dict[bytes, bytes] | None = None) -> Env:
    store = dict(contents or {})
    return Env(get_content=store.get)


# ---------------------------------------------------------------------------
# What a block did, for logs, RPC and the demo
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Settlement:
    poi_hash: bytes
    improver: bytes  # address
    outcome: str  # "settled" | "failed" | "void"
    distances: tuple[int, ...] = ()
    improver_reward: int = 0
    validator_rewards: tuple[tuple[bytes, int], ...] = ()
    slashed: int = 0
    reason: str = ""


@dataclass(frozen=True)
class BlockReceipt:
    """What a block did, without the state (cheap to keep for every block)."""

    settlement: Settlement | None = None
    anchored: bytes | None = None  # PoI hash
    fees: int = 0
    season: str = ""


@dataclass(frozen=True)
class BlockOutcome:
    state: State
    receipt: BlockReceipt = field(default_factory=BlockReceipt)

    @property
    def settlement(self) -> Settlement | None:
        return self.receipt.settlement


