"""Make the node-process helpers of ``tests/daimon_node`` (``netutil``) importable here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daimon_node"))
