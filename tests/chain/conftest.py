"""Shared fixtures for the chain consensus tests (helpers live in ``factories.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make ``factories`` importable in any import mode

from factories import new_devnet  # noqa: E402


@pytest.fixture
def devnet():
    """A devnet with its problem block and the validators' bonds applied."""
    return new_devnet()


@pytest.fixture
def season_devnet():
    """A devnet whose problem has a sealed holdout (seasons of 4 periods, window 2)."""
    return new_devnet(holdout_m=50)
