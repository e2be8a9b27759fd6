"""A heavy block import racing vote validation on one event loop (test and benchmark share it).

The block is the heaviest a committer may sign on the transaction side: signed transfers
filling ``MAX_BLOCK_TX_BYTES``, each one signature-checked and executed on import. While it
is imported, a probe task validates a bonded validator's vote through the admission path
again and again, and records how long each took from the moment it asked to run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from chain import constants as C
from chain.consensus import period_end
from chain.devnet import Devnet, DevnetConfig, corrupt
from chain.payloads import Transfer
from daimon_node.clock import FakeClock
from daimon_node.daemon.admission import VOTE, Admitter, NodeMetrics, Source
from daimon_node.daemon.chains import ChainHandle, ChainManager, ImportReport
from daimon_node.daemon.importer import BlockImporter
from p2p import ContentStore, ValidationResult


@dataclass
class HeavyChain:
    devnet: Devnet
    block: bytes  # the heavy block, child of the devnet's previous head
    vote: bytes  # a bonded validator's vote for a PoI of the period after it
    now: float
    txs: int


def heavy_chain() -> HeavyChain:
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    senders = [*d.improver_keys, *d.validator_keys, *d.committer_keys]
    txs, size = [], 0
    while True:
        tx = d.tx(senders[len(txs) % len(senders)], Transfer(d.creator.address_bytes, 1))
        if size + len(tx.encode()) > C.MAX_BLOCK_TX_BYTES - 1024:  # room for the list's own framing
            break
        txs.append(tx)
        size += len(tx.encode())
    block = d.commit(transactions=txs)
    poi, reveal = d.prove(d.improver_keys[0], b"\x44" * 32, corrupt(d.truth, 0.1, d.cfg.num_classes, seed=1))
    vote = d.vote(d.validator_keys[0], poi, reveal)
    return HeavyChain(d, block.encode(), vote.encode(), period_end(d.params, d.period) + 1, len(txs))


@dataclass
class RaceFigures:
    import_s: float = 0.0
    delays_s: list[float] = field(default_factory=list)

    @property
    def worst_delay_s(self) -> float:
        return max(self.delays_s)


def manager_before(path: Path, heavy: HeavyChain) -> tuple[ChainManager, ChainHandle]:
    content = ContentStore(path / "content")
    for data in heavy.devnet.contents.values():
        content.put(data)
    manager = ChainManager(path, content, FakeClock(heavy.now))
    handle, _ = manager.add_proposal(heavy.devnet.proposal)
    for block in heavy.devnet.blocks[:-1]:
        manager.import_block(handle, block.encode())
    return manager, handle


async def _probe(admitter: Admitter, handle: ChainHandle, vote: bytes, done: trio.Event, out: RaceFigures) -> None:
    while not done.is_set():
        asked = time.perf_counter()
        await trio.lowlevel.checkpoint()  # let every other task (the import) run first
        handle.mempool.votes.clear()  # judge the vote afresh each time, signature and bond
        verdict = admitter.admit(handle, VOTE, vote, Source.GOSSIP).verdict
        out.delays_s.append(time.perf_counter() - asked)
        assert verdict is ValidationResult.ACCEPT, verdict


async def race(path: Path, heavy: HeavyChain, *, on_loop: bool) -> RaceFigures:
    """Import ``heavy.block`` while probing vote validation; ``on_loop`` imports it as the
    blocks validator used to, inside the event loop, instead of through ``BlockImporter``."""
    manager, handle = manager_before(path, heavy)
    metrics = NodeMetrics()

    async def publish(topic: str, data: bytes) -> None:
        return None

    admitter = Admitter(lambda: heavy.now, lambda *event: None, publish, metrics)
    out, done = RaceFigures(), trio.Event()

    def finished() -> None:
        out.import_s = time.perf_counter() - started
        done.set()

    async def imported(handle: ChainHandle, report: ImportReport, data: bytes) -> None:
        finished()

    importer = BlockImporter(manager, metrics, imported, lambda handle, exc: None)

    async def import_on_loop() -> None:
        manager.import_block(handle, heavy.block)
        finished()

    async with trio.open_nursery() as nursery:
        await nursery.start(importer.run)
        started = time.perf_counter()
        if on_loop:
            nursery.start_soon(import_on_loop)
        else:
            assert importer.check(handle, heavy.block) is ValidationResult.ACCEPT
        await _probe(admitter, handle, heavy.vote, done, out)
        nursery.cancel_scope.cancel()
    assert handle.store.head == handle.store.canonical_hash(heavy.devnet.blocks[-1].header.height)
    manager.close()
    return out


async def idle_delays(path: Path, heavy: HeavyChain, seconds: float) -> list[float]:
    """The same probe for ``seconds`` with no import running: what this machine's own scheduling
    (other processes, the collector) costs a vote right now, to tell it apart from the import's."""
    manager, handle = manager_before(path, heavy)

    async def publish(topic: str, data: bytes) -> None:
        return None

    admitter = Admitter(lambda: heavy.now, lambda *event: None, publish, NodeMetrics())
    out, done = RaceFigures(), trio.Event()
    async with trio.open_nursery() as nursery:
        async def stop_later() -> None:
            await trio.sleep(seconds)
            done.set()

        nursery.start_soon(stop_later)
        await _probe(admitter, handle, heavy.vote, done, out)
    manager.close()
    return out.delays_s
