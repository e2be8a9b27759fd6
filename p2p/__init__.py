"""libp2p transport of a DaiMoN node: validated gossip, block sync, content exchange.

The node uses ``P2PNode`` and the types below; it never imports libp2p itself.
See docs/p2p.md.
"""

from p2p.abc import (
    GossipMessage,
    Handler,
    INetwork,
    PeerStats,
    ProblemListing,
    ProblemProvider,
    SyncHead,
    SyncProvider,
    ValidationResult,
    Validator,
)
from p2p.errors import (
    ContentStoreFull,
    ConfigError,
    ContentError,
    ContentHashMismatch,
    ContentNotFound,
    ContentPinned,
    ContentTooLarge,
    DialError,
    FrameTooLarge,
    MalformedMessage,
    MessageTooLarge,
    NoPeers,
    NotSubscribed,
    P2PError,
    PeerBanned,
    ProblemsError,
    ProtocolViolation,
    RequestFailed,
    RequestTimeout,
    SyncError,
    UnsupportedLibp2p,
)
from p2p.discovery import DiscoveryConfig
from p2p.host import peer_id_from_seed
from p2p.node import P2PConfig, P2PNode
from p2p.reqresp import Codec, ReqRespLimits, ReqRespService
from p2p.store import ContentStore, content_id
from p2p.topics import PROBLEMS_TOPIC, chain_topic, chain_topics, topic_kind

__all__ = [
    "ContentStoreFull",
    "ConfigError", "ContentError", "ContentHashMismatch", "ContentNotFound", "ContentPinned",
    "ContentStore", "ContentTooLarge", "DialError", "FrameTooLarge", "GossipMessage", "Handler",
    "INetwork", "MessageTooLarge", "NoPeers", "NotSubscribed", "P2PConfig", "P2PError", "P2PNode",
    "PROBLEMS_TOPIC", "PeerBanned", "PeerStats", "ProblemListing", "ProblemProvider", "ProblemsError",
    "ProtocolViolation", "RequestTimeout", "SyncError", "MalformedMessage", "RequestFailed", "UnsupportedLibp2p",
    "Codec", "DiscoveryConfig", "ReqRespLimits", "ReqRespService",
    "SyncHead", "SyncProvider", "ValidationResult", "Validator", "chain_topic", "chain_topics",
    "content_id", "peer_id_from_seed", "topic_kind",
]
