"""Attacks on the protocol (issue 14): each test builds the honest chain with the chain tests'
factories, runs the attacker, and checks the attacker gains nothing and the honest party
loses nothing, and that the honest flow still works."""

from __future__ import annotations

import sys
from pathlib import Path

here = Path(__file__).parent
sys.path.insert(0, str(here.parent / "chain"))  # factories
sys.path.insert(0, str(here))  # adversary
