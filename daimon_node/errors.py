"""Errors a user of the CLI or RPC can hit; each carries one clear message."""

from __future__ import annotations


class DaimonError(Exception):
    """Base of every user-facing error; the CLI prints ``str(err)`` and exits 1."""


class DataDirError(DaimonError):
    """The data directory is missing, unreadable or already initialised."""


class ConfigError(DaimonError):
    """A config file or flag has a bad value."""


class StorageFailure(DaimonError):
    """A write to the data directory failed. The node stops: it cannot keep a chain it
    cannot extend, and a restart reopens the store at its last whole block."""

    def __init__(self, directory: object, detail: str) -> None:
        self.directory = directory
        self.detail = detail
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"cannot write to {self.directory}: {self.detail}; stopping"


class DiskFull(StorageFailure):
    """The data directory's filesystem is full; the node stops until space returns."""

    def describe(self) -> str:
        return f"disk full: cannot write to {self.directory}; stopping"
