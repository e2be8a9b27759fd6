"""Adversarial tests reuse the chain factories (``tests/chain/factories.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "chain"))  # make ``factories`` importable
