"""Tiny shards for tests, written by the real writer (shards/writer.py) from hand-made records, and
ways to damage them the way a hostile or unlucky user would."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np

from facecorpus.codes import FFHQ_F16
from facecorpus.preprocess import POLICY
from facecorpus.shards import format as fmt
from facecorpus.shards import writer

# What a token cache's identity.json holds; the hashes stand for a VQGAN no test loads.
IDENTITY = {"vqgan": {"name": "test", "config_sha256": "c" * 64, "checkpoint_sha256": "d" * 64, **FFHQ_F16.as_dict()},
            "preprocess": POLICY}
CAPTIONS = ["a young woman with long blonde hair and a warm smile looking at the camera",
            "this man has a beard", "she wears eyeglasses and earrings"]
ATTRIBUTES = ["celeba gender: female; smiling: true; eyeglasses: false; bald: false",
              "fairface age: 10-19; gender: male; race: east asian", "cacd age: 25"]


def record(dataset: str, image: str, kind: str, split: str, text: str, labels: dict | None = None, n: int = 0) -> dict:
    """A manifest record (the columns the writer reads)."""
    return {"key": f"{dataset}/{image}/{kind}/{n}", "dataset": dataset, "split": split, "kind": kind,
            "image_id": f"{dataset}/{image}", "text": text, "labels": json.dumps(labels or {}, sort_keys=True)}


def codes_of(image_id: str) -> np.ndarray:
    """Fixed codes per image (crc32, not hash(): the same in every process)."""
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    return rng.integers(0, FFHQ_F16.codebook_size, FFHQ_F16.shape).astype(np.uint16)


def write_shards(root: Path, records: list[dict], samples_per_shard: int = 1000, seed: int = 0) -> Path:
    """`records` as shards + index.json under `root`, through writer.write."""
    counts = {"records": len(records), "skipped_ledgered_image": 0,
              "images": len({r["image_id"] for r in records}), "ledgered_images": 0}
    writer.write(root, [(r, codes_of(r["image_id"])) for r in records], IDENTITY, FFHQ_F16, counts,
                 samples_per_shard, seed)
    return root


def stream_shards(root: Path, counts: dict[str, int], samples_per_shard: int, split: str = "train") -> Path:
    """`counts = {"caption": 27, "attributes": 14}` records of `split` in shards of `samples_per_shard`."""
    records = []
    for kind, total in counts.items():
        texts = CAPTIONS if kind == "caption" else ATTRIBUTES
        for n in range(total):
            text = texts[n % 3]
            dataset = "celeba" if kind == "caption" else text.split()[0]
            records.append(record(dataset, f"{n:05d}", kind, split, text))
    return write_shards(root, records, samples_per_shard)


# ---------------------------------------------------------------- damage

def rewrite_tar(root: Path, rel: str, edit) -> None:
    """Rewrite shard `rel` as `edit({name: bytes})` returns it (keeping member order), and make
    index.json vouch for the new bytes: the attack of someone who can write the whole folder."""
    with tarfile.open(root / rel) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in edit(members).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / rel).write_bytes(buf.getvalue())
    edit_index(root, lambda index: _vouch(index, rel, buf.getvalue()))


def _vouch(index: dict, rel: str, data: bytes) -> None:
    for e in index["shards"]:
        if e["path"] == rel:
            e["bytes"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def edit_index(root: Path, edit) -> None:
    """Apply `edit(index_dict)` (in place) to root/index.json."""
    index = json.loads((root / fmt.INDEX).read_text())
    edit(index)
    (root / fmt.INDEX).write_text(json.dumps(index))
