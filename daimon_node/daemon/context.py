"""What a component (a role, the runner, a test's cheater) may read and do: not the node.

``RoleContext`` is built by the node from its parts and handed to every component: the node's
key, its content store and sandbox, the clock, the chains it follows, and the few actions a
role takes (submit a transaction, publish a block, proof, vote or proposal, fetch content,
serve a request/response protocol). Everything goes through the node's one admission path and its one
block importer, so a role's message is judged like a peer's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.crypto import KeyPair
from chain.payloads import Transaction
from p2p import ContentStore

from daimon_node.clock import Clock
from daimon_node.daemon.admission import PROOF, TX, VOTE, Admission, Admitter
from daimon_node.daemon.chains import ChainHandle, ChainManager
from daimon_node.proofs.sandbox import Sandbox

RequestHandler = Callable[[str, Any], Awaitable[Any]]  # (peer id, decoded request) -> reply


@dataclass
class RoleContext:
    """The narrow view of a running node that components are given."""

    keys: KeyPair
    content: ContentStore
    sandbox: Sandbox
    clock: Clock
    data_dir: Path
    chains: ChainManager
    admitter: Admitter
    peer_id: Callable[[], str]  # known once the p2p host runs
    import_and_publish: Callable[[ChainHandle, bytes], Awaitable[None]]
    publish_raw: Callable[[str, bytes], Awaitable[None]]  # a topic outside any chain (problems)
    fetch: Callable[[bytes, int], Awaitable[bytes]]
    # serve a request/response protocol (p2p/reqresp.py): protocol id, codec, limits, handler; the
    # node's own clients (RPC) reach the same handler without the network
    serve: Callable[[str, Any, Any, RequestHandler], None]

    def now(self) -> float:
        return self.clock.now()

    def chain(self, chain_id: bytes) -> ChainHandle | None:
        return self.chains.get(chain_id)

    async def submit_tx(self, handle: ChainHandle, tx: Transaction) -> Admission:
        return await self.admitter.submit(handle, TX, tx.encode(), message=tx)

    async def publish_block(self, handle: ChainHandle, block_bytes: bytes) -> None:
        await self.import_and_publish(handle, block_bytes)

    async def publish_proof(self, handle: ChainHandle, data: bytes) -> Admission:
        return await self.admitter.submit(handle, PROOF, data)

    async def publish_vote(self, handle: ChainHandle, data: bytes) -> Admission:
        return await self.admitter.submit(handle, VOTE, data)

    async def fetch_content(self, content_id: bytes, max_bytes: int) -> bytes:
        return await self.fetch(content_id, max_bytes)
