"""Gossip across 3-4 hosts in one process: delivery, rejection, bans, deferral."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2p import MessageTooLarge, P2PNode, ValidationResult, chain_topic
from p2p.errors import PeerBanned

from p2p_helpers import CHAIN_ID, Inbox, link, running_nodes, wait_until

TOPIC = chain_topic(CHAIN_ID, "blocks")


def reject_bad(peer: str, data: bytes) -> ValidationResult:
    return ValidationResult.REJECT if data.startswith(b"BAD") else ValidationResult.ACCEPT


async def line(nodes: list[P2PNode]) -> None:
    """Connect nodes in a line, so messages must be relayed hop by hop."""
    for a, b in zip(nodes[1:], nodes):
        await link(a, b)


async def subscribe_all(nodes: list[P2PNode], validator=reject_bad) -> list[Inbox]:
    inboxes = [Inbox() for _ in nodes]
    for node, inbox in zip(nodes, inboxes):
        await node.subscribe(TOPIC, inbox, validator)
    return inboxes


async def wait_line_mesh(nodes: list[P2PNode]) -> None:
    with trio.fail_after(15):
        for i, node in enumerate(nodes):
            want = 1 if i in (0, len(nodes) - 1) else 2
            await wait_until(lambda node=node, want=want: len(node.mesh_peers(TOPIC)) >= want)


@pytest.mark.trio
async def test_gossip_reaches_all_subscribers(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 4) as nodes:
        await line(nodes)
        await link(nodes[3], nodes[0])  # a ring: every node has two peers
        inboxes = await subscribe_all(nodes)
        await wait_line_mesh(nodes)
        for k in range(20):
            await nodes[k % 4].publish(TOPIC, b"msg-%d" % k)
        with trio.fail_after(15):
            for i, inbox in enumerate(inboxes):
                await inbox.wait_for(15)  # each node hears the 15 it did not publish
        for i, inbox in enumerate(inboxes):
            assert sorted(inbox.data) == sorted(b"msg-%d" % k for k in range(20) if k % 4 != i)
            assert all(m.source == nodes[int(m.data[4:]) % 4].peer_id for m in inbox.messages)


@pytest.mark.trio
async def test_duplicate_payload_delivered_once(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 3) as nodes:
        await line(nodes)
        inboxes = await subscribe_all(nodes)
        await wait_line_mesh(nodes)
        await nodes[0].publish(TOPIC, b"same")
        await nodes[2].publish(TOPIC, b"same")  # same id = SHA-256 of payload
        await nodes[0].publish(TOPIC, b"marker")
        with trio.fail_after(10):
            await inboxes[1].wait_for(2)
        assert inboxes[1].data.count(b"same") == 1


@pytest.mark.trio
async def test_rejected_message_is_not_forwarded(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 4) as nodes:
        await line(nodes)
        # Only B (node 1) judges; C and D accept anything, so if B forwarded BAD they would show it.
        inboxes = [Inbox() for _ in nodes]
        for i, (node, inbox) in enumerate(zip(nodes, inboxes)):
            await node.subscribe(TOPIC, inbox, reject_bad if i == 1 else None)
        await wait_line_mesh(nodes)
        await nodes[0].publish(TOPIC, b"BAD-1")
        await nodes[0].publish(TOPIC, b"good-1")
        with trio.fail_after(10):
            await inboxes[3].wait_for(1)
        assert inboxes[1].data == [b"good-1"]
        assert inboxes[2].data == [b"good-1"]
        assert inboxes[3].data == [b"good-1"]
        stats = {s.peer_id: s for s in nodes[1].peers()}
        assert stats[nodes[0].peer_id].rejected == 1
        assert stats[nodes[0].peer_id].accepted == 1


@pytest.mark.trio
async def test_misbehaving_peer_is_disconnected_and_refused(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 3, ban_threshold=2.5, ban_s=300.0) as nodes:
        honest, judge, bad = nodes
        await link(honest, judge)
        await link(bad, judge)
        inboxes = [Inbox() for _ in nodes]
        await honest.subscribe(TOPIC, inboxes[0], None)
        await judge.subscribe(TOPIC, inboxes[1], reject_bad)
        await bad.subscribe(TOPIC, inboxes[2], None)  # bad node accepts its own junk
        with trio.fail_after(15):
            await wait_until(lambda: len(judge.mesh_peers(TOPIC)) >= 2)
        for k in range(3):
            await bad.publish(TOPIC, b"BAD-%d" % k)
        with trio.fail_after(15):
            await wait_until(lambda: bad.peer_id not in judge.connected_peers())
        assert inboxes[1].data == [] and inboxes[0].data == []
        stat = {s.peer_id: s for s in judge.peers()}[bad.peer_id]
        assert stat.banned_for_s > 0 and stat.rejected == 3
        # The judge will not dial it...
        with pytest.raises(PeerBanned):
            await judge.connect(bad.listen_addrs()[0])
        # ...and closes its inbound connection attempts during the ban.
        with trio.fail_after(15):
            try:
                await bad.connect(judge.listen_addrs()[0])
            except Exception:
                pass  # refused during the handshake is fine too
            await wait_until(lambda: bad.peer_id not in judge.connected_peers())
        # Honest traffic still flows.
        await honest.publish(TOPIC, b"good")
        with trio.fail_after(10):
            await inboxes[1].wait_for(1)


@pytest.mark.trio
async def test_deferred_message_is_held_and_rejudged(tmp_path: Path) -> None:
    parent_known = False

    def needs_parent(peer: str, data: bytes) -> ValidationResult:
        return ValidationResult.ACCEPT if parent_known else ValidationResult.DEFER

    async with running_nodes(tmp_path, 3) as nodes:
        await line(nodes)
        inboxes = [Inbox() for _ in nodes]
        await nodes[0].subscribe(TOPIC, inboxes[0], None)
        await nodes[1].subscribe(TOPIC, inboxes[1], needs_parent)
        await nodes[2].subscribe(TOPIC, inboxes[2], None)
        await wait_line_mesh(nodes)
        await nodes[0].publish(TOPIC, b"child-block")
        with trio.fail_after(10):
            await wait_until(lambda: nodes[1].pending_count(TOPIC) == 1)
        assert inboxes[1].data == [] and inboxes[2].data == []
        assert await nodes[1].rejudge(TOPIC) == 0  # still cannot judge: stays pending
        assert nodes[1].pending_count(TOPIC) == 1
        parent_known = True  # e.g. the node synced the parent
        assert await nodes[1].rejudge(TOPIC) == 1
        with trio.fail_after(10):
            await inboxes[2].wait_for(1)  # accepted late, then forwarded
        assert inboxes[1].data == [b"child-block"] and inboxes[2].data == [b"child-block"]
        assert nodes[1].pending_count(TOPIC) == 0
        stat = {s.peer_id: s for s in nodes[1].peers()}[nodes[0].peer_id]
        assert stat.rejected == 0 and stat.penalty == 0.0


@pytest.mark.trio
async def test_ignored_message_is_not_cached_as_rejection(tmp_path: Path) -> None:
    verdicts = [ValidationResult.IGNORE]

    def first_ignore(peer: str, data: bytes) -> ValidationResult:
        return verdicts.pop(0) if verdicts else ValidationResult.ACCEPT

    async with running_nodes(tmp_path, 3) as nodes:
        await link(nodes[0], nodes[1])
        await link(nodes[2], nodes[1])
        inboxes = [Inbox() for _ in nodes]
        await nodes[0].subscribe(TOPIC, inboxes[0], None)
        await nodes[1].subscribe(TOPIC, inboxes[1], first_ignore)
        await nodes[2].subscribe(TOPIC, inboxes[2], None)
        with trio.fail_after(15):
            await wait_until(lambda: len(nodes[1].mesh_peers(TOPIC)) >= 2)
        await nodes[0].publish(TOPIC, b"vote")
        with trio.fail_after(10):
            await wait_until(lambda: not verdicts)
        # The same payload (same message id) from another author is judged afresh.
        await nodes[2].publish(TOPIC, b"vote")
        with trio.fail_after(10):
            await inboxes[1].wait_for(1)
        assert inboxes[1].data == [b"vote"]
        assert {s.peer_id: s for s in nodes[1].peers()}[nodes[0].peer_id].ignored == 1


@pytest.mark.trio
async def test_oversized_message_refused_and_rejected(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 2) as nodes:
        await link(nodes[0], nodes[1])
        inbox = Inbox()
        await nodes[0].subscribe(TOPIC, Inbox(), None, max_size=64 * 1024)  # sender allows big
        await nodes[1].subscribe(TOPIC, inbox, None, max_size=1000)
        with pytest.raises(MessageTooLarge):
            await nodes[1].publish(TOPIC, b"x" * 1001)
        with trio.fail_after(15):
            await wait_until(lambda: len(nodes[1].mesh_peers(TOPIC)) >= 1)
        await nodes[0].publish(TOPIC, b"y" * 5000)
        await nodes[0].publish(TOPIC, b"small")
        with trio.fail_after(10):
            await inbox.wait_for(1)
        assert inbox.data == [b"small"]
        assert {s.peer_id: s for s in nodes[1].peers()}[nodes[0].peer_id].rejected == 1
