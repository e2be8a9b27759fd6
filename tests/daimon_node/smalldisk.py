"""A small filesystem for disk-full tests: a tmpfs over one directory, and a balloon file.

Root mounts the tmpfs directly. Anyone else gets it inside a user + mount namespace
(``unshare -rm``) kept alive by a holder process: the mount is visible only there, so
every process that must see it (a node, the balloon writer, a copy in or out) runs
under ``SmallDisk.prefix`` (``nsenter`` into the holder's namespaces; empty for root).
Where neither works, ``SmallDisk.mount`` raises ``NoSmallDisk`` with one sentence why.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

BALLOON = ".balloon"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def fill_to_the_brim(path: Path | str) -> int:
    """Write ``path`` until the filesystem refuses, in 64 KiB chunks and then byte by
    byte (tmpfs hands out whole pages), so not one free byte is left; bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as balloon:
        for size in (1 << 16, 1):
            while True:
                try:
                    written += balloon.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def python_here(code: str) -> list[str]:
    """argv running ``code`` with this directory and the repository importable."""
    return [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(REPO)!r}]\n" + code]


class NoSmallDisk(RuntimeError):
    """Neither a tmpfs mount nor a user + mount namespace is allowed here."""


class SmallDisk:
    """A tmpfs of ``size_bytes`` over ``directory`` (whose files are copied onto it)."""

    def __init__(self, directory: Path, size_bytes: int) -> None:
        self.directory = Path(directory)
        self.size_bytes = size_bytes
        self.prefix: list[str] = []
        self._holder: subprocess.Popen[bytes] | None = None
        self._mounted = False

    def mount(self) -> "SmallDisk":
        staged = self.directory.with_name(self.directory.name + ".staged")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.rename(staged)
        self.directory.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={self.size_bytes}", "tmpfs", str(self.directory)]
        try:
            if os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0:
                self._mounted = True
            else:
                self._enter_namespace(mount)
            self.run(["cp", "-a", f"{staged}/.", str(self.directory)])
        except BaseException:
            self.unmount()
            raise
        shutil.rmtree(staged)
        return self

    def _enter_namespace(self, mount: list[str]) -> None:
        if shutil.which("unshare") is None or shutil.which("nsenter") is None:
            raise NoSmallDisk("mount is not permitted and unshare/nsenter are not installed")
        self._holder = subprocess.Popen(["unshare", "-rm", "--propagation", "private", "sleep", "infinity"])
        self.prefix = ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(self._holder.pid)]
        deadline = time.monotonic() + 10  # the holder only has to exec unshare and sleep
        while subprocess.run(self.prefix + mount, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self._holder.poll() is not None:
                self.unmount()
                raise NoSmallDisk("neither mount nor a user namespace (unshare -rm) is permitted here")
            time.sleep(0.1)
        self._mounted = True

    def run(self, argv: list[str], timeout: float = 60) -> str:
        """Run ``argv`` where the small disk is visible; its stdout."""
        done = subprocess.run(self.prefix + argv, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def fill(self) -> int:
        """Write the balloon until the disk is full to the last page; bytes written."""
        path = str(self.directory / BALLOON)
        return int(self.run(python_here(f"from smalldisk import fill_to_the_brim; print(fill_to_the_brim({path!r}))")))

    def drain(self) -> None:
        """Space returns: delete the balloon."""
        self.run(["rm", "-f", str(self.directory / BALLOON)])

    def copy_out(self, destination: Path) -> None:
        """Copy the disk's files (without the balloon) to ``destination``, e.g. to read them from here."""
        destination.mkdir(parents=True, exist_ok=True)
        self.run(["cp", "-a", f"{self.directory}/.", str(destination)])
        (destination / BALLOON).unlink(missing_ok=True)

    def unmount(self) -> None:
        if self._mounted and self._holder is None:
            subprocess.run(["umount", "-l", str(self.directory)], capture_output=True)
        if self._holder is not None:  # the namespace, and its mount, end with the holder
            self._holder.kill()
            self._holder.wait(timeout=10)
            self._holder = None
        self._mounted = False

    def __enter__(self) -> "SmallDisk":
        return self.mount()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.unmount()
