"""`SHARDS/index.json`: what the shards hold and what made them. Written last; readers trust it.

Top-level keys (a contract: the trainer and the reports read them):
format, seed, samples_per_shard, preprocess, vqgan, text_vocab, shards, counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from facecorpus.shards.cache import write_atomic

from facecorpus.vocab import VOCAB_SHA256

FORMAT = "facecorpus-shards/1"
INDEX = "index.json"
KEYS = ("format", "seed", "samples_per_shard", "preprocess", "vqgan", "text_vocab", "shards", "counts")
VQGAN_KEYS = ("name", "config_sha256", "checkpoint_sha256", "codebook_size", "grid", "resolution")


class IndexError_(ValueError):
    """An index.json that is missing or breaks the format; the message names the file and key."""


def build(seed: int, samples_per_shard: int, preprocess: dict, vqgan: dict, shards: list[dict], counts: dict) -> dict:
    return {"format": FORMAT, "seed": seed, "samples_per_shard": samples_per_shard, "preprocess": preprocess,
            "vqgan": {k: vqgan[k] for k in VQGAN_KEYS},
            "text_vocab": {"name": "bert-base-uncased", "sha256": VOCAB_SHA256},
            "shards": shards, "counts": counts}


def write(out: Path, index: dict) -> Path:
    path = Path(out) / INDEX
    write_atomic(path, (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode())
    return path


def read(shards: Path) -> dict:
    """index.json, checked for the format and every top-level key."""
    path = Path(shards) / INDEX
    if not path.is_file():
        raise IndexError_(f"{path} is missing: `facecorpus shard` writes it last, so the shards are "
                          "incomplete or this is not a shard folder")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise IndexError_(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in KEYS if k not in index]
    if missing:
        raise IndexError_(f"{path}: missing keys {missing}")
    return index


def check_identity(index: dict, vqgan: dict | None = None, vocab_sha256: str = VOCAB_SHA256) -> None:
    """Raise if the shards were made with another VQGAN or text vocabulary than the caller's
    (a model trained on one VQGAN's codes decodes garbage through another's)."""
    if index["text_vocab"]["sha256"] != vocab_sha256:
        raise IndexError_(f"shards use text vocabulary {index['text_vocab']}, expected sha256 {vocab_sha256}")
    if vqgan is not None:
        diff = [k for k in ("config_sha256", "checkpoint_sha256") if index["vqgan"][k] != vqgan[k]]
        if diff:
            raise IndexError_(f"shards were tokenized with VQGAN {index['vqgan']}, not {vqgan} (differs in {diff})")
