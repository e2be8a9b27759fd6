"""Blocks are imported off the event loop (issue 15): a heavy import does not hold up votes.

The bound is the issue's 50 ms. With the import on a worker thread the event loop only waits
for the interpreter lock, which a busy thread hands over every ``sys.getswitchinterval()``
(5 ms): a vote's validation needs a handful of such hand-overs (its signature check, the
reads of the bond and the period), so ten of them, 50 ms, bound it. The import itself takes
hundreds of milliseconds (asserted), so with the import on the loop the vote judged while it
runs waits all of it.

The machine running the tests is shared: the operating system may stall the whole process at
any moment, import or not. Each run therefore also probes for as long with no import running,
and the import is charged only what exceeds that idle worst case. A run in which the import is
not longer than idle stalls plus the bound cannot tell the two apart and is repeated, up to
``RUNS`` times.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from importload import heavy_chain, idle_delays, race

LIMIT_S = 10 * sys.getswitchinterval()
RUNS = 3


@pytest.mark.trio
async def test_a_heavy_block_import_does_not_delay_vote_validation(tmp_path: Path) -> None:
    heavy = heavy_chain()
    seen = []
    for run in range(RUNS):
        figures = await race(tmp_path / f"import{run}", heavy, on_loop=False)
        assert len(figures.delays_s) > 1  # votes were judged while it ran
        idle = max(await idle_delays(tmp_path / f"idle{run}", heavy, figures.import_s))
        seen.append((figures.worst_delay_s, idle, figures.import_s))
        if figures.import_s <= idle + LIMIT_S:
            continue  # stalls as long as the import itself: this run cannot show a blocked loop
        assert figures.worst_delay_s <= idle + LIMIT_S, (
            f"a vote waited {figures.worst_delay_s * 1e3:.1f} ms during the import, {idle * 1e3:.1f} ms with none "
            f"(limit: idle + {LIMIT_S * 1e3:.0f} ms; the import took {figures.import_s * 1e3:.0f} ms)")
        return
    pytest.fail(f"the machine stalled as long as the import in every run (worst, idle, import s): {seen}")


def test_a_full_import_queue_drops_a_block_unrelayed_and_counts_it(tmp_path: Path) -> None:
    """A queue with room for one block: the first is relayed, the next is IGNOREd (sync fetches it)."""
    from daimon_node.daemon.admission import NodeMetrics
    from daimon_node.daemon.importer import BlockImporter
    from importload import manager_before
    from p2p import ValidationResult

    heavy = heavy_chain()
    manager, handle = manager_before(tmp_path, heavy)
    metrics = NodeMetrics()

    async def react(*args: object) -> None:
        return None

    importer = BlockImporter(manager, metrics, react, lambda handle, exc: None, cap=1)
    assert importer.check(handle, heavy.block) is ValidationResult.ACCEPT
    assert importer.queued() == 1
    assert importer.check(handle, heavy.block) is ValidationResult.IGNORE  # no room: not relayed
    assert importer.dropped == 1 and metrics.gossip[("block", "queue_full")] == 1
    assert handle.store.height == heavy.devnet.blocks[-2].header.height  # nothing imported on the loop
    manager.close()
