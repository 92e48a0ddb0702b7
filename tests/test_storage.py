"""Object storage: folders given as s3:// URIs, staged through facecorpus.storage and published by
facecorpus.atomic (each object whole, the commit object last), against a real S3 server on loopback
(moto) that the tests start themselves; the whole pipeline on s3:// gives the local run's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

import s3kit
from facecorpus import atomic, manifest, storage
from facecorpus.cli import main
from facecorpus.converters.samples import celeba as celeba_sample
from facecorpus.converters.samples import img2dataset as web_sample
from s3kit import BUCKET, objects


@pytest.fixture(scope="module")
def s3():
    with s3kit.s3_server() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def fresh_staging():
    yield
    storage.forget()


def test_local_paths_and_file_uris_are_used_in_place(tmp_path):
    assert storage.fetched(tmp_path) == tmp_path
    assert storage.fetched(f"file://{tmp_path}") == tmp_path
    with storage.staged(tmp_path / "out", last=("index.json",)) as out:
        assert out == tmp_path / "out"
    assert storage._scratch is None     # nothing staged, nothing copied
    assert not storage.is_remote("/a/b") and not storage.is_remote("file:///a") and storage.is_remote("s3://b/k")


def test_a_folder_is_published_object_by_object_with_its_commit_object_last(s3, monkeypatch):
    written = []
    copy = pafs.copy_files
    monkeypatch.setattr(atomic.pafs, "copy_files",
                        lambda src, dst, **kw: (written.append(dst), copy(src, dst, **kw))[1])
    uploaded = lambda: [w.split("/pub/")[1] for w in written if w.startswith(f"{BUCKET}/")]  # noqa: E731
    with storage.staged(f"s3://{BUCKET}/pub", first=("identity.json",), last=("index.json",)) as out:
        (out / "index.json").write_text("{}")
        (out / "a").mkdir()
        (out / "a" / "x.tar").write_bytes(b"x" * 100)
        (out / "identity.json").write_text("id")
        (out / "z.tar").write_bytes(b"z")
        (out / "half.tar.tmp").write_bytes(b"a killed writer's leftover")
    assert uploaded() == ["identity.json", "a/x.tar", "z.tar", "index.json"]
    assert objects(prefix="pub/") == {"pub/identity.json": b"id", "pub/a/x.tar": b"x" * 100, "pub/z.tar": b"z",
                                      "pub/index.json": b"{}"}
    storage.forget()
    written.clear()
    with storage.staged(f"s3://{BUCKET}/pub", last=("index.json",)) as out:   # seeded with what is there
        assert (out / "a" / "x.tar").read_bytes() == b"x" * 100
        (out / "z.tar").unlink()
        (out / "index.json").write_text('{"v": 2}')
    assert uploaded() == ["index.json"]           # only what changed
    assert set(objects(prefix="pub/")) == {"pub/identity.json", "pub/a/x.tar", "pub/index.json"}


def test_a_failed_command_publishes_nothing(s3):
    with pytest.raises(RuntimeError), storage.staged(f"s3://{BUCKET}/failed", last=("index.json",)) as out:
        (out / "part.parquet").write_bytes(b"p")
        raise RuntimeError("the writer failed")
    assert objects(prefix="failed/") == {}


def test_a_remote_folder_that_is_missing_is_named(s3):
    with pytest.raises(storage.StorageError, match=f"s3://{BUCKET}/nowhere: no such folder"):
        storage.fetched(f"s3://{BUCKET}/nowhere")
    res = CliRunner().invoke(main, ["verify", f"s3://{BUCKET}/nowhere"])
    assert res.exit_code != 0 and f"s3://{BUCKET}/nowhere: no such folder" in res.output


# ---------------------------------------------------------------- the whole pipeline on s3://

TRAIN = ["--preset", "tiny", "--train.max_steps=2", "--train.batch_size=4", "--data.micro_batch=4",
         "--data.num_workers=0", "--model.dropout=0.1", "--train.warmup_steps=1", "--train.log_interval=1",
         "--train.ckpt_interval=1", "--train.precision=fp32", "--data.seq_len=300"]


def run_pipeline(raw: str, at: str) -> None:
    """convert (a curated set and a web set) -> tokenize -> shard -> verify -> train, every folder under `at`."""
    web = web_sample.OPTIONS
    steps = [
        ["convert", "celeba", f"{raw}/celeba", "--out", f"{at}/manifest"],
        ["convert", "img2dataset", f"{raw}/web", "--out", f"{at}/manifest", "--name", "web",
         "--licence", web["licence"], "--bbox-column", web["bbox_column"], "--bbox-format", web["bbox_format"],
         "--resize-mode", web["resize_mode"]],
        ["tokenize", f"{at}/manifest", "--cache", f"{at}/cache", "--engine", "local", "--batch-size", "8"],
        ["shard", f"{at}/manifest", "--cache", f"{at}/cache", "--out", f"{at}/shards", "--samples-per-shard", "16"],
        ["verify", f"{at}/shards"],
        ["train", "--shards", f"{at}/shards", "--out", f"{at}/run", *TRAIN],
    ]
    for args in steps:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, (args, res.output, res.exception)


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def codes(files: dict[str, bytes]) -> dict[str, bytes]:
    """image_id -> codes of every cache part among `files` (part names differ: they carry a time)."""
    import io

    import pyarrow.parquet as pq

    out = {}
    for name, data in files.items():
        if name.startswith("codes/part-"):
            for row in pq.read_table(io.BytesIO(data)).to_pylist():
                out[row["image_id"]] = row["codes"]
    return out


def model_sha256(files: dict[str, bytes], step: str) -> str:
    return hashlib.sha256(files[f"{step}/model.pt"]).hexdigest()


def losses(files: dict[str, bytes]) -> list:
    log = next(data for name, data in files.items() if name.endswith(".jsonl"))
    return [(r["step"], r["loss"]) for r in map(json.loads, log.decode().splitlines()) if "loss" in r]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_pipeline_on_s3_gives_the_bytes_of_the_local_run(s3, tmp_path):
    raw = tmp_path / "local" / "raw"
    celeba_sample.write(raw / "celeba", seed=0, n=12)
    web_sample.write(raw / "web", seed=0, n=16, per_shard=8)
    pafs.copy_files(str(raw), f"{BUCKET}/s3/raw", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=storage.filesystem(f"s3://{BUCKET}/")[0])

    run_pipeline(str(raw), str(tmp_path / "local"))
    run_pipeline(f"s3://{BUCKET}/s3/raw", f"s3://{BUCKET}/s3")

    res = CliRunner().invoke(main, ["report", f"s3://{BUCKET}/s3/manifest", "--shards", f"s3://{BUCKET}/s3/shards",
                                    "--out", f"s3://{BUCKET}/report"])
    assert res.exit_code == 0, res.output
    report = objects(prefix="report/")
    assert set(report) == {"report/report.json", "report/report.html"}
    found = {name: d["raw_dir_found"] for name, d in json.loads(report["report/report.json"])["filters"]["datasets"].items()}
    assert found == {"celeba": True, "web": True}        # checked in the bucket, not copied

    remote = objects(prefix="s3/")
    assert not [k for k in remote if k.endswith(".tmp")]
    here = {folder: local_files(tmp_path / "local" / folder) for folder in ("manifest", "cache", "shards", "run")}
    there = {folder: {k.split("/", 2)[2]: v for k, v in remote.items() if k.split("/")[1] == folder}
             for folder in ("manifest", "cache", "shards", "run")}
    assert there["manifest"] == here["manifest"]          # partitions, ledger, summary (raw_dir ../raw/...)
    assert json.loads(there["manifest"]["summary.json"])["datasets"]["web"]["raw_dir"] == "../raw/web"
    assert codes(there["cache"]) == codes(here["cache"]) and len(codes(here["cache"])) > 10
    assert there["shards"] == here["shards"]              # every tar and index.json, byte for byte
    assert model_sha256(there["run"], "step-00000002") == model_sha256(here["run"], "step-00000002")
    assert losses(there["run"]) == losses(here["run"]) and len(losses(here["run"])) == 2
    checks = json.loads(there["run"]["step-00000002/checksums.json"])["files"]
    assert set(checks) | {"checksums.json"} == {k.split("/", 1)[1] for k in there["run"] if k.startswith("step-00000002/")}


def test_publish_inside_a_staged_folder_writes_at_once(s3, tmp_path):
    """A cache part or a checkpoint is in the bucket as soon as it is written, so a killed run keeps it."""
    with storage.staged(f"s3://{BUCKET}/now", last=("*/checksums.json",)) as run:
        (run / "step-1").mkdir()
        (run / "step-1" / "model.pt").write_bytes(b"m")
        (run / "step-1" / "checksums.json").write_text("{}")
        assert storage.publish(run / "step-1") == 2
        assert objects(prefix="now/") == {"now/step-1/model.pt": b"m", "now/step-1/checksums.json": b"{}"}
    assert storage.publish(tmp_path) == 0      # a local folder: nothing to publish


def test_a_local_manifest_records_a_remote_raw_folder_by_its_uri(s3, tmp_path):
    web_sample.write(tmp_path / "web", seed=0, n=4, per_shard=4)
    pafs.copy_files(str(tmp_path / "web"), f"{BUCKET}/elsewhere/web", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=storage.filesystem(f"s3://{BUCKET}/")[0])
    o = web_sample.OPTIONS
    res = CliRunner().invoke(main, ["convert", "img2dataset", f"s3://{BUCKET}/elsewhere/web", "--out",
                                    str(tmp_path / "manifest"), "--licence", o["licence"], "--bbox-column",
                                    o["bbox_column"], "--resize-mode", o["resize_mode"]])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "manifest" / "summary.json").read_text())
    assert summary["datasets"]["web"]["raw_dir"] == f"s3://{BUCKET}/elsewhere/web"   # not a scratch path
    assert manifest.image_root(tmp_path / "manifest", "web") == f"s3://{BUCKET}/elsewhere/web"   # read in place


def test_raw_images_in_object_storage_are_read_in_place_by_range(s3, tmp_path):
    """tokenize's read stage opens a tar object once and fetches members by byte range: the same pixels
    as from the local tar; a name outside the dataset folder is refused, a missing object ledgered."""
    from facecorpus.shards.plan import plan
    from facecorpus.shards.reading import REFUSED, read_batch

    web_sample.write(tmp_path / "raw" / "web", seed=0, n=8, per_shard=4)
    pafs.copy_files(str(tmp_path / "raw"), f"{BUCKET}/inplace", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=storage.filesystem(f"s3://{BUCKET}/")[0])
    o = web_sample.OPTIONS
    res = CliRunner().invoke(main, ["convert", "img2dataset", str(tmp_path / "raw" / "web"), "--out",
                                    str(tmp_path / "manifest"), "--licence", o["licence"], "--bbox-column",
                                    o["bbox_column"], "--resize-mode", o["resize_mode"]])
    assert res.exit_code == 0, res.output
    here = plan(tmp_path / "manifest")
    there = plan(tmp_path / "manifest", raw_root=f"s3://{BUCKET}/inplace")
    assert all(p.startswith(f"s3://{BUCKET}/inplace/web/") and "#member=" in p for p in there["path"])
    local, remote = (read_batch({c: df[c].to_numpy() for c in df.columns}, 32) for df in (here, there))
    assert list(remote["stage"]) == list(local["stage"]) == [""] * len(here)
    assert (remote["pixels"] == local["pixels"]).all()
    bad = there.iloc[:2].copy()
    bad["path"] = [f"s3://{BUCKET}/inplace/elsewhere.jpg", f"s3://{BUCKET}/inplace/web/missing.jpg"]
    out = read_batch({c: bad[c].to_numpy() for c in bad.columns}, 32)
    assert list(out["stage"]) == [REFUSED, "read"] and "no such object" in out["message"][1]
