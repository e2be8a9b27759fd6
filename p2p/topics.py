"""Gossip topic names and their default size caps.

Topic strings are part of the network protocol (docs/design.md §6); build them only here so
that a typo cannot split the network.
"""

from __future__ import annotations

from typing import Final, Literal

ChainTopicKind = Literal["proofs", "votes", "blocks", "txs"]
CHAIN_TOPIC_KINDS: Final[tuple[ChainTopicKind, ...]] = ("proofs", "votes", "blocks", "txs")
PROBLEMS_TOPIC: Final[str] = "/daimon/problems"

KIB: Final[int] = 1024
MIB: Final[int] = 1024 * KIB

# Default per-topic message caps in bytes. Large objects (models, test inputs)
# travel over /daimon/content/1 and are referenced by id, so gossip stays small.
DEFAULT_TOPIC_CAPS: Final[dict[str, int]] = {
    "proofs": 256 * KIB,
    "votes": 16 * KIB,
    "blocks": 1 * MIB,
    "txs": 16 * KIB,
    "problems": 256 * KIB,
}
# Cap for topics that are neither chain topics nor /daimon/problems.
DEFAULT_OTHER_CAP: Final[int] = 64 * KIB


def chain_topic(chain_id: bytes, kind: ChainTopicKind) -> str:
    """Return ``/daimon/<chain-id-hex>/<kind>`` for a 32-byte chain id."""
    if len(chain_id) != 32:
        raise ValueError(f"chain id must be 32 bytes, got {len(chain_id)}")
    if kind not in CHAIN_TOPIC_KINDS:
        raise ValueError(f"unknown chain topic kind {kind!r}")
    return f"/daimon/{chain_id.hex()}/{kind}"


def chain_topics(chain_id: bytes) -> dict[ChainTopicKind, str]:
    """All four topic names of one chain, keyed by kind."""
    return {kind: chain_topic(chain_id, kind) for kind in CHAIN_TOPIC_KINDS}


def topic_kind(topic: str) -> str | None:
    """``"proofs"`` etc. for a chain topic, ``"problems"`` for the global one, else None."""
    if topic == PROBLEMS_TOPIC:
        return "problems"
    parts = topic.split("/")
    # "", "daimon", "<hex>", "<kind>"
    if len(parts) == 4 and parts[0] == "" and parts[1] == "daimon" and parts[3] in CHAIN_TOPIC_KINDS:
        try:
            if len(bytes.fromhex(parts[2])) == 32:
                return parts[3]
        except ValueError:
            return None
    return None


def default_cap(topic: str) -> int:
    """The default message cap of ``topic`` in bytes."""
    kind = topic_kind(topic)
    return DEFAULT_TOPIC_CAPS[kind] if kind is not None else DEFAULT_OTHER_CAP
