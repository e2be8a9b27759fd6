"""Typed errors of the DEL library (no dependency on the node's error module).

The CLI wraps them in ``daimon_node`` errors, so a user sees one clear line.
"""

from __future__ import annotations


class DELError(Exception):
    """Base of every error the DEL library raises on bad user input."""


class LabelFileError(DELError, ValueError):
    """A label file is missing, unreadable or not a 1-D integer vector."""


class ArtifactError(DELError, ValueError):
    """A DEL artifact directory or file is missing or malformed."""
