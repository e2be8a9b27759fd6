"""What every stream-protocol server does around its own work: refuse banned peers,
reset quietly, and sort a failed request into 'the peer left' (no penalty) and 'the
peer broke the protocol' (a penalty, a ban past the threshold)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from p2p.errors import ProtocolViolation, StreamEnded
from p2p.peers import WEIGHT_PROTOCOL, PeerBook

log = logging.getLogger(__name__)


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream, ignoring errors from one that is already gone."""
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:
            pass


async def close_quietly(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.close()
        except Exception:
            pass


def penalise(book: PeerBook, peer: str, on_ban: Callable[[str], None] | None, weight: float = WEIGHT_PROTOCOL) -> None:
    if book.penalise(peer, weight) and on_ban is not None:
        on_ban(peer)


async def serve_stream(
    stream: INetStream,
    what: str,
    book: PeerBook,
    on_ban: Callable[[str], None] | None,
    body: Callable[[INetStream, str], Awaitable[None]],
) -> None:
    """Run ``body(stream, peer)`` for a peer that is not banned; never raises."""
    peer = stream.muxed_conn.peer_id.to_base58()
    if book.is_banned(peer):
        await reset_quietly(stream)
        return
    try:
        await body(stream, peer)
    except StreamEnded as exc:
        log.debug("%s request from %s ended early: %s", what, peer, exc)
        await reset_quietly(stream)
    except ProtocolViolation as exc:
        log.info("%s request from %s broke the protocol: %s", what, peer, exc)
        penalise(book, peer, on_ban)
        await reset_quietly(stream)
    except (StreamError, trio.TooSlowError) as exc:
        log.debug("%s serve to %s ended: %r", what, peer, exc)
        await reset_quietly(stream)
