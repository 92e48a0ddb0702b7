"""Shared test fixtures: the real raw files beside the checkout, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "raw"


@pytest.fixture
def shared_raw() -> Path:
    """`../shared/raw` (real annotation files); tests using it skip on a user's clone without it."""
    if not SHARED_RAW.is_dir():
        pytest.skip(f"{SHARED_RAW} is absent: the real annotation files ship only beside the project's checkout")
    return SHARED_RAW
