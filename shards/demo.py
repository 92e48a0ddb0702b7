"""Demo stage: tokenize OUT/manifest with the bundled tiny-f16 VQGAN on local Ray, shard, verify."""

from __future__ import annotations

from pathlib import Path

from facecorpus.shards.cli import progress_bar, table
from facecorpus.shards.tokenization import Options, tokenize
from facecorpus.shards.verify import verify
from facecorpus.shards.writer import shard

SAMPLES_PER_SHARD = 64


def run(out: Path, console, seed: int = 0) -> dict:
    manifest, cache, shards = out / "manifest", out / "cache", out / "shards"
    with progress_bar(console) as progress:
        tok = tokenize(manifest, cache, Options(vqgan="tiny-f16"), progress)
        counts = shard(manifest, cache, shards, SAMPLES_PER_SHARD, seed, progress)
        report = verify(shards, progress)
    console.print(table("tokenize", tok))
    if report["problems"]:
        raise RuntimeError(f"verify found problems in {shards}: {report['problems'][:5]}")
    return {"images": tok["unique_images"], "ledgered": tok["ledgered"], "samples": counts["samples"],
            "shards": counts["shards"], "verified": "ok"}
