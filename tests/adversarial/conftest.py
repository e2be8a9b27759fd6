"""Adversarial tests: each builds the honest chain, runs one attack, and checks balances.

They reuse the chain tests' factories (``tests/chain/factories.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "chain"))  # make ``factories`` importable
