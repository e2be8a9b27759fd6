"""On-disk content store: files named by the hex SHA-256 of their bytes, with pins.

Layout under ``root``::

    objects/<hex id>     complete, hash-checked content (read-only once written)
    tmp/                 partial downloads and writes in progress
    pins.json            {"<hex id>": "<reason>", ...}, replaced atomically

Every write goes to ``tmp/`` first and is renamed into ``objects/`` only after its
hash matched, so a crash never leaves a wrong or half file under an id. Pins record
what the chain needs to stay verifiable (paper §VIII) and survive restarts;
``delete`` and ``collect_garbage`` never remove a pinned object.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from p2p.errors import ContentHashMismatch, ContentNotFound, ContentPinned, ContentStoreFull, ContentTooLarge

ID_LEN = 32
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per writev (Linux: 1024)
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16  # the POSIX minimum
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def _disk_writes(root: Path) -> Iterator[None]:
    """A write that finds the filesystem full raises ``ContentStoreFull``: the node must
    tell a full disk (stop) from a peer's bad bytes (try another)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise ContentStoreFull(root, os.strerror(exc.errno)) from exc
        raise


def content_id(data: bytes) -> bytes:
    """The id of ``data``: its SHA-256."""
    return hashlib.sha256(data).digest()


def _check_id(cid: bytes) -> str:
    if not isinstance(cid, bytes) or len(cid) != ID_LEN:
        raise ValueError(f"content id must be {ID_LEN} bytes")
    return cid.hex()


class PartialWrite:
    """A content object being received: temp file plus running hash.

    Resumable: ``offset`` says how many bytes are in; a download that broke off can
    continue from there with another peer, the hash state carries over.

    With ``sync_every`` set, each time that many more bytes are in, a background
    thread flushes the file's data to disk (``fdatasync``; at most one at a time,
    writes go on meanwhile). That only moves the disk work of the final ``fsync``
    into the transfer, so a slow disk neither stalls the writes nor adds its whole
    latency at the end; ``commit`` still waits for it and fsyncs before the rename,
    and nothing is visible under the id before then.
    """

    def __init__(self, store: "ContentStore", cid: bytes, max_bytes: int, sync_every: int | None = None) -> None:
        self.store = store
        self.cid = cid
        self.max_bytes = max_bytes
        self.sync_every = sync_every
        with _disk_writes(store.root):
            fd, name = tempfile.mkstemp(prefix=cid.hex()[:16] + ".", suffix=".part", dir=store.tmp_dir)
        self.path = Path(name)
        self._fd: int | None = fd
        self._hash = hashlib.sha256()
        self.offset = 0
        self._synced = 0
        self._lock = threading.Condition()
        self._syncing = False  # a background fdatasync is running
        self._close_after_sync = False  # abort came while it ran: it closes the fd
        self._sync_error: OSError | None = None

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; refuses to grow past ``max_bytes``."""
        self.write_parts([chunk])

    def write_parts(self, parts: Sequence[bytes]) -> None:
        """Append ``parts`` in order with one ``writev``; refuses to grow past ``max_bytes``.

        Nothing is written if the parts together would pass the cap.
        """
        total = sum(len(p) for p in parts)
        if self.offset + total > self.max_bytes:
            raise ContentTooLarge(self.offset + total, self.max_bytes)
        if self._fd is None:
            raise ValueError("write to a closed partial")
        views = [memoryview(p) for p in parts if len(p)]
        i = 0
        while i < len(views):  # writev may write less than asked (signal, full disk): go on after it
            with _disk_writes(self.store.root):
                done = os.writev(self._fd, views[i:i + _IOV_MAX])
            while i < len(views) and done >= len(views[i]):
                done -= len(views[i])
                i += 1
            if done:
                views[i] = views[i][done:]
        for p in parts:
            self._hash.update(p)
        self.offset += total
        if self.sync_every is not None and self.offset - self._synced >= self.sync_every:
            with self._lock:
                start = not self._syncing
                self._syncing = self._syncing or start
            if start:
                self._synced = self.offset
                threading.Thread(target=self._background_sync, args=(self._fd,), daemon=True).start()

    def _background_sync(self, fd: int) -> None:
        try:
            _fdatasync(fd)
        except OSError as exc:
            # Linux reports a write-back error to one fsync per file: keep it for commit.
            self._sync_error = exc
        with self._lock:
            self._syncing = False
            if self._close_after_sync:
                os.close(fd)
            self._lock.notify_all()

    def commit(self) -> Path:
        """Check the hash, fsync, and move the file into ``objects/``; returns its final path."""
        if self._hash.digest() != self.cid:
            self.abort()
            raise ContentHashMismatch(f"received {self.offset} bytes that do not hash to {self.cid.hex()}")
        assert self._fd is not None
        with self._lock:
            self._lock.wait_for(lambda: not self._syncing)
        try:
            with _disk_writes(self.store.root):
                if self._sync_error is not None:
                    raise self._sync_error
                os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = None
        final = self.store.path(self.cid)
        os.replace(self.path, final)
        return final

    def abort(self) -> None:
        """Drop the partial file (never blocks on a data sync in flight: that closes the file)."""
        with self._lock:
            if self._fd is not None:
                if self._syncing:
                    self._close_after_sync = True
                else:
                    os.close(self._fd)
                self._fd = None
        self.path.unlink(missing_ok=True)


class ContentStore:
    """A directory of content-addressed files, with pinning and a total-size cap."""

    def __init__(self, root: Path | str, max_total_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.pins_path = self.root / "pins.json"
        self.max_total_bytes = max_total_bytes
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.iterdir():  # left by a crash; never valid content
            stale.unlink(missing_ok=True)
        self._pins: dict[str, str] = self._load_pins()

    # -- reading ----------------------------------------------------------
    def path(self, cid: bytes) -> Path:
        """Where object ``cid`` lives (whether or not it exists)."""
        return self.objects_dir / _check_id(cid)

    def has(self, cid: bytes) -> bool:
        return self.path(cid).is_file()

    def size(self, cid: bytes) -> int:
        """Size in bytes of a stored object."""
        try:
            return self.path(cid).stat().st_size
        except FileNotFoundError as exc:
            raise ContentNotFound(cid.hex()) from exc

    def get(self, cid: bytes, max_bytes: int | None = None) -> bytes:
        """The whole object in memory (for small objects; large ones: ``open``)."""
        size = self.size(cid)
        if max_bytes is not None and size > max_bytes:
            raise ContentTooLarge(size, max_bytes)
        return self.path(cid).read_bytes()

    def open(self, cid: bytes) -> BinaryIO:
        """Open a stored object for reading."""
        try:
            return open(self.path(cid), "rb")
        except FileNotFoundError as exc:
            raise ContentNotFound(cid.hex()) from exc

    def ids(self) -> Iterator[bytes]:
        """Ids of all stored objects."""
        for p in self.objects_dir.iterdir():
            if len(p.name) == 2 * ID_LEN:
                yield bytes.fromhex(p.name)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.objects_dir.iterdir())

    def verify(self, cid: bytes) -> bool:
        """Re-hash a stored object (detects disk corruption)."""
        h = hashlib.sha256()
        with self.open(cid) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.digest() == cid

    # -- writing ----------------------------------------------------------
    def put(self, data: bytes) -> bytes:
        """Store ``data``; returns its id (idempotent)."""
        cid = content_id(data)
        if not self.has(cid):
            self._reserve(len(data))
            w = PartialWrite(self, cid, len(data))
            try:
                w.write(data)
                w.commit()
            except BaseException:
                w.abort()
                raise
        return cid

    def put_file(self, src: Path | str) -> bytes:
        """Copy a file into the store, hashing as it goes; returns its id."""
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        cid = h.digest()
        if not self.has(cid):
            size = Path(src).stat().st_size
            self._reserve(size)
            w = PartialWrite(self, cid, size)
            try:
                with open(src, "rb") as f:
                    while chunk := f.read(1 << 20):
                        w.write(chunk)
                w.commit()
            except BaseException:
                w.abort()
                raise
        return cid

    def begin(self, cid: bytes, max_bytes: int, sync_every: int | None = None) -> PartialWrite:
        """Start receiving object ``cid`` of at most ``max_bytes`` (see ``PartialWrite``)."""
        _check_id(cid)
        self._reserve(max_bytes)
        return PartialWrite(self, cid, max_bytes, sync_every)

    def _reserve(self, size: int) -> None:
        if self.max_total_bytes is not None and self.total_bytes() + size > self.max_total_bytes:
            raise ContentTooLarge(self.total_bytes() + size, self.max_total_bytes)

    def delete(self, cid: bytes) -> None:
        """Remove an unpinned object."""
        if cid.hex() in self._pins:
            raise ContentPinned(f"{cid.hex()} is pinned ({self._pins[cid.hex()]})")
        self.path(cid).unlink(missing_ok=True)

    def collect_garbage(self) -> int:
        """Delete every unpinned object; returns bytes freed."""
        freed = 0
        for cid in list(self.ids()):
            if cid.hex() not in self._pins:
                freed += self.size(cid)
                self.path(cid).unlink(missing_ok=True)
        return freed

    # -- pins -------------------------------------------------------------
    def pin(self, cid: bytes, reason: str = "") -> None:
        """Keep ``cid`` (it need not be present yet: pinning first, fetching after is fine).

        Pinning again for the same reason writes nothing (the node re-pins after every block).
        """
        key = _check_id(cid)
        if self._pins.get(key) == reason:
            return
        self._pins[key] = reason
        self._save_pins()

    def unpin(self, cid: bytes) -> None:
        if self._pins.pop(_check_id(cid), None) is not None:
            self._save_pins()

    def is_pinned(self, cid: bytes) -> bool:
        return _check_id(cid) in self._pins

    def pins(self) -> dict[bytes, str]:
        return {bytes.fromhex(k): v for k, v in self._pins.items()}

    def _load_pins(self) -> dict[str, str]:
        try:
            raw = json.loads(self.pins_path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(raw, dict):
            raise ValueError(f"{self.pins_path} is not a JSON object")
        return {str(k): str(v) for k, v in raw.items()}

    def _save_pins(self) -> None:
        with _disk_writes(self.root):
            fd, name = tempfile.mkstemp(prefix="pins.", dir=self.tmp_dir)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(self._pins, f, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            os.replace(name, self.pins_path)
