"""Read a stopped node's chain back: canonical blocks re-executed from scratch.

Used by the demo's final tables and by tests that check rewards against the
formula: the receipts come from running the consensus code again over the
stored blocks, and the final root must equal the stored head state's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chain.state import State
from chain.store import ChainStore
from chain.outcome import BlockReceipt
from chain.transition import process_block
from chain.types import Block
from p2p import ContentStore

from daimon_node.daemon.chains import content_env


@dataclass(frozen=True)
class Replay:
    blocks: list[Block]
    receipts: list[BlockReceipt]
    state: State


def replay_chain(node_dir: Path, chain_id: bytes) -> Replay:
    """Re-execute every canonical block of ``chain_id`` stored under ``node_dir``."""
    env = content_env(ContentStore(Path(node_dir) / "content"))
    blocks: list[Block] = []
    receipts: list[BlockReceipt] = []
    with ChainStore(Path(node_dir) / "chains" / chain_id.hex()) as store:
        state = State()
        for height in range(store.height + 1):
            block = store.get_block_by_height(height)
            if block is None:
                raise LookupError(f"canonical block {height} missing from {node_dir}")
            outcome = process_block(state, block, env)
            state = outcome.state
            blocks.append(block)
            receipts.append(outcome.receipt)
        if state.root != store.state.root:
            raise ValueError(f"replayed state root differs from the stored one in {node_dir}")
    return Replay(blocks, receipts, state)
