"""Nothing read from a shard folder executes, and train / evaluate / verify read only what index.json
vouches for; bad shards end in one clear message (issue 10, items 1-3 and 13), through the real CLI."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner

from facecorpus.cli import main as facecorpus
from facecorpus.shards import format as fmt
from facecorpus.trainer import evaluate as ev
from facecorpus.trainer.config import RunConfig, model_preset
from facecorpus.trainer.model import Talk2Face
from shardkit import edit_index, rewrite_tar, stream_shards

TRAIN = ["--preset", "tiny", "--train.max_steps=1", "--train.batch_size=4", "--data.micro_batch=4",
         "--data.num_workers=0", "--train.precision=fp32", "--train.warmup_steps=1"]


class MakesADirectory:
    """A pickle payload: unpickling it runs os.mkdir(path)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Sound train shards: one shard per kind."""
    return stream_shards(tmp_path_factory.mktemp("clean") / "shards", {"caption": 4, "attributes": 4}, 4)


@pytest.fixture
def shards(clean, tmp_path):
    shutil.copytree(clean, tmp_path / "shards")
    return tmp_path / "shards"


def fails_cleanly(args: list[str], *named: str) -> str:
    """Run `facecorpus ARGS`: it must exit non-zero through click (not an uncaught exception), with no
    traceback, naming each of `named`."""
    r = CliRunner().invoke(facecorpus, args)
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), (r.exception, r.output)
    assert "Traceback" not in r.output
    flat = " ".join(r.output.split())   # rich and click wrap long lines
    for name in named:
        assert name in flat, (name, r.output)
    return flat


def train(shards, tmp_path, *extra: str) -> list[str]:
    return ["train", "--shards", str(shards), "--out", str(tmp_path / "run"), *TRAIN, *extra]


def first_key(shards, rel: str) -> str:
    return fmt.tar_samples((shards / rel).read_bytes(), rel)[0][0]


# ---------------------------------------------------------------- item 1: members decode by the format only

def _payload(ext: str, marker) -> bytes:
    if ext == "pth":   # webdataset's default decoder torch.loads .pth with weights_only=False
        buf = io.BytesIO()
        torch.save(MakesADirectory(marker), buf)
        return buf.getvalue()
    return pickle.dumps(MakesADirectory(marker))


def _after(members: dict, name: str, new: str, data: bytes) -> dict:
    """`members` with `new` inserted after `name`: inside its sample, as webdataset groups members."""
    out = {}
    for k, v in members.items():
        out[k] = v
        if k == name:
            out[new] = data
    return out


@pytest.mark.parametrize("ext", ["pyd", "pickle", "pkl", "pth", "mp"])
def test_an_extra_member_never_runs_and_names_shard_and_key(shards, tmp_path, ext):
    marker = tmp_path / "ran"
    rel = "train/caption-000000.tar"
    key = first_key(shards, rel)
    rewrite_tar(shards, rel, lambda m: _after(m, f"{key}.txt", f"{key}.{ext}", _payload(ext, marker)))
    where = str(shards / rel)
    fails_cleanly(train(shards, tmp_path), where, key, f"'{ext}'")
    fails_cleanly(["verify", str(shards)], where, key)
    with pytest.raises(fmt.FormatError, match=f"{key}.*members .*'{ext}'"):
        ev.read_samples(shards, "train", "caption", "celeba")
    assert not marker.exists()


# ---------------------------------------------------------------- item 2: paths stay inside the folder

@pytest.mark.parametrize("path", ["pipe:sh evil.sh", "/etc/passwd", "../outside.tar", "train/../../outside.tar",
                                  "file:train/caption-000000.tar", "train/caption-000000.tar/",
                                  "val/caption-000000.tar"])
def test_index_paths_outside_the_layout_are_refused(shards, tmp_path, monkeypatch, path):
    marker = tmp_path / "ran"
    (shards / "evil.sh").write_text(f"mkdir {marker}\n")
    (shards / "pipe:sh evil.sh").write_bytes((shards / "train/caption-000000.tar").read_bytes())
    edit_index(shards, lambda index: index["shards"][-1].update(path=path))
    monkeypatch.chdir(shards)   # `--shards .` turns `./pipe:sh evil.sh` into webdataset's `pipe:sh evil.sh`
    for args in (train(".", tmp_path), ["verify", "."]):
        fails_cleanly(args, "index.json", "shards[1]", path[:20])
    with pytest.raises(fmt.FormatError, match=r"index.json: shards\[1\]"):
        ev.read_samples(shards, "train", "caption", "celeba")
    assert not marker.exists()


def test_a_shard_listed_twice_fails_verify(shards, tmp_path):
    edit_index(shards, lambda index: index["shards"].append(dict(index["shards"][-1])))
    fails_cleanly(["verify", str(shards)], "index.json", "train/caption-000000.tar", "more than once")


def test_a_symlink_out_of_the_folder_is_refused(shards, tmp_path):
    rel = "train/caption-000000.tar"
    outside = tmp_path / "elsewhere.tar"
    shutil.move(shards / rel, outside)   # same bytes: only the link gives it away
    (shards / rel).symlink_to(outside)
    for args in (train(shards, tmp_path), ["verify", str(shards)]):
        fails_cleanly(args, rel, "leads outside the shard folder")


# ---------------------------------------------------------------- item 3: sizes and hashes

def _flip_text_byte(shards, rel: str) -> None:
    data = bytearray((shards / rel).read_bytes())
    data[data.index(b'"dataset": "celeba"') + 12] ^= 0x20   # "Celeba": a valid tar, same size, other bytes
    (shards / rel).write_bytes(bytes(data))


def test_a_changed_shard_stops_train_and_evaluate(shards, tmp_path):
    rel = "train/caption-000000.tar"
    _flip_text_byte(shards, rel)
    fails_cleanly(train(shards, tmp_path), str(shards / rel), "sha256 differs from index.json")
    with pytest.raises(fmt.FormatError, match="sha256 differs"):
        ev.read_samples(shards, "train", "caption", "celeba")
    # The hash check can be turned off for training; the size never is.
    r = CliRunner().invoke(facecorpus, train(shards, tmp_path, "--data.check_sha256=false"))
    assert r.exit_code == 0, r.output
    (shards / rel).write_bytes((shards / rel).read_bytes()[:-512])
    fails_cleanly(train(shards, tmp_path / "again", "--data.check_sha256=false"), str(shards / rel),
                  "bytes, index.json says")


# ---------------------------------------------------------------- item 13: one clear message

@pytest.mark.parametrize("damage, says", [
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text('{"format": "facecorpus-shards/2", '), "is not valid JSON"),
    (lambda p: p.write_bytes(b"\xff\xfe{}"), "is not valid JSON"),
    (lambda p: p.write_text("[1, 2]"), "is a JSON array, expected a JSON object"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": "facecorpus-shards/1"})),
     "re-shard with `facecorpus shard`"),
    (lambda p: edit_index(p.parent, lambda i: i["shards"][0].pop("sha256")), "shards[0] lacks ['sha256']"),
    (lambda p: edit_index(p.parent, lambda i: i["shards"][0].update(sha256="c")), "sha256 'c' is not 64 hex"),
    (lambda p: edit_index(p.parent, lambda i: i.update(shards={"a": 1})),
     "shards is a JSON object, expected a JSON array"),
])
def test_a_bad_index_is_one_clear_message(shards, tmp_path, damage, says):
    damage(shards / "index.json")
    for args in (train(shards, tmp_path), ["verify", str(shards)]):
        fails_cleanly(args, str(shards / "index.json"), says)


def test_a_corrupt_txt_in_train_names_shard_and_key_even_from_a_worker(shards, tmp_path):
    rel = "train/attributes-000000.tar"
    key = first_key(shards, rel)
    rewrite_tar(shards, rel, lambda m: {**m, f"{key}.txt": b"celeba gender: \xff\xfe"})
    fails_cleanly(train(shards, tmp_path, "--data.num_workers=2"), str(shards / rel), key, "txt is not UTF-8")


def test_a_truncated_test_shard_in_evaluate(tmp_path):
    from facecorpus.codes import FFHQ_F16
    from shardkit import record, write_shards

    shards = write_shards(tmp_path / "shards", [record("cacd", f"c{i}", "attributes", "test", f"cacd age: {20 + i}",
                                                       {"age": 20 + i}) for i in range(3)])
    step = tmp_path / "run" / "step-00000001"
    step.mkdir(parents=True)
    torch.save(Talk2Face(model_preset("tiny", FFHQ_F16)).state_dict(), step / "model.pt")
    (step / "config.json").write_text(RunConfig.from_preset("tiny").to_json())
    rel = "test/attributes-000000.tar"
    (shards / rel).write_bytes((shards / rel).read_bytes()[:1500])
    fails_cleanly(["evaluate", str(tmp_path / "run"), "--shards", str(shards), "--task", "age",
                   "--out", str(tmp_path / "eval")], str(shards / rel), "1500 bytes, index.json says")

