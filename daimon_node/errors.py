"""Errors a user of the CLI or RPC can hit; each carries one clear message."""

from __future__ import annotations


class DaimonError(Exception):
    """Base of every user-facing error; the CLI prints ``str(err)`` and exits 1."""


class DataDirError(DaimonError):
    """The data directory is missing, unreadable or already initialised."""


class ConfigError(DaimonError):
    """A config file or flag has a bad value."""
