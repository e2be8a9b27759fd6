"""Blocks are imported off the event loop (issue 15): a heavy import does not hold up votes.

The bound is the issue's 50 ms. With the import on a worker thread the event loop only waits
for the interpreter lock, which a busy thread hands over every ``sys.getswitchinterval()``
(5 ms): a vote's validation needs a handful of such hand-overs (its signature check, the
reads of the bond and the period), so ten of them, 50 ms, bound it. The import itself takes
hundreds of milliseconds (asserted), so with the import on the loop the vote judged while it
runs waits all of it, in every run. The machine running the tests is shared, and the
operating system may stall the whole process for longer than the bound at any moment: a run
whose worst delay is over it is repeated, up to ``RUNS`` times, and one run within the bound
passes (the on-loop import can never produce such a run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from importload import heavy_chain, race

LIMIT_S = 10 * sys.getswitchinterval()
RUNS = 3


@pytest.mark.trio
async def test_a_heavy_block_import_does_not_delay_vote_validation(tmp_path: Path) -> None:
    heavy = heavy_chain()
    worst = []
    for run in range(RUNS):
        figures = await race(tmp_path / str(run), heavy, on_loop=False)
        assert figures.import_s > LIMIT_S  # the import is heavy enough to show a delay if it blocked
        assert len(figures.delays_s) > 1  # votes were judged while it ran
        worst.append(figures.worst_delay_s)
        if figures.worst_delay_s <= LIMIT_S:
            return
    pytest.fail(f"a vote waited {min(worst) * 1e3:.1f} ms or more in every run (limit {LIMIT_S * 1e3:.0f} ms)")
