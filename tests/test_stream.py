"""The trainer's batches from shards: index checks, four balanced tasks (or a chosen mix), exact positions,
uneven shards."""

from __future__ import annotations

import pytest
import torch

from facecorpus.shards import format as fmt
from facecorpus.trainer import batches as stream
from facecorpus.trainer.sequences import TASKS
from shardkit import edit_index, stream_shards


def spec(root, **kw) -> stream.StreamSpec:
    base = {"shards": str(root), "split": "train", "seq_len": 334, "width": 336, "micro_batch": 8,
            "num_workers": 0, "shuffle_shards": 2, "loss_on": "target", "seed": 0}
    return stream.StreamSpec(**{**base, **kw})


def batches(sp, n):
    it = iter(stream.BalancedStream(sp))
    return [next(it) for _ in range(n)]


def test_refuses_foreign_vocabulary(tmp_path):
    root = stream_shards(tmp_path, {"caption": 2, "attributes": 2}, 2)
    edit_index(root, lambda index: index["text_vocab"].update(sha256="f" * 64))
    with pytest.raises(fmt.FormatError, match=r"index.json: shards were tokenized with text vocabulary sha256 'f{64}'"):
        stream.training_index(root, "train")


def test_refuses_missing_kind_and_wrong_count(tmp_path):
    root = stream_shards(tmp_path / "a", {"caption": 2}, 2)
    with pytest.raises(fmt.FormatError, match="has no attributes samples"):
        stream.training_index(root, "train")
    root = stream_shards(tmp_path / "b", {"caption": 3, "attributes": 2}, 3)
    edit_index(root, lambda index: index["shards"][-1].update(count=4))
    with pytest.raises(fmt.FormatError, match=r"caption-000000.tar: 3 samples, index.json says 4"):
        batches(spec(root), 1)


def test_balance_over_1000_batches(tmp_path):
    # Uneven shards (13, 13, 1 captions; 13, 1 attributes); the global batch is the micro-batch here
    # (one process, no accumulation).
    root = stream_shards(tmp_path, {"caption": 27, "attributes": 14}, 13)
    it = iter(stream.BalancedStream(spec(root, micro_batch=4)))
    for _ in range(1000):
        b = next(it)
        assert torch.bincount(b["task"], minlength=len(TASKS)).tolist() == [1, 1, 1, 1]


def test_resume_position_is_exact(tmp_path):
    root = stream_shards(tmp_path, {"caption": 8, "attributes": 9}, 4)
    straight = batches(spec(root), 7)
    resumed = batches(spec(root, start_batch=4), 3)
    for a, b in zip(straight[4:], resumed):
        assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["targets"], b["targets"])


def test_a_task_mix_gives_each_task_its_share_and_resumes_exactly(tmp_path):
    # The demo's mix: to-attributes twice, to-image from attributes and to-caption once; no caption->face.
    root = stream_shards(tmp_path, {"caption": 8, "attributes": 9}, 4)
    mix = ("face2attributes", "face2attributes", "attributes2face", "face2caption")
    straight = batches(spec(root, tasks=mix), 7)
    for b in straight:
        assert torch.bincount(b["task"], minlength=len(TASKS)).tolist() == [2, 0, 4, 2]
    resumed = batches(spec(root, tasks=mix, start_batch=4), 3)
    for a, b in zip(straight[4:], resumed):
        assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["targets"], b["targets"])


def test_attribute_tasks_alone_need_no_caption_samples(tmp_path):
    root = stream_shards(tmp_path, {"attributes": 5}, 5)
    (b,) = batches(spec(root, tasks=("face2attributes",), micro_batch=4), 1)
    assert b["task"].tolist() == [TASKS.index("face2attributes")] * 4
    with pytest.raises(fmt.FormatError, match="has no caption samples; the tasks face2caption, face2attributes read"):
        batches(spec(root, tasks=("face2caption", "face2attributes")), 1)


def test_worker_relabelling_continues_round_robin():
    # 3 workers, 7 batches consumed: batch 7 comes from logical worker 1, which made batches 1 and 4.
    W, P = 3, 7
    firsts = {stream.worker_start(P, w, W) for w in range(W)}
    assert stream.worker_start(P, 0, W) == (1, 2)
    assert {first + W * j for first, j in firsts} == {7, 8, 9}


def take(sp, n):
    loader = iter(stream.make_loader(stream.BalancedStream(sp)))
    out = [next(loader) for _ in range(n)]
    del loader   # shuts the worker processes down
    return out


def test_resume_with_workers_continues_the_same_order(tmp_path):
    root = stream_shards(tmp_path, {"caption": 10, "attributes": 11}, 4)
    full = take(spec(root, num_workers=2), 5)
    later = take(spec(root, num_workers=2, start_batch=3), 2)
    assert torch.equal(full[3]["ids"], later[0]["ids"]) and torch.equal(full[4]["ids"], later[1]["ids"])
    assert not torch.equal(full[0]["ids"], full[1]["ids"])   # the two workers read different samples


@pytest.mark.parametrize("rank", [0, 1])
def test_fewer_shards_than_readers_never_starve_a_rank(tmp_path, rank):
    # One caption shard for two ranks: sliced naively, rank 1 would get none and spin forever.
    root = stream_shards(tmp_path, {"caption": 3, "attributes": 5}, 3)
    b = batches(spec(root, rank=rank, world=2, micro_batch=4), 3)
    assert all(torch.bincount(x["task"], minlength=4).tolist() == [1, 1, 1, 1] for x in b)
