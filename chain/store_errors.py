"""The chain store's typed failures: an unusable database, a refused write, a full disk.

Kept apart from ``chain.store`` so code that only handles a store's failures (the node's
data-directory guard) need not know its layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from .errors import ChainError

# LevelDB's memtable (its default, set explicitly so this stays true): a flush writes a
# table of about this size, the largest write a batch can set off. A failed write with
# less free space than this on the store's filesystem is a full disk.
WRITE_BUFFER_BYTES: Final[int] = 4 << 20


class StoreError(ChainError):
    """The database is missing, locked by another process, or inconsistent."""


class ReceiptsMissing(StoreError):
    """The store was written by a node that did not keep receipts, and they were not rebuilt
    (``ChainStore.rebuild_receipts``): what its blocks did cannot be read without executing them."""

    def __init__(self, path: Path, height: int) -> None:
        self.path = path
        self.height = height
        super().__init__(f"chain store {path} predates stored receipts (none for block {height}); "
                         "the node rebuilds them when it opens the chain with its content at hand")


class StoreWriteError(StoreError):
    """LevelDB refused a write batch: nothing of it was applied, and the store takes no
    further write until it is reopened (its log may end in a torn record)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"cannot write to chain store {path}: {detail}")


class StoreFull(StoreWriteError):
    """The write failed and the store's filesystem has no room for LevelDB's next write."""


def is_disk_full(path: Path) -> bool:
    """Whether ``path``'s filesystem has less free space than one memtable flush, or no free inode.

    plyvel reports LevelDB's I/O errors as text without an errno, so a failed write is
    judged by the filesystem it failed on, measured right after.
    """
    try:
        fs = os.statvfs(path)
    except OSError:
        return False
    no_inode = fs.f_files > 0 and fs.f_ffree == 0
    return fs.f_bfree * fs.f_frsize < WRITE_BUFFER_BYTES or no_inode


def write_error(path: Path, exc: Exception) -> StoreWriteError:
    """The typed error for a failed LevelDB write (or open) in ``path``."""
    cls = StoreFull if is_disk_full(path) else StoreWriteError
    return cls(path, str(exc))
