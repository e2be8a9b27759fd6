"""A hostile gossip peer: connects to nodes and floods every topic with junk (issue 13).

Run ``python tests/daimon_node/flooder.py --target <multiaddr> ... --topic <topic> ...
--duration 30``. It speaks GossipSub's wire format directly (varint-prefixed
``rpc_pb2.RPC`` frames on ``/meshsub/1.1.0``), not through ``Pubsub``, so it can send
what an honest library never would. For each target it loops until ``--duration``
runs out: dial, open a pubsub stream, announce a subscription to every topic, then
write RPCs back to back (the stream's flow control is the only brake). When a target
closes the connection or refuses a dial it waits ``RETRY_S`` and tries again, so a
ban that is not enforced shows as writes that keep succeeding.

One round of the flood, for every topic:

- signed junk: random bytes, and msgpack arrays of random fields (what a decoder
  must refuse), valid GossipSub signatures, each payload unique (no cache helps);
- signed oversized: one byte over the topic's cap;
- unsigned, badly signed, and signed-by-a-key-that-is-not-the-author messages;
- a message whose ``from_id`` and ``key`` are junk (no key can be derived);
- one RPC packed with ``BATCH`` small signed junk messages;

and every ``SPECIAL_EVERY`` rounds, a frame that is not a protobuf RPC and a frame
whose length prefix exceeds any RPC limit (both end the stream; a new one is opened).

At the end it prints one JSON line: per target, the wall time of its first and last
successful write, messages and bytes written, streams opened, connections made, and
the errors it met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import msgpack
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.utils.varint import encode_uvarint

from p2p.topics import default_cap

RETRY_S = 0.5  # between attempts on a target that refused us
BATCH = 256  # small messages packed into one RPC
SPECIAL_EVERY = 8  # rounds between stream-killing frames
JUNK_SIZE = 200
OVER_RPC_LIMIT = 4 * 1024 * 1024  # declared length of the over-limit frame (nodes allow 2 MiB)


@dataclass
class TargetReport:
    addr: str
    first_write_wall: float | None = None
    last_write_wall: float | None = None
    bytes: int = 0
    rpcs: int = 0
    streams: int = 0
    connects: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Forger:
    """Builds GossipSub messages, correctly signed or not, with unique payloads."""

    def __init__(self, topics: list[str], rng: random.Random) -> None:
        self.topics = topics
        self.rng = rng
        self.key = create_new_key_pair(rng.randbytes(32))
        self.other = create_new_key_pair(rng.randbytes(32))
        from libp2p.peer.id import ID

        self.my_id = ID.from_pubkey(self.key.public_key).to_bytes()
        self.seqno = 0

    def _unique(self, size: int) -> bytes:
        self.seqno += 1
        return self.seqno.to_bytes(8, "big") + os.urandom(max(0, size - 8))

    def _msg(self, topic: str, data: bytes) -> rpc_pb2.Message:
        self.seqno += 1
        return rpc_pb2.Message(data=data, topicIDs=[topic], from_id=self.my_id, seqno=self.seqno.to_bytes(8, "big"))

    def signed(self, topic: str, data: bytes, *, key: Any = None) -> rpc_pb2.Message:
        msg = self._msg(topic, data)
        signer = key or self.key
        msg.signature = signer.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        msg.key = signer.public_key.serialize()
        return msg

    def msgpack_junk(self) -> bytes:
        r = self.rng
        fields = [r.choice([None, True, r.randrange(2**64), os.urandom(r.choice([20, 32, 64])), "x", [1, 2]])
                  for _ in range(r.randrange(1, 14))]
        return msgpack.packb([r.randrange(4), self._unique(16), *fields])

    def round(self, kinds: frozenset[str]) -> Iterator[tuple[str, bytes]]:
        """One round of junk of the given kinds: (kind, one framed RPC)."""
        for topic in self.topics:
            for kind in KINDS:
                if kind in kinds and kind in self._makers:
                    yield kind, frame(rpc_pb2.RPC(publish=self._makers[kind](topic)))

    @property
    def _makers(self) -> dict[str, Any]:
        return {
            "junk": lambda t: [self.signed(t, self._unique(JUNK_SIZE))],
            "msgpack": lambda t: [self.signed(t, self.msgpack_junk())],
            "oversized": lambda t: [self.signed(t, self._unique(default_cap(t) + 1))],
            "unsigned": lambda t: [self._msg(t, self._unique(JUNK_SIZE))],
            "bad-signature": self._bad_signature,
            "wrong-key": lambda t: [self.signed(t, self._unique(JUNK_SIZE), key=self.other)],
            "junk-author": lambda t: [rpc_pb2.Message(data=self._unique(JUNK_SIZE), topicIDs=[t], from_id=os.urandom(34),
                                                      seqno=os.urandom(8), signature=os.urandom(64), key=os.urandom(36))],
            "batch": lambda t: [self.signed(t, self._unique(64)) for _ in range(BATCH)],
        }

    def _bad_signature(self, topic: str) -> list[rpc_pb2.Message]:
        msg = self._msg(topic, self._unique(JUNK_SIZE))
        msg.signature, msg.key = os.urandom(64), self.key.public_key.serialize()
        return [msg]


# Kinds of junk; the last two are frames that end the stream (a new one is opened).
KINDS = ("junk", "msgpack", "oversized", "unsigned", "bad-signature", "wrong-key", "junk-author", "batch",
         "not-protobuf", "over-limit")


def frame(rpc: rpc_pb2.RPC) -> bytes:
    body = rpc.SerializeToString()
    return encode_uvarint(len(body)) + body


async def drain(stream: Any) -> None:
    """Read and drop what a node sends on its own pubsub stream to us."""
    try:
        while await stream.read(65536):
            pass
    except Exception:
        pass


async def flood_target(host: Any, addr: str, forger: Forger, kinds: frozenset[str], topics: list[str],
                       deadline: float, rep: TargetReport) -> None:
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    hello = frame(rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in topics]))
    rounds = 0
    while time.monotonic() < deadline:
        try:
            unblock = getattr(host.get_network(), "unblock_peer", None)
            if unblock is not None:
                unblock(info.peer_id)  # no 60 s negative cache: keep knocking
            with trio.fail_after(5):
                await host.connect(info)
                rep.connects += 1
                stream = await host.new_stream(info.peer_id, [PROTOCOL_ID_V11, PROTOCOL_ID])
            rep.streams += 1
            await stream.write(hello)
            ended_on_purpose = False
            while time.monotonic() < deadline:
                rounds += 1
                frames = list(forger.round(kinds))
                if "not-protobuf" in kinds and rounds % SPECIAL_EVERY == 0:
                    frames.append(("not-protobuf", encode_uvarint(64) + os.urandom(64)))
                if "over-limit" in kinds and rounds % SPECIAL_EVERY == SPECIAL_EVERY // 2:
                    frames.append(("over-limit", encode_uvarint(OVER_RPC_LIMIT) + os.urandom(64 * 1024)))
                if not frames:  # only stream-ending kinds: pace them by rounds
                    await trio.sleep(0)
                for kind, data in frames:
                    with trio.fail_after(max(0.01, deadline - time.monotonic())):
                        await stream.write(data)
                    now = time.time()
                    rep.first_write_wall = rep.first_write_wall or now
                    rep.last_write_wall = now
                    rep.rpcs += 1
                    rep.bytes += len(data)
                if any(kind in ("not-protobuf", "over-limit") for kind, _ in frames):
                    ended_on_purpose = True
                    break  # the node ends this stream; open another at once
            if ended_on_purpose:
                continue
        except trio.TooSlowError:
            rep.errors["timeout"] += 1
        except Exception as exc:  # refused, reset, closed: the point is to keep trying
            rep.errors[type(exc).__name__] += 1
        await trio.sleep(RETRY_S)


async def run_identity(name: str, kinds: frozenset[str], args: argparse.Namespace, rng: random.Random,
                       ready: trio.Event, go: trio.Event, out: dict[str, Any]) -> None:
    """One flooding identity (its own key and host) against every target."""
    forger = Forger(args.topic, rng)
    host = new_host(key_pair=forger.key)
    for proto in (PROTOCOL_ID_V11, PROTOCOL_ID):
        host.set_stream_handler(proto, drain)
    reports = [TargetReport(a) for a in args.target]
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        ready.set()
        await go.wait()
        deadline = time.monotonic() + args.duration
        async with trio.open_nursery() as nursery:
            for rep in reports:
                nursery.start_soon(flood_target, host, rep.addr, forger, kinds, args.topic, deadline, rep)
        out[name] = {"peer_id": host.get_id().to_base58(), "kinds": sorted(kinds),
                     "targets": [{**rep.__dict__, "errors": dict(rep.errors)} for rep in reports]}


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    identities = {k: frozenset([k]) for k in KINDS} if args.identity_per_kind else {"all": frozenset(KINDS)}
    out: dict[str, Any] = {}
    go = trio.Event()
    async with trio.open_nursery() as nursery:
        for name, kinds in identities.items():
            ready = trio.Event()
            nursery.start_soon(run_identity, name, kinds, args, random.Random(rng.random()), ready, go, out)
            await ready.wait()
        started = time.time()
        go.set()
    print(json.dumps({"event": "done", "started_wall": started, "duration": args.duration, "identities": out}),
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True, help="multiaddr ending in /p2p/<id>")
    p.add_argument("--topic", action="append", required=True)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of flooding")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--identity-per-kind", action="store_true",
                   help="one identity per kind of junk (each must be banned on its own) instead of one for all")
    args = p.parse_args()
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
