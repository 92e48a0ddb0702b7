"""The streaming reader: index checks, four balanced tasks, exact positions, uneven shards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from facecorpus.shards import stream
from facecorpus.trainer.sequences import TASKS

from facecorpus import vocab

CAPTIONS = ["a young woman with long blonde hair and a warm smile looking at the camera",
            "this man has a beard", "she wears eyeglasses and earrings"]
ATTRIBUTES = ["celeba gender: female; smiling: true; eyeglasses: false; bald: false",
              "fairface age: 10-19; gender: male; race: east asian", "cacd age: 25"]


def write_shards(root: Path, counts: dict[str, list[int]], seed: int = 0, split: str = "train") -> Path:
    """Tiny shards in the documented layout: `counts = {"caption": [5, 3], "attributes": [4]}`."""
    rng = np.random.default_rng(seed)
    entries, n = [], 0
    for kind, sizes in counts.items():
        texts = CAPTIONS if kind == "caption" else ATTRIBUTES
        for s, size in enumerate(sizes):
            rel = f"{split}/{kind}-{s:06d}.tar"
            (root / split).mkdir(parents=True, exist_ok=True)
            with open(root / rel, "wb") as f, wds.TarWriter(f, mtime=0) as w:
                for _ in range(size):
                    key = f"demo-{n:05d}-{kind}-0"
                    dataset = "celeba" if kind == "caption" else texts[n % 3].split()[0]
                    meta = {"key": key.replace("-", "/"), "dataset": dataset, "split": split, "kind": kind,
                            "image_id": f"demo/{n}", "labels": {}}
                    w.write({"__key__": key, "npy": rng.integers(0, 1024, (16, 16)).astype(np.uint16),
                             "txt": texts[n % 3], "json": meta})
                    n += 1
            data = (root / rel).read_bytes()
            entries.append({"path": rel, "split": split, "kind": kind, "count": size, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
    index = {"format": "facecorpus-shards/1", "seed": seed, "samples_per_shard": max(max(c) for c in counts.values()),
             "preprocess": {"policy": "test"}, "vqgan": {"name": "test", "config_sha256": "0", "checkpoint_sha256": "0"},
             "text_vocab": {"name": "bert-base-uncased", "sha256": vocab.VOCAB_SHA256},
             "shards": entries, "counts": {}}
    (root / "index.json").write_text(json.dumps(index))
    return root


def spec(root, **kw) -> stream.StreamSpec:
    base = {"shards": str(root), "split": "train", "seq_len": 334, "width": 336, "micro_batch": 8,
            "num_workers": 0, "shuffle_shards": 2, "loss_on": "target", "seed": 0}
    return stream.StreamSpec(**{**base, **kw})


def batches(sp, n):
    it = iter(stream.BalancedStream(sp))
    return [next(it) for _ in range(n)]


def test_refuses_foreign_vocabulary(tmp_path):
    root = write_shards(tmp_path, {"caption": [2], "attributes": [2]})
    index = json.loads((root / "index.json").read_text())
    index["text_vocab"]["sha256"] = "f" * 64
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"index.json: shards were tokenized with text vocabulary sha256 f{64}"):
        stream.load_index(root)


def test_refuses_missing_kind_and_wrong_count(tmp_path):
    root = write_shards(tmp_path / "a", {"caption": [2]})
    with pytest.raises(ValueError, match="has no attributes samples"):
        stream.load_index(root)
    root = write_shards(tmp_path / "b", {"caption": [3], "attributes": [2]})
    index = json.loads((root / "index.json").read_text())
    index["shards"][0]["count"] = 4
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"caption-000000.tar: 3 samples, index.json says 4"):
        batches(spec(root), 1)


def test_balance_over_1000_batches(tmp_path):
    # Uneven and empty shards; the global batch is the micro-batch here (one process, no accumulation).
    root = write_shards(tmp_path, {"caption": [20, 7, 0], "attributes": [13, 1]})
    it = iter(stream.BalancedStream(spec(root, micro_batch=4)))
    for _ in range(1000):
        b = next(it)
        assert torch.bincount(b["task"], minlength=len(TASKS)).tolist() == [1, 1, 1, 1]


def test_resume_position_is_exact(tmp_path):
    root = write_shards(tmp_path, {"caption": [5, 3], "attributes": [4, 2, 3]})
    straight = batches(spec(root), 7)
    resumed = batches(spec(root, start_batch=4), 3)
    for a, b in zip(straight[4:], resumed):
        assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["targets"], b["targets"])


def test_worker_relabelling_continues_round_robin():
    # 3 workers, 7 batches consumed: batch 7 comes from logical worker 1, which made batches 1 and 4.
    W, P = 3, 7
    firsts = {stream.worker_start(P, w, W) for w in range(W)}
    assert stream.worker_start(P, 0, W) == (1, 2)
    assert {l + W * j for l, j in firsts} == {7, 8, 9}


def take(sp, n):
    loader = iter(stream.make_loader(sp))
    out = [next(loader) for _ in range(n)]
    del loader   # shuts the worker processes down
    return out


def test_resume_with_workers_continues_the_same_order(tmp_path):
    root = write_shards(tmp_path, {"caption": [4, 4, 2], "attributes": [4, 4, 3]})
    full = take(spec(root, num_workers=2), 5)
    later = take(spec(root, num_workers=2, start_batch=3), 2)
    assert torch.equal(full[3]["ids"], later[0]["ids"]) and torch.equal(full[4]["ids"], later[1]["ids"])
    assert not torch.equal(full[0]["ids"], full[1]["ids"])   # the two workers read different samples


@pytest.mark.parametrize("rank", [0, 1])
def test_empty_shards_never_starve_a_rank(tmp_path, rank):
    # Sliced naively, rank 1 would get only the empty caption shard and spin forever.
    root = write_shards(tmp_path, {"caption": [5, 0], "attributes": [3, 2]})
    b = batches(spec(root, rank=rank, world=2, micro_batch=4), 3)
    assert all(torch.bincount(x["task"], minlength=4).tolist() == [1, 1, 1, 1] for x in b)
