"""The JavaScript follower's codec against the Python chain (issue 17), without a network.

A devnet chain with every kind of block content a follower meets early (the Problem block,
transactions with empty and non-empty payloads, an anchored PoI with negative embedding
entries and votes, a settlement reveal) is written as frames and checked by
``interop/js/verify-blocks.mjs``, the follower's own decoding and hashing: it must give the
Python hashes. Then each way a peer could lie is fed to it and must be refused, as the Python
side refuses it.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chain.devnet import Devnet, DevnetConfig
from chain.errors import DecodeError
from chain.types import Block

NODE_RUN_TIMEOUT_S = 60  # one short node process (start-up is about a second)


@pytest.fixture(scope="module")
def devnet_chain() -> tuple[bytes, list[Block]]:
    d = Devnet(DevnetConfig(m=64))
    d.start()
    d.bond_validators()
    labels = d.improving_labels(1)[0]
    d.improve(d.improver_keys[0], labels)
    return d.chain_id, list(d.blocks)


def frames(blocks: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in blocks)


def verify(node_js: str, js_dir: Path, tmp_path: Path, chain_id: bytes, encoded: list[bytes]) -> dict[str, Any]:
    path = tmp_path / "blocks.bin"
    path.write_bytes(frames(encoded))
    done = subprocess.run([node_js, str(js_dir / "verify-blocks.mjs"), "--chain", chain_id.hex(), "--file", str(path)],
                          capture_output=True, text=True, timeout=NODE_RUN_TIMEOUT_S)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert (done.returncode == 0) == result["ok"], (done.returncode, result, done.stderr)
    return result


def test_js_hashes_are_the_python_hashes(node_js: str, js_dir: Path, tmp_path: Path,
                                         devnet_chain: tuple[bytes, list[Block]]) -> None:
    chain_id, blocks = devnet_chain
    kinds = {type(b.body).__name__ for b in blocks}
    assert kinds == {"ProblemBody", "ImprovementBody"}
    assert any(b.body.anchor is not None for b in blocks[1:]) and any(b.body.settlement is not None for b in blocks[1:])
    assert any(v < 0 for b in blocks[1:] if b.body.anchor for v in b.body.anchor.poi.ys[0])  # signed ints on the wire
    result = verify(node_js, js_dir, tmp_path, chain_id, [b.encode() for b in blocks])
    assert result == {"ok": True, "hashes": [b.hash.hex() for b in blocks]}


def test_js_refuses_what_python_refuses(node_js: str, js_dir: Path, tmp_path: Path,
                                        devnet_chain: tuple[bytes, list[Block]]) -> None:
    chain_id, blocks = devnet_chain
    encoded = [b.encode() for b in blocks]

    def refused(chain: list[bytes], why: str) -> None:
        result = verify(node_js, js_dir, tmp_path, chain_id, chain)
        assert not result["ok"] and why in result["error"], result

    # A body that is not the one the header commits to (the header, and its signature, kept).
    anchored = next(i for i, b in enumerate(blocks) if i > 0 and b.body.anchor is not None)
    stripped = Block(blocks[anchored].header, blocks[anchored - 1].body)
    refused(encoded[:anchored] + [stripped.encode()], "body hash mismatch")
    # A header whose signature is not the committer's.
    header = encoded[1]
    sig_at = header.index(blocks[1].header.signature)
    forged = header[:sig_at] + bytes([header[sig_at] ^ 1]) + header[sig_at + 1:]
    refused([encoded[0], forged], "bad committer signature")
    # Blocks out of order: each is well formed, the chain is not.
    refused([encoded[0], encoded[2], encoded[1]], "says height")
    # Another chain's id asked for.
    result = verify(node_js, js_dir, tmp_path, bytes(32), encoded)
    assert not result["ok"] and "another chain" in result["error"]
    # The same values in a longer msgpack form: height 1 as uint8 (0xcc 0x01) instead of fixint 0x01.
    # Python's decoder refuses it too: one encoding per value is what makes the hash well defined.
    height_at = 1 + 1 + 2 + 32  # block array tag, header array tag, chain id (bin8 tag, length, 32 bytes)
    assert encoded[1][height_at] == 0x01
    wide = encoded[1][:height_at] + b"\xcc\x01" + encoded[1][height_at + 1:]
    with pytest.raises(DecodeError):
        Block.decode(wide)
    refused([encoded[0], wide], "non-canonical")
