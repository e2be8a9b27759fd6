"""Typed errors of the p2p package.

Every failure that crosses the package boundary is one of these, so the node can
tell "the peer misbehaved" (penalise, try another) from "nobody has it" (wait,
retry later) without parsing messages.
"""

from __future__ import annotations


class P2PError(Exception):
    """Base class of every error raised by ``p2p``."""


class ConfigError(P2PError):
    """A listen address, bootstrap address or limit in the config is unusable."""


class UnsupportedLibp2p(P2PError):
    """The installed libp2p is not the version ``p2p/libp2p_patches.py`` was written for."""

    def __init__(self, found: str, pinned: str) -> None:
        super().__init__(f"libp2p {found} is installed; p2p/libp2p_patches.py patches {pinned} only "
                         f"(install libp2p=={pinned}, or port the patches and raise the pin)")
        self.found = found
        self.pinned = pinned


class DialError(P2PError):
    """A dial to a peer failed or timed out."""


class PeerBanned(P2PError):
    """The peer is serving a ban for misbehaviour; we neither dial nor accept it."""

    def __init__(self, peer_id: str, until: float) -> None:
        super().__init__(f"peer {peer_id} is banned for another {until:.1f} s")
        self.peer_id = peer_id
        self.until = until


class RequestTimeout(P2PError):
    """A stream request (dial, open, read or write) ran past its deadline."""


class ProtocolViolation(P2PError):
    """A peer sent bytes that break the wire protocol (bad frame, bad shape, too much)."""


class StreamEnded(ProtocolViolation):
    """The peer closed the stream before sending a single byte of a frame.

    A cancelled or timed-out requester does exactly this, so it is not penalised
    (a loaded honest node would otherwise be banned by its peers); anything that
    ends mid-frame still is.
    """


class MalformedMessage(ProtocolViolation):
    """A frame arrived whole but its bytes are not a message of the protocol (a codec's verdict)."""


class RequestFailed(P2PError):
    """A request/response exchange failed without the peer breaking the protocol
    (unreachable, banned, the stream reset or closed before the answer)."""


class FrameTooLarge(ProtocolViolation):
    """A length prefix announced more bytes than the frame cap allows."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds cap {cap}")
        self.size = size
        self.cap = cap


class MessageTooLarge(P2PError):
    """A gossip message is larger than its topic's cap (refused before publishing)."""

    def __init__(self, topic: str, size: int, cap: int) -> None:
        super().__init__(f"message of {size} bytes exceeds cap {cap} of topic {topic}")
        self.topic = topic
        self.size = size
        self.cap = cap


class NotSubscribed(P2PError):
    """Publishing or re-judging on a topic this node has not subscribed to."""


class SyncError(P2PError):
    """A sync request failed at the remote (it answered with an error status)."""


class NoPeers(P2PError):
    """No connected peer could serve the request."""


class ContentError(P2PError):
    """Base of content-exchange and content-store failures."""


class ContentNotFound(ContentError):
    """No asked peer (or the local store) has the content id."""


class ContentTooLarge(ContentError):
    """The content is (or is announced as) larger than the caller's cap."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"content of {size} bytes exceeds cap {cap}")
        self.size = size
        self.cap = cap


class ContentHashMismatch(ContentError):
    """Received bytes do not hash to the requested content id."""


class ContentPinned(ContentError):
    """Deleting a pinned object was refused: the chain needs it to stay verifiable."""


class ContentStoreFull(Exception):
    """The content store's filesystem is full (ENOSPC or a quota).

    Deliberately not a ``P2PError``: the local disk failed, not a peer, so no retry with
    another peer can help and no peer is blamed; the node stops instead.
    """

    def __init__(self, root: object, detail: str) -> None:
        self.root = root
        self.detail = detail
        super().__init__(f"content store {root} is full: {detail}")


class ProblemsError(P2PError):
    """A problems request failed at the remote (an error status, a reset, a peer that left)."""
