"""Host: identity from the seed, bootstrap dialling with backoff, reconnection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from p2p import ConfigError, P2PConfig, P2PNode, peer_id_from_seed

from p2p_helpers import NO_DHT, seed, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_identity_is_the_seed(tmp_path: Path) -> None:
    node = P2PNode(P2PConfig(seed=seed(3), content_dir=tmp_path))
    assert node.peer_id == peer_id_from_seed(seed(3)) and node.peer_id.startswith("12D3KooW")
    with pytest.raises(ConfigError):
        peer_id_from_seed(b"short")


def test_bad_addresses_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        P2PNode(P2PConfig(seed=seed(0), content_dir=tmp_path, listen_addr="/ip4/127.0.0.1/udp/1"))
    with pytest.raises(ConfigError):
        P2PNode(P2PConfig(seed=seed(0), content_dir=tmp_path, bootstrap=["/ip4/127.0.0.1/tcp/1"]))  # no /p2p/


@pytest.mark.trio
async def test_bootstrap_redial_with_backoff_until_peer_appears(tmp_path: Path) -> None:
    port = free_port()
    a_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_from_seed(seed(0))}"
    fast = dict(backoff_base_s=0.2, backoff_max_s=1.0, maintain_interval_s=0.1, dial_timeout_s=3.0, discovery=NO_DHT)
    b = P2PNode(P2PConfig(seed=seed(1), content_dir=tmp_path / "b", bootstrap=[a_addr], **fast))
    a = P2PNode(P2PConfig(seed=seed(0), content_dir=tmp_path / "a", listen_addr=f"/ip4/127.0.0.1/tcp/{port}",
                          discovery=NO_DHT))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(20):
            await nursery.start(b.run)
            await wait_until(lambda: b.book.record(a.peer_id) is not None and not b.book.may_dial(a_addr))
            assert b.peer_count() == 0  # the first dials failed and back off
            await nursery.start(a.run)  # the peer comes up later
            await wait_until(lambda: a.peer_id in b.connected_peers())
            # Dropped connections are re-dialled too.
            await a.hosting.disconnect(b.peer_id)
            await wait_until(lambda: a.peer_id not in b.connected_peers())
            await wait_until(lambda: a.peer_id in b.connected_peers())
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_bootstrap_peer_redialled_at_its_configured_address(tmp_path: Path) -> None:
    """A peer that announces an address we cannot reach (NAT, a proxy in front) is still re-dialled.

    The swarm dials one TCP address per peer, the first in the peerstore, and the peer's signed
    record (identify, pubsub) replaces what the peerstore held: without care, the re-dial after a
    disconnect would only try the announced address and never reconnect.
    """
    from libp2p.peer.id import ID

    port, unreachable = free_port(), free_port()
    a_id = peer_id_from_seed(seed(0))
    fast = dict(backoff_base_s=0.2, backoff_max_s=1.0, maintain_interval_s=0.1, dial_timeout_s=3.0, discovery=NO_DHT)
    a = P2PNode(P2PConfig(seed=seed(0), content_dir=tmp_path / "a", listen_addr=f"/ip4/127.0.0.1/tcp/{port}",
                          announce=[f"/ip4/127.0.0.1/tcp/{unreachable}"], discovery=NO_DHT))
    b = P2PNode(P2PConfig(seed=seed(1), content_dir=tmp_path / "b",
                          bootstrap=[f"/ip4/127.0.0.1/tcp/{port}/p2p/{a_id}"], **fast))

    def b_knows_announced() -> bool:
        try:
            known = b.hosting.host.get_peerstore().addrs(ID.from_base58(a_id))
        except Exception:
            return False
        return any(f"/tcp/{unreachable}" in str(x) for x in known)

    async with trio.open_nursery() as nursery:
        # Bound: a few dials at backoff_max_s apart, each under dial_timeout_s.
        with trio.fail_after(20):
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert a.announced_addrs() == [f"/ip4/127.0.0.1/tcp/{unreachable}/p2p/{a_id}"]
            assert a.listen_addrs() == [f"/ip4/127.0.0.1/tcp/{port}/p2p/{a_id}"]
            await wait_until(lambda: a_id in b.connected_peers() and b_knows_announced())
            await a.hosting.disconnect(b.peer_id)
            await wait_until(lambda: a_id not in b.connected_peers())
            await wait_until(lambda: a_id in b.connected_peers())
        nursery.cancel_scope.cancel()
