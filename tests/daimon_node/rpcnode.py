"""The devnet chain the RPC tests serve from a real node (``daimon_node.harness.devnet_node``)."""

from __future__ import annotations

import hashlib

from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.payloads import OfferService, Rate
from chain.proofs import Reveal
from chain.types import Anchor


def rpc_devnet() -> Devnet:
    """A chain that gives every read method something to find, and leaves work for the writes.

    Heights: 0 the Problem block; 1 validator bonds; 2-4 improver 0 claims, anchors and settles
    a model (best model, rewards); 5 improvers 1 and 2 claim models (2's is ``MODEL``), runner
    ``validator_keys[1]`` offers inference and improver 3 rates it; 6 anchors improver 1's PoI,
    whose reveal (``RPC_REVEALS[chain id]``) is due in period 7, the period the node's clock is in.
    """
    d = Devnet(DevnetConfig(m=50))
    d.start()
    d.bond_validators()
    d.improve(d.improver_keys[0], corrupt(d.truth, 0.1, 10, seed=1))
    runner = d.validator_keys[1]
    d.commit(transactions=[
        d.register(d.improver_keys[1], ANCHORED_DIGEST), d.register(d.improver_keys[2], MODEL_DIGEST),
        d.tx(runner, OfferService(5, b"12D3KooWRunner", MODEL_DIGEST)),
        d.tx(d.improver_keys[3], Rate(runner.address_bytes, 1)),
    ])
    poi, reveal = d.prove(d.improver_keys[1], ANCHORED_DIGEST, corrupt(d.truth, 0.08, 10, seed=2))
    d.commit(anchor=Anchor(poi, tuple(d.vote(v, poi, reveal) for v in d.validator_keys)))
    RPC_REVEALS[d.chain_id] = reveal
    return d


MODEL = b"onnx bytes of improver 2"  # what daimon_submitModel stores; claimed at height 5
MODEL_DIGEST = hashlib.sha256(MODEL).digest()
ANCHORED_DIGEST = hashlib.sha256(b"improver 1's anchored model").digest()
RPC_REVEALS: dict[bytes, Reveal] = {}  # chain id -> the reveal rpc_devnet left unsubmitted
