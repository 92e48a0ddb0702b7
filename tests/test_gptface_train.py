"""GPTFace in the training loop: its batches from the shard stream, its logs, its checkpoints, exact
resume after a kill from outside (masks, budget schedule and ITM pairs included), and clear data errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from facecorpus.cli import main
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import checkpoint
from facecorpus.trainer.checkpoint import resolve_config
from facecorpus.trainer.config import RunConfig, apply_overrides
from facecorpus.trainer.gptface import GPTFace
from facecorpus.trainer.gptface_batch import GPTFaceBatch
from facecorpus.trainer.gptface_data import GPTFaceStream
from facecorpus.trainer.train import accumulation_steps, batch_width, train
from runs import kill_when_published, losses, torchrun, with_val_split
from shardkit import CAPTIONS, record, stream_shards, write_shards

# One process: 4 sequences a step, a checkpoint every step; the budget rises every step so that
# resuming at the wrong step would show.
SMALL = ["--train.batch_size=4", "--data.micro_batch=4", "--data.num_workers=0", "--model.dropout=0.1",
         "--train.warmup_steps=1", "--train.log_interval=1", "--train.ckpt_interval=1", "--train.precision=fp32",
         "--train.keep_checkpoints=0", "--masking.image_every=1", "--masking.image_rise=0.1"]


def train_here(shards: Path, run: Path, *extra: str, preset: str = "gptface-tiny") -> tuple[dict, str]:
    cfg, _ = resolve_config(run, str(shards), preset, [*SMALL, *extra])
    out = io.StringIO()
    return train(cfg, run, Console(file=out, width=200)), out.getvalue()


def log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_thread")
def test_gptface_trains_logs_its_objective_and_saves_its_family(tmp_path):
    shards = with_val_split(tmp_path / "shards")
    result, printed = train_here(shards, tmp_path / "run", "--train.max_steps=2", "--train.eval_interval=1",
                                 "--train.eval_batches=1")
    assert "GPTFace gptface-tiny: 2.2M parameters" in printed and "322 ids per sequence (256 image codes)" in printed
    lines = log(tmp_path / "run")
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and [r["mask_budget"] for r in steps] == pytest.approx([0.15, 0.25])
    for r in steps:
        assert r["loss"] == pytest.approx(r["loss/milm"] + r["loss/itm"])
        assert 0 < r["loss/milm_image"] < 20 and 0 < r["loss/milm_text"] < 20 and 0 <= r["itm_acc"] <= 1
        assert r["masked/image"] > 0 and r["mfu"] == "n/a" and r["tokens_per_s"] > 0 and "data/texts_truncated" in r
    # Matched rows only carry MILM: 2 of 4 rows x 38 codes at 15%, then 2 x 64 at 25% of 256.
    assert [r["masked/image"] for r in steps] == [2 * 38, 2 * 64]
    held_out = [r for r in lines if "val/loss" in r]
    assert [r["step"] for r in held_out] == [1, 2] and held_out[0]["val/loss"] != held_out[1]["val/loss"]
    assert all(r["val/loss/milm_image"] > 0 and 0 <= r["val/itm_acc"] <= 1 for r in held_out)

    saved = json.loads((tmp_path / "run" / "step-00000002" / "config.json").read_text())
    assert saved["family"] == "gptface" and saved["masking"]["image_every"] == 1
    assert saved["model"]["codebook_size"] == 1024 and saved["model"]["grid_side"] == 16
    model, cfg = checkpoint.load_model(tmp_path / "run")
    assert isinstance(model, GPTFace) and cfg.family == "gptface" and cfg.grid == FFHQ_F16 and not model.training
    assert result["steps"] == 2 and result["sequences_per_rank"] == [8]


@pytest.mark.usefixtures("one_thread")
def test_attribute_texts_train_it_as_an_option(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 4, "attributes": 6}, samples_per_shard=4)
    train_here(shards, tmp_path / "run", "--train.max_steps=1", "--data.gptface_records=attributes")
    train_here(shards, tmp_path / "both", "--train.max_steps=1", "--data.gptface_records=both")
    assert log(tmp_path / "run")[-2]["loss/milm_text"] > 0
    only_captions = stream_shards(tmp_path / "captions", {"caption": 4}, samples_per_shard=4)
    res = CliRunner().invoke(main, ["train", "--shards", str(only_captions), "--out", str(tmp_path / "x"),
                                    "--preset", "gptface-tiny", "--data.gptface_records=attributes", *SMALL])
    assert res.exit_code != 0 and "split 'train' has no attributes samples; a GPTFace run trains on attributes" in res.output


def stream(shards: Path, cfg: RunConfig, rank: int = 0, world: int = 1, start: int = 0):
    from facecorpus.trainer.batches import StreamSpec

    cfg = cfg.sized(FFHQ_F16)
    spec = StreamSpec(str(shards), "train", cfg.data.seq_len, batch_width(cfg), cfg.data.micro_batch, 0, 2,
                      "target", cfg.train.seed, rank, world, start)
    return iter(GPTFaceStream(spec, cfg, accumulation_steps(cfg, world)))


def test_the_stream_resumes_at_any_micro_batch_and_places_rows_by_step_and_position(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 24}, samples_per_shard=4)
    cfg = apply_overrides(RunConfig.from_preset("gptface-tiny"), ["--train.batch_size=8", "--data.micro_batch=4",
                                                                  "--masking.image_every=1"])
    straight = [next(s) for s in [stream(shards, cfg)] for _ in range(5)]
    assert all(isinstance(b, GPTFaceBatch) for b in straight)
    assert [b.image_budget for b in straight] == pytest.approx([0.15, 0.15, 0.16, 0.16, 0.17])  # 2 micro-steps a step
    resumed = stream(shards, cfg, start=3)
    for a in straight[3:]:
        b = next(resumed)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.itm, b.itm) and a.keys == b.keys


def test_an_impossible_itm_pairing_names_the_shard_and_sample(tmp_path):
    one_image = [record("celeba", "same", "caption", "train", CAPTIONS[n % 3], n=n) for n in range(4)]
    shards = write_shards(tmp_path / "shards", one_image, samples_per_shard=4)
    res = CliRunner().invoke(main, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"),
                                    "--preset", "gptface-tiny", *SMALL])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert "train/caption-000000.tar: sample celeba/same/caption/" in res.output
    assert "no ITM negative possible: all 4 records of the batch show image 'celeba/same'" in res.output


GPTFACE_ARGS = ["--preset", "gptface-tiny", "--model.dropout=0.1", "--masking.image_every=1", "--masking.image_rise=0.1",
                "--data.gptface_records=both", "--train.warmup_steps=2", "--data.seq_len=0"]   # after test_train.ARGS


@pytest.mark.slow
def test_kill_from_outside_and_resume_is_exact_for_the_gptface_objective(tmp_path):
    """2 ranks x 2 micro-steps; the mask budget rises every step, half the rows are ITM negatives."""
    shards = stream_shards(tmp_path / "shards", {"caption": 10, "attributes": 6}, samples_per_shard=4)
    straight = torchrun(shards, tmp_path / "a", *GPTFACE_ARGS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert kill_when_published(torchrun(shards, tmp_path / "b", *GPTFACE_ARGS, wait=False),
                               tmp_path / "b" / "step-00000002"), "the run ended before the kill"
    assert checkpoint.newest_intact(tmp_path / "b").name == "step-00000002"
    resumed = torchrun(shards, tmp_path / "b", *GPTFACE_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = log(tmp_path / "a"), log(tmp_path / "b")
    keys = ("loss", "loss/milm_image", "loss/milm_text", "loss/itm", "itm_acc", "mask_budget", "grad_norm")
    figures = {r["step"]: tuple(r[k] for k in keys) for r in a if "loss" in r}
    assert sorted(figures) == [1, 2, 3, 4]
    assert figures == {r["step"]: tuple(r[k] for k in keys) for r in b if "loss" in r}   # identical floats
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert [figures[s][5] for s in (1, 2, 3, 4)] == pytest.approx([0.15, 0.25, 0.35, 0.45])
    model, cfg = checkpoint.load_model(tmp_path / "b")
    assert isinstance(model, GPTFace) and cfg.data.gptface_records == "both"
