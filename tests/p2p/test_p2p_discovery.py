"""DHT and mDNS discovery (p2p/discovery.py) between in-process nodes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2p import P2PConfig, P2PNode, content_id
from p2p.discovery import DiscoveryConfig

from p2p_helpers import Inbox, link, running_nodes, seed, wait_until

TOPIC = "/daimon/test/discovery"


async def test_line_of_nodes_meshes_through_the_dht(tmp_path: Path) -> None:
    """Each node dials only its predecessor; the DHT gives every node several peers and every
    node receives a message published at either end."""
    n = 5
    async with running_nodes(tmp_path, n, discovery=DiscoveryConfig(target_peers=8)) as nodes:
        inboxes = [Inbox() for _ in nodes]
        for node, inbox in zip(nodes, inboxes):
            await node.subscribe(TOPIC, inbox)
        for i in range(1, n):
            await link(nodes[i], nodes[i - 1])
        with trio.fail_after(20):
            await wait_until(lambda: all(node.peer_count() >= 3 for node in nodes), poll_s=0.1)
            await wait_until(lambda: all(len(node.topic_peers(TOPIC)) >= 3 for node in nodes), poll_s=0.1)
            await wait_until(lambda: all(node.discovery.routing_table_size() >= 2 for node in nodes), poll_s=0.1)
        await nodes[0].publish(TOPIC, b"from-first")
        await nodes[-1].publish(TOPIC, b"from-last")
        with trio.fail_after(10):
            for inbox in inboxes[1:-1]:
                await inbox.wait_for(2)
        assert set(inboxes[2].data) == {b"from-first", b"from-last"}


async def test_without_the_dht_a_line_stays_a_line(tmp_path: Path) -> None:
    """The control: the same line without DHT keeps only its links (so the test above measures the DHT)."""
    async with running_nodes(tmp_path, 3, discovery=DiscoveryConfig(dht=False)) as nodes:
        await link(nodes[1], nodes[0])
        await link(nodes[2], nodes[1])
        await trio.sleep(2.0)  # several dial-loop rounds (0.5 s each) in which nothing may be dialled
        assert [node.peer_count() for node in nodes] == [1, 2, 1]
        assert nodes[0].discovery.routing_table_size() == 0


async def test_content_is_found_by_provider_records(tmp_path: Path) -> None:
    """A node none of whose connected peers holds an object finds the holder in the DHT and
    fetches from it; without provider records the same fetch finds nothing."""
    quiet = DiscoveryConfig(target_peers=0, provide_interval_s=0.2)  # no dialling of table peers
    async with running_nodes(tmp_path, 3, discovery=quiet) as nodes:
        holder, middle, seeker = nodes
        await link(middle, holder)
        await link(seeker, middle)
        data = b"model bytes " * 1000
        cid = holder.store.put(data)
        with trio.fail_after(20):
            await wait_until(lambda: cid in holder.discovery._provided, poll_s=0.1)
        if holder.peer_id in seeker.connected_peers():  # a refresh's lookup may have connected them
            await seeker.hosting.disconnect(holder.peer_id)
        assert holder.peer_id not in seeker.connected_peers()
        with trio.fail_after(30):
            path = await seeker.fetch_content(cid, 1 << 20)
        assert path.read_bytes() == data
        assert seeker.discovery.counts.provider_lookups == 1


async def test_mdns_peers_on_loopback_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes with no bootstrap address find each other by mDNS and connect (zeroconf kept
    to 127.0.0.1 so the test multicasts on no real network)."""
    import libp2p.discovery.mdns.mdns as mdns_module
    from zeroconf import Zeroconf

    monkeypatch.setattr(mdns_module, "Zeroconf", lambda *a, **k: Zeroconf(interfaces=["127.0.0.1"]))
    cfg = DiscoveryConfig(dht=False, mdns=True)
    nodes = [P2PNode(P2PConfig(seed=seed(i), content_dir=tmp_path / f"m{i}", discovery=cfg)) for i in range(2)]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            for node in nodes:
                await nursery.start(node.run)
            await wait_until(lambda: all(node.peer_count() == 1 for node in nodes), poll_s=0.1)
        assert nodes[0].discovery.counts.mdns_found >= 1
        nursery.cancel_scope.cancel()


async def test_a_provider_record_of_a_liar_costs_the_liar_not_the_seeker(tmp_path: Path) -> None:
    """Attack: a peer announces a content id it serves wrong bytes for. The seeker that finds it
    by its provider record rejects the bytes (hash), penalises it, keeps nothing, and fetches
    the object from an honest holder once one announces it. (Bad bytes ban at once at the default
    threshold, so the liar's next record is skipped too.)"""
    from p2p import ContentHashMismatch
    from p2p.peers import WEIGHT_BAD_CONTENT

    quiet = DiscoveryConfig(target_peers=0, provide_interval_s=0.2)
    async with running_nodes(tmp_path, 4, discovery=quiet) as nodes:
        honest, liar, middle, seeker = nodes
        for node in (honest, liar, seeker):
            await link(node, middle)
        data = b"the real model " * 500
        cid = content_id(data)
        liar.store.path(cid).write_bytes(b"x" * len(data))  # same id, other bytes: the store serves what it holds
        with trio.fail_after(20):
            await wait_until(lambda: cid in liar.discovery._provided, poll_s=0.1)
        for other in (liar, honest):
            if other.peer_id in seeker.connected_peers():
                await seeker.hosting.disconnect(other.peer_id)
        with pytest.raises(ContentHashMismatch), trio.fail_after(30):
            await seeker.fetch_content(cid, 1 << 20)
        assert not seeker.store.has(cid)
        assert WEIGHT_BAD_CONTENT >= seeker.book.ban_threshold and seeker.book.is_banned(liar.peer_id)
        with trio.fail_after(10):  # the ban's disconnect runs in the node's ban task
            await wait_until(lambda: liar.peer_id not in seeker.connected_peers(), poll_s=0.05)
        honest.store.put(data)
        with trio.fail_after(20):
            await wait_until(lambda: cid in honest.discovery._provided, poll_s=0.1)
        with trio.fail_after(30):
            path = await seeker.fetch_content(cid, 1 << 20)
        assert path.read_bytes() == data
