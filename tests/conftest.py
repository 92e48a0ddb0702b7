"""Shared test fixtures: the real raw files beside the checkout, when present."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SHARED_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "raw"


@pytest.fixture
def shared_raw() -> Path:
    """`../shared/raw` (real annotation files); tests using it skip on a user's clone without it."""
    if not SHARED_RAW.is_dir():
        pytest.skip(f"{SHARED_RAW} is absent: the real annotation files ship only beside the project's checkout")
    return SHARED_RAW


@pytest.fixture
def sample(tmp_path, request) -> tuple[Path, dict]:
    """(raw folder, what a correct conversion gives) of the test module's dataset (its NAME), written
    by facecorpus.converters.samples.<NAME> in the dataset's real layout."""
    name = request.module.NAME
    raw = tmp_path / name
    return raw, importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)


@pytest.fixture
def one_thread():
    """Token-by-token decoding of a tiny model is latency-bound: a second intra-op thread only spins,
    and on a busy 2-core machine makes each step ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
