"""A connection is Noise and Yamux or nothing (docs/wire.md "Transport").

py-libp2p 0.8.1's ``new_host`` also accepts ``/plaintext/2.0.0`` (the peer names its key and
proves nothing: anyone can claim any peer id, and so have that peer penalised and banned in
its place), ``/secio/1.0.0`` and ``/mplex/6.7.0`` (no flow control: it escapes the yamux
window that bounds what a flooding connection holds in memory). Each test dials a node with
a stock py-libp2p host offering only the protocol under test, and the dial must fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p_helpers import running_nodes, seed

DIAL_BOUND_S = 10.0  # a refused upgrade fails at once; a stuck one is the failure we look for


def _noise(key_pair: Any) -> dict[TProtocol, Any]:
    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)}


async def _dial(node_addr: str, **host_opts: Any) -> bool:
    """True iff a stock host built with ``host_opts`` connects to ``node_addr``."""
    host = new_host(**host_opts)
    info = info_from_p2p_addr(multiaddr.Multiaddr(node_addr))
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            with trio.fail_after(DIAL_BOUND_S):
                await host.connect(info)
        except trio.TooSlowError:
            raise
        except Exception:
            return False
        return bool(host.get_network().get_connections(info.peer_id))


@pytest.mark.trio
async def test_noise_and_yamux_connect(tmp_path: Path) -> None:
    """The control: a host offering exactly what the node speaks gets in."""
    async with running_nodes(tmp_path, 1) as (node,):
        key_pair = create_new_key_pair(seed(7))
        assert await _dial(node.listen_addrs()[0], key_pair=key_pair, sec_opt=_noise(key_pair),
                           muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux})


@pytest.mark.trio
async def test_plaintext_is_refused(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 1) as (node,):
        key_pair = create_new_key_pair(seed(8))
        plaintext = {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)}
        assert not await _dial(node.listen_addrs()[0], key_pair=key_pair, sec_opt=plaintext,
                               muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux})
        assert node.connected_peers() == []


@pytest.mark.trio
async def test_mplex_is_refused(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 1) as (node,):
        key_pair = create_new_key_pair(seed(9))
        assert not await _dial(node.listen_addrs()[0], key_pair=key_pair, sec_opt=_noise(key_pair),
                               muxer_opt={TProtocol(MPLEX_PROTOCOL_ID): Mplex})
        assert node.connected_peers() == []
