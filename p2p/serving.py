"""What every stream protocol does around its own work.

Server side: refuse banned peers, reset quietly, and sort a failed request into 'the
peer left' (no penalty) and 'the peer broke the protocol' (a penalty, a ban past the
threshold). Client side: one request per stream under one deadline, the same sorting of
failures, so ``/daimon/sync/1`` and ``/daimon/problems/1`` answer a misbehaving peer alike.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from p2p.errors import P2PError, ProtocolViolation, RequestTimeout, StreamEnded
from p2p.framing import write_control
from p2p.peers import WEIGHT_PROTOCOL, PeerBook

log = logging.getLogger(__name__)
T = TypeVar("T")


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Providers may answer plainly or as a coroutine."""
    return await value if inspect.isawaitable(value) else value  # type: ignore[return-value]


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


async def request_stream(
    host: IHost,
    book: PeerBook,
    on_ban: Callable[[str], None] | None,
    protocol: TProtocol,
    peer: str,
    req: list[Any],
    read: Callable[[INetStream], Awaitable[T]],
    *,
    timeout_s: float,
    failure: type[P2PError],
) -> T:
    """Open a stream to ``peer``, send ``req``, ``read`` the reply, all under ``timeout_s``.

    A reply that breaks the protocol costs the peer a penalty and is re-raised as the
    ``ProtocolViolation`` it is; a peer that left, reset or answered with an error status
    raises ``failure`` (the caller tries another peer); a deadline raises ``RequestTimeout``.
    """
    stream: INetStream | None = None
    try:
        with trio.fail_after(timeout_s):
            stream = await host.new_stream(ID.from_base58(peer), [protocol])
            await write_control(stream, req)
            result = await read(stream)
            await stream.close()
            stream = None
            return result
    except trio.TooSlowError as exc:
        raise RequestTimeout(f"{protocol} {req[0]} from {peer} timed out") from exc
    except StreamEnded as exc:
        raise failure(f"{peer} closed the {protocol} stream without replying") from exc
    except ProtocolViolation:
        penalise(book, peer, on_ban)
        raise
    except StreamError as exc:
        raise failure(f"{protocol} stream to {peer} failed: {exc}") from exc
    except P2PError:
        raise
    except Exception as exc:  # dial/negotiation failures surface as assorted types
        raise failure(f"{protocol} {req[0]} from {peer} failed: {exc}") from exc
    finally:
        if stream is not None:
            await reset_quietly(stream)
