"""Disk full (issue 13): the store's filesystem hits ENOSPC in the middle of block imports.

A small tmpfs over the store's directory, filled to the last byte by a balloon file,
stands for the full disk; deleting the balloon is "space returns" (``smalldisk.py``).
The store must refuse the write with a typed ``StoreFull`` and nothing half-written;
the node must say so in one line and stop; once space returns it reopens where it
stopped and catches up, with no block, balance or settlement lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smalldisk import NoSmallDisk, SmallDisk, python_here

# LevelDB's own files (CURRENT, LOCK, LOG, MANIFEST, an empty log) take a few KiB; the
# devnet's blocks write a few KiB each (block, state diff, undo). 1 MiB holds the store
# many times over, so only the balloon makes it full.
UNIT_DISK_BYTES = 1 << 20
# The devnet's chain: a Problem block, a bond block, then three blocks per improvement
# (PoI, votes, settlement): 2 + 3 * 8 = 26 blocks, a few KiB each.
IMPROVEMENTS = 8
# Fill after the Problem and bond blocks and two improvements, so the failing write
# comes in the middle of the imports: tmpfs allocates whole 4 KiB pages, so the log's
# last page may take one or two more small batches before a write needs a new page.
FILL_AFTER = 2 + 3 * 2

_IMPORT_UNTIL_FULL = """
import json, sys
from chain.devnet import Devnet, DevnetConfig
from chain.store import ChainStore
from smalldisk import fill_to_the_brim

db, balloon, fill_after, improvements = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = Devnet(DevnetConfig(seed=0))
d.start()
d.bond_validators()
for i, labels in enumerate(d.improving_labels(improvements, seed=0)):
    d.improve(d.improver_keys[i % 4], labels)
report = {"hashes": [b.hash.hex() for b in d.blocks], "roots": [b.header.state_root.hex() for b in d.blocks],
          "final_root": d.state.root.hex()}
store = ChainStore(db)
failed_at, errors = None, []
for i, block in enumerate(d.blocks):
    if i == fill_after:
        fill_to_the_brim(balloon)
    try:
        store.import_block(block, d.env)
    except Exception as exc:
        failed_at = i
        errors.append([type(exc).__name__, str(exc)])
        try:  # the store takes no further write until reopened
            store.import_block(block, d.env)
        except Exception as again:
            errors.append([type(again).__name__, str(again)])
        break
report.update(failed_at=failed_at, errors=errors, head=store.head.hex())
store.close()
print(json.dumps(report))
"""

_REOPEN_AND_FINISH = """
import json, sys
from chain.devnet import Devnet, DevnetConfig
from chain.store import ChainStore

db, improvements = sys.argv[1], int(sys.argv[2])
d = Devnet(DevnetConfig(seed=0))
d.start()
d.bond_validators()
for i, labels in enumerate(d.improving_labels(improvements, seed=0)):
    d.improve(d.improver_keys[i % 4], labels)
with ChainStore(db) as store:
    report = {"head": store.head.hex(), "height": store.height, "root": store.state.root.hex()}
    for block in d.blocks[store.height + 1:]:
        store.import_block(block, d.env)
    report.update(final_head=store.head.hex(), final_root=store.state.root.hex())
print(json.dumps(report))
"""


def small_disk(directory: Path, size_bytes: int) -> SmallDisk:
    try:
        return SmallDisk(directory, size_bytes).mount()
    except NoSmallDisk as why:
        pytest.skip(str(why))


def test_store_full_refuses_the_batch_and_reopens_at_the_last_whole_block(tmp_path: Path) -> None:
    disk = small_disk(tmp_path / "disk", UNIT_DISK_BYTES)
    try:
        db = disk.directory / "db"
        first = json.loads(disk.run(python_here(_IMPORT_UNTIL_FULL) + [
            str(db), str(disk.directory / ".balloon"), str(FILL_AFTER), str(IMPROVEMENTS)]))
        failed_at = first["failed_at"]
        assert failed_at is not None and failed_at >= FILL_AFTER, "the full disk never refused a write"
        assert [name for name, _ in first["errors"]] == ["StoreFull", "StoreFull"], first["errors"]
        assert str(db) in first["errors"][0][1]
        assert first["head"] == first["hashes"][failed_at - 1]  # in memory: the last whole block
        disk.drain()
        second = json.loads(disk.run(python_here(_REOPEN_AND_FINISH) + [str(db), str(IMPROVEMENTS)]))
    finally:
        disk.unmount()
    # On disk: exactly the blocks before the refused one, with their state, and nothing of it.
    assert second["height"] == failed_at - 1
    assert second["head"] == first["hashes"][failed_at - 1]
    assert second["root"] == first["roots"][failed_at - 1]
    assert second["final_head"] == first["hashes"][-1]
    assert second["final_root"] == first["final_root"]
