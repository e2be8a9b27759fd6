"""Chain import throughput vs the Ed25519 limit (issue 3).

Builds a synthetic chain (default 5,000 Improvement blocks, each anchoring a
PoI with 16 votes, registering the next model digest, and voiding the previous
anchor), then imports it into a fresh LevelDB store the way a node does (``import_bytes``:
header first, then decode + verify every signature + apply + write). Beside it,
from the same run, the raw Ed25519 verifications/s of this machine and the
blocks/s that limit implies for the same number of signatures per block.
Target: import >= 50% of that.

Then the cost of refusing a 1 MB junk block whose header signature is bad (issue
14): the header is decoded and its signature checked before any of the body is
read. Target: under 1 ms.

    .venv/bin/python benchmarks/chain_bench.py [--blocks 5000] [--votes 16]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from chain.codec import pack, struct_to_obj  # noqa: E402
from chain.crypto import verify  # noqa: E402
from chain.devnet import Devnet, DevnetConfig, corrupt  # noqa: E402
from chain.errors import BadCommitterSignature  # noqa: E402
from chain.store import ChainStore  # noqa: E402
from chain.payloads import RegisterDigest
from chain.types import Anchor, Block, split_block

JUNK_BYTES = 1 << 20  # the junk block's size: one MiB
JUNK_TRIES = 200  # refusals timed; the median is reported


def build_chain(blocks: int, votes: int) -> tuple[Devnet, list[bytes]]:
    cfg = DevnetConfig(validators=votes, max_votes=votes, improver_bond=10**9, t_p=10, t_b=10, grace=5)
    d = Devnet(cfg)
    d.start()
    d.bond_validators()
    improver = d.improver_keys[0]
    labels = corrupt(d.truth, 0.3, cfg.num_classes, 1)
    digest = hashlib.sha256(b"model-0").digest()
    d.commit(transactions=[d.register(improver, digest)])
    t = time.perf_counter()
    for i in range(blocks - len(d.blocks)):
        poi, reveal = d.prove(improver, digest, labels)
        anchor = Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys))
        digest = hashlib.sha256(f"model-{i + 1}".encode()).digest()
        d.commit(transactions=[d.register(improver, digest)], anchor=anchor)
        if i % 500 == 0:
            print(f"  built {len(d.blocks)}/{blocks} blocks ({time.perf_counter() - t:.0f} s)", flush=True)
    return d, [b.encode() for b in d.blocks]


def junk_block(header_source: bytes) -> bytes:
    """A block of at least ``JUNK_BYTES``: a real header with a flipped signature bit over a body
    of ambiguous positions (the shape that cost about a second to decode before issue 14)."""
    header, _ = split_block(header_source)
    header_obj = struct_to_obj(header)
    header_obj[-1] = bytes([header.signature[0] ^ 1]) + header.signature[1:]
    positions = [[i % 128, 0] for i in range(JUNK_BYTES // 3)]  # 3 bytes each (fixarray, 2 fixints)
    return pack([header_obj, [1, [[], None, None, [[positions], []]]]])


def junk_refusal_seconds(store: ChainStore, env, raw: bytes) -> float:  # type: ignore[no-untyped-def]
    """Median seconds to refuse ``raw`` through the node's import path."""
    times = []
    for _ in range(JUNK_TRIES):
        t0 = time.perf_counter()
        try:
            store.import_bytes(raw, env)
        except BadCommitterSignature:
            pass
        else:
            raise AssertionError("junk block accepted")
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def raw_verify_rate(seconds: float = 2.0) -> tuple[float, float]:
    """Verifications/s: with a pre-parsed key, and through chain.crypto.verify (parses the key)."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    pub_raw = pub.public_bytes_raw()
    msg = os.urandom(300)
    sig = key.sign(msg)
    rates = []
    for fn in (lambda: pub.verify(sig, msg), lambda: verify(pub_raw, sig, msg)):
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(200):
                fn()
            n += 200
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=5000)
    ap.add_argument("--votes", type=int, default=16)
    args = ap.parse_args()
    print(f"building a synthetic chain of {args.blocks} blocks with {args.votes} votes each ...", flush=True)
    d, encoded = build_chain(args.blocks, args.votes)
    sigs_per_block = 1 + 1 + args.votes + 1  # header, PoI, votes, digest-registration tx
    with tempfile.TemporaryDirectory() as tmp:
        env = Devnet(d.cfg).env  # a fresh env: no parsed-DEL cache carried over
        with ChainStore(Path(tmp) / "db") as store:
            t0 = time.perf_counter()
            for raw in encoded:
                store.import_bytes(raw, env, d.params)
            elapsed = time.perf_counter() - t0
            assert store.state.root == d.state.root
            height = store.height
            junk = junk_block(encoded[-1])
            junk_s = junk_refusal_seconds(store, env, junk)
    raw_parsed, raw_chain = raw_verify_rate()
    blocks_per_s = len(encoded) / elapsed
    limit = raw_parsed / sigs_per_block
    print()
    print(f"chain import: {len(encoded)} blocks (height {height}) in {elapsed:.2f} s")
    print(f"{'figure':<44}{'value':>14}")
    print(f"{'import blocks/s (decode+verify+apply+store)':<44}{blocks_per_s:>14.1f}")
    print(f"{'raw Ed25519 verifications/s (parsed key)':<44}{raw_parsed:>14.0f}")
    print(f"{'raw Ed25519 verifications/s (+key parse)':<44}{raw_chain:>14.0f}")
    print(f"{'signatures per block':<44}{sigs_per_block:>14d}")
    print(f"{'limit blocks/s (raw verify / sigs)':<44}{limit:>14.1f}")
    print(f"{'import / limit':<44}{blocks_per_s / limit:>13.1%}   (target >= 50%)")
    print(f"{'junk block size (bytes)':<44}{len(junk):>14d}")
    print(f"{'refuse junk, bad signature (median ms)':<44}{junk_s * 1e3:>14.3f}   (target < 1 ms)")


if __name__ == "__main__":
    main()
