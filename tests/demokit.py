"""The demo's OUT folder at test scale, shared by the tests of the demo's stages and of the few-shot
protocol: its sample raw trees converted, tokenized by the bundled tiny-f16, sharded."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from facecorpus.converters import demo as convert_demo
from facecorpus.shards.demo import SAMPLES_PER_SHARD
from facecorpus.shards.writer import shard
from tokenkit import tokenize_in_process


def demo_out(out: Path, celeba_images: int = 40, seed: int = 0) -> Path:
    """OUT/raw, manifest, cache and shards as `facecorpus demo` writes them, with `celeba_images`
    CelebA images instead of the demo's 2,000 (CPU encoding is the cost) and tokenized in this
    process rather than on Ray: the same plan, preprocessing and cache."""
    convert_demo.run(out, Console(file=io.StringIO()), seed=seed, celeba_images=celeba_images)
    tokenize_in_process(out / "manifest", out / "cache")
    shard(out / "manifest", out / "cache", out / "shards", SAMPLES_PER_SHARD, seed)
    return out
