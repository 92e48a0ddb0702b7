"""The training loop: exact resume after a kill from outside, damaged checkpoints, uneven shards, the
config's valid ranges, held-out loss, and one clear message for every wrong setting."""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from facecorpus import vocab
from facecorpus.cli import main
from facecorpus.codes import FFHQ_F16
from facecorpus.records import KINDS
from facecorpus.trainer import checkpoint
from facecorpus.trainer import config as C
from facecorpus.trainer.checkpoint import resolve_config
from facecorpus.trainer.config import RunConfig, model_preset
from facecorpus.trainer.model import Talk2Face
from runs import kill_when_published, losses, save_run, torchrun, with_val_split
from shardkit import ATTRIBUTES, CAPTIONS, IDENTITY, record, stream_shards

# One process, for the in-process runs: 4 sequences a step, a checkpoint every step.
SMALL = ["--train.batch_size=4", "--data.micro_batch=4", "--data.num_workers=0", "--model.dropout=0.1",
         "--train.warmup_steps=1", "--train.log_interval=1", "--train.ckpt_interval=1", "--train.precision=fp32",
         "--data.seq_len=300", "--train.keep_checkpoints=0"]


@pytest.mark.slow
def test_kill_from_outside_and_resume_is_exact_on_uneven_shards(tmp_path):
    # Rank 0 reads caption shards 0 and 2 (6 samples), rank 1 shard 1 (4): both must run 4 steps.
    shards = stream_shards(tmp_path / "shards", {"caption": 10, "attributes": 5}, samples_per_shard=4)
    straight = torchrun(shards, tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert kill_when_published(torchrun(shards, tmp_path / "b", wait=False), tmp_path / "b" / "step-00000002"), \
        "the run ended before the kill"
    assert checkpoint.newest_intact(tmp_path / "b").name == "step-00000002"
    resumed = torchrun(shards, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert a == b                                   # identical floats, not merely close
    end = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()][-1]
    assert end["steps_per_rank"] == [4, 4] and end["sequences_per_rank"] == [32, 32]

    step = tmp_path / "b" / "step-00000004"
    assert {p.name for p in step.iterdir()} == {"model.pt", "optimizer.pt", "trainer.pt", "config.json",
                                                  "rng-rank0.pt", "rng-rank1.pt", "checksums.json"}
    assert checkpoint.problem(step) is None and not list((tmp_path / "b").glob("*.tmp"))
    assert torch.load(step / "trainer.pt", weights_only=True)["batches_consumed"] == 8
    model, cfg = checkpoint.load_model(tmp_path / "b")
    assert cfg.preset == "tiny" and cfg.model.dropout == 0.1 and not model.training
    assert json.loads((step / "config.json").read_text())["shards_identity"]["text_vocab"]["name"] == "bert-base-uncased"


def train_here(shards: Path, run: Path, *extra: str) -> tuple[dict, str]:
    """`facecorpus train` in this process -> (its result, what it printed)."""
    import io

    from rich.console import Console

    from facecorpus.trainer.train import train

    cfg, _ = resolve_config(run, str(shards), "tiny", [*SMALL, *extra])
    out = io.StringIO()
    return train(cfg, run, Console(file=out, width=200)), out.getvalue()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_resume_skips_damaged_checkpoints_and_stays_exact(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 8, "attributes": 6}, samples_per_shard=4)
    train_here(shards, tmp_path / "a", "--train.max_steps=2")
    train_here(shards, tmp_path / "b", "--train.max_steps=2")
    model_pt = tmp_path / "b" / "step-00000002" / "model.pt"
    model_pt.write_bytes(model_pt.read_bytes()[:1000])            # a truncated copy
    _, printed = train_here(shards, tmp_path / "b", "--train.max_steps=2")
    assert "skipping damaged checkpoint step-00000002: model.pt has 1,000 bytes, checksums.json says" in printed
    assert "resumed from" in printed and "step-00000001 at step 1" in printed
    assert losses(tmp_path / "a") == losses(tmp_path / "b")         # step 2 again, identically
    assert checkpoint.problem(tmp_path / "b" / "step-00000002") is None   # replaced by the resumed run
    log = (tmp_path / "a" / "train.jsonl").read_text()
    assert "no held-out loss: the shards' val split has no attributes and caption samples" in log


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated model.pt": (lambda s: (s / "model.pt").write_bytes((s / "model.pt").read_bytes()[:100]),
                           r"model.pt has 100 bytes, checksums.json says [\d,]+ \(truncated or replaced\)"),
    "bit flip in model.pt": (lambda s: flip_a_bit(s / "model.pt"),
                             "model.pt has another sha256 than checksums.json records"),
    "truncated optimizer.pt": (lambda s: (s / "optimizer.pt").write_bytes(b"PK"), "optimizer.pt has 2 bytes"),
    "truncated trainer.pt": (lambda s: (s / "trainer.pt").write_bytes(b""), "trainer.pt has 0 bytes"),
    "empty rng file": (lambda s: (s / "rng-rank0.pt").write_bytes(b""), "rng-rank0.pt has 0 bytes"),
    "missing config.json": (lambda s: (s / "config.json").unlink(), "config.json is missing"),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("two") / "run"
    model = Talk2Face(model_preset("tiny", FFHQ_F16))
    save_run(run, model, step=1)
    save_run(run, model, step=2)
    return run


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path, two_checkpoints, damage):
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    step = run / "step-00000002"
    change, why = DAMAGE[damage]
    change(step)
    skipped: list[str] = []
    assert checkpoint.newest_intact(run, skipped).name == "step-00000001"
    assert len(skipped) == 1 and skipped[0].startswith("step-00000002: ")
    with pytest.raises(checkpoint.CheckpointError, match=f"step-00000002: damaged checkpoint: {why}"):
        checkpoint.load_model(step)


def test_a_checkpoint_without_checksums_names_an_unreadable_file(tmp_path):
    """Folders from before checksums load as they are; a broken file still names folder and file."""
    step = tmp_path / "run" / "step-00000003"
    step.mkdir(parents=True)
    (step / "model.pt").write_bytes(b"")
    (step / "config.json").write_text(RunConfig.from_preset("tiny").sized(FFHQ_F16).to_json())
    with pytest.raises(checkpoint.CheckpointError, match=r"step-00000003/model.pt: unreadable \(EOFError"):
        checkpoint.load_model(tmp_path / "run")


def clean_failure(res, *expected: str) -> None:
    assert res.exit_code not in (0, None) and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output and "Aborted!" not in res.output
    for text in expected:
        assert text in res.output, res.output


def test_resume_with_every_checkpoint_damaged_is_one_message(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 2, "attributes": 2}, samples_per_shard=4)
    step = save_run(tmp_path / "run", Talk2Face(model_preset("tiny", FFHQ_F16)), step=1)
    (step / "rng-rank0.pt").write_bytes(b"")
    res = CliRunner().invoke(main, ["train", "--shards", str(shards), "--out", str(tmp_path / "run")])
    clean_failure(res, "no intact checkpoint to resume from (step-00000001: rng-rank0.pt has 0 bytes")


def test_resume_refused_for_another_vqgan_is_one_message(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 2, "attributes": 2}, samples_per_shard=4)
    other = {**IDENTITY["vqgan"], "checkpoint_sha256": "e" * 64}    # the same VQGAN architecture, other weights
    identity = {"vqgan": other, "text_vocab": {"name": "bert-base-uncased", "sha256": vocab.VOCAB_SHA256}}
    save_run(tmp_path / "run", Talk2Face(model_preset("tiny", FFHQ_F16)), identity)
    res = CliRunner().invoke(main, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"), "--data.num_workers=0"])
    clean_failure(res, "step-00000001: trained on shards made with other tokenizers than the shards given "
                       "(vqgan.checkpoint_sha256 'eeee", "the image/text ids would mean something else")


def test_resume_keeps_the_saved_config(tmp_path):
    cfg = RunConfig.from_preset("tiny").sized(FFHQ_F16)
    run = tmp_path / "run"
    (run / "step-00000005").mkdir(parents=True)
    (run / "step-00000005" / "model.pt").write_bytes(b"")
    (run / "step-00000005" / "config.json").write_text(cfg.to_json())
    got, resuming = resolve_config(run, "S", None, ["--train.max_steps=9"])
    assert resuming and got.train.max_steps == 9 and got.data.shards == "S" and got.grid == FFHQ_F16
    with pytest.raises(Exception, match="model overrides cannot change a run being resumed"):
        resolve_config(run, "S", None, ["--model.n_layer=3"])


def test_batch_divisibility_checked_up_front():
    from facecorpus.trainer.train import accumulation_steps

    cfg = RunConfig.from_preset("tiny")
    cfg.train.batch_size, cfg.data.micro_batch = 192, 16
    assert accumulation_steps(cfg, 4) == 3
    with pytest.raises(ValueError, match=r"train.batch_size=192 is not a multiple of world size 5 x data.micro_batch=16 = 80"):
        accumulation_steps(cfg, 5)


def test_resume_refuses_shards_from_another_vqgan(tmp_path):
    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    vocab_id = {"name": "bert-base-uncased", "sha256": "x"}
    ffhq = {"name": "ffhq-f16", "config_sha256": "a" * 64, "checkpoint_sha256": "b" * 64, **FFHQ_F16.as_dict()}
    saved = {**RunConfig.from_preset("tiny").to_dict(), "shards_identity": {"vqgan": ffhq, "text_vocab": vocab_id}}
    (ckpt / "config.json").write_text(json.dumps(saved))
    checkpoint.check_identity(ckpt, {"vqgan": ffhq, "text_vocab": vocab_id})
    checkpoint.check_identity(ckpt, {"vqgan": {**ffhq, "name": "renamed"}, "text_vocab": vocab_id})   # names don't count
    with pytest.raises(ValueError, match=r"step-00000002: trained on shards made with other tokenizers .*vqgan.grid"):
        checkpoint.check_identity(ckpt, {"vqgan": {**ffhq, "grid": [21, 21]}, "text_vocab": vocab_id})


# ---------------------------------------------------------------- valid ranges

@pytest.mark.parametrize("override, message", [
    ("--train.keep_checkpoints=-1", "train.keep_checkpoints=-1: must be >= 1, or 0 (keep all)"),
    ("--train.grad_clip=-1", "train.grad_clip=-1.0: must be > 0, or 0 (off)"),
    ("--train.batch_size=0", "train.batch_size=0: must be >= 1"),
    ("--data.micro_batch=-4", "data.micro_batch=-4: must be >= 2"),
    ("--data.micro_batch=6", "data.micro_batch=6: must be a multiple of 4 (data.tasks, in equal shares)"),
    ("--data.tasks=face2attributes,face2face", "data.tasks='face2attributes,face2face': must be a comma-separated "
     "list of face2caption, caption2face, face2attributes, attributes2face"),
    ("--train.log_interval=0", "train.log_interval=0: must be >= 1"),
    ("--train.ckpt_interval=0", "train.ckpt_interval=0: must be >= 1"),
    ("--train.eval_interval=-5", "train.eval_interval=-5: must be >= 1, or 0 (never)"),
    ("--train.eval_batches=0", "train.eval_batches=0: must be >= 1"),
    ("--train.lr=0", "train.lr=0.0: must be > 0"),
    ("--train.lr=nan", "train.lr=nan: must be > 0"),
    ("--train.min_lr=1", "train.min_lr=1.0: must be <= train.lr=0.0002"),
    ("--train.beta2=1", "train.beta2=1.0: must be >= 0 and < 1"),
    ("--model.dropout=1.5", "model.dropout=1.5: must be >= 0 and < 1"),
    ("--model.n_head=0", "model.n_head=0: must be >= 1"),
    ("--model.d_model=65", "model.d_model=65: must be divisible by model.n_head=2"),
    ("--data.seq_len=-1", "data.seq_len=-1: must be >= 1, or 0 (derived from the code grid)"),
    ("--data.num_workers=-1", "data.num_workers=-1: must be >= 0"),
    ("--train.seed=-1", "train.seed=-1: must be >= 0"),
    ("--train.precision=fp8", "train.precision='fp8': must be one of 'auto', 'bf16', 'fp32'"),
])
def test_every_setting_is_checked_up_front_with_one_message_format(override, message):
    with pytest.raises(C.ConfigError) as err:
        C.apply_overrides(RunConfig.from_preset("tiny"), [override])
    assert str(err.value) == message


def test_every_numeric_key_has_a_range():
    for section, kind in {s: k for types in C.SECTION_TYPES.values() for s, k in types.items()}.items():
        hints = typing.get_type_hints(kind)
        numeric = {f.name for f in dataclasses.fields(kind) if hints[f.name] in (int, float)}
        assert numeric == set(kind.RULES), f"{section}: keys without a range {numeric - set(kind.RULES)}"


def test_a_wrong_setting_stops_train_before_any_work(tmp_path):
    shards = stream_shards(tmp_path / "shards", {"caption": 2, "attributes": 2}, samples_per_shard=4)
    res = CliRunner().invoke(main, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"),
                                    "--train.keep_checkpoints=-1"])
    clean_failure(res, "train.keep_checkpoints=-1: must be >= 1, or 0 (keep all)")
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(main, ["train", "--help"])
    assert "train.grad_clip=1.0  (> 0, or 0 (off))" in res.output


# ---------------------------------------------------------------- held-out loss

@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_held_out_loss_is_logged_and_leaves_training_alone(tmp_path):
    shards = with_val_split(tmp_path / "shards")
    _, printed = train_here(shards, tmp_path / "eval", "--train.max_steps=2", "--train.eval_interval=1",
                            "--train.eval_batches=2")
    train_here(shards, tmp_path / "plain", "--train.max_steps=2", "--train.eval_interval=0")
    records = [json.loads(x) for x in (tmp_path / "eval" / "train.jsonl").read_text().splitlines()]
    held_out = [r for r in records if "val/loss" in r]
    assert [r["step"] for r in held_out] == [1, 2] and "step        2  val loss" in printed
    for r in held_out:
        assert 0 < r["val/loss"] < 20 and all(r[f"val/loss/{t}"] > 0 for t in
                                              ("face2caption", "caption2face", "face2attributes", "attributes2face"))
    assert held_out[0]["val/loss"] != held_out[1]["val/loss"]           # the model moved, the batches did not
    assert losses(tmp_path / "eval") == losses(tmp_path / "plain")     # evaluating drew no random numbers


@pytest.mark.usefixtures("one_thread")
def test_a_run_on_another_code_grid_takes_its_sizes_from_the_shards(tmp_path):
    """Shards of a VQGAN with 64 codes on a 4x4 grid: the model's vocabulary, the sequence length and
    the generated images follow that grid, from the index through the checkpoint to generation."""
    import numpy as np

    from facecorpus.codes import CodeGrid
    from facecorpus.shards import writer
    from facecorpus.trainer import generate as gen
    from facecorpus.trainer.inference import open_model

    grid = CodeGrid(codebook_size=64, side=4, resolution=64)
    rng = np.random.default_rng(0)
    records = [record("celeba", f"i{n}", kind, "train", (CAPTIONS if kind == "caption" else ATTRIBUTES)[n % 3], n=n)
               for kind in KINDS for n in range(4)]
    identity = {**IDENTITY, "vqgan": {**IDENTITY["vqgan"], **grid.as_dict()}}
    writer.write(tmp_path / "shards", [(r, rng.integers(0, 64, grid.shape).astype(np.uint16)) for r in records],
                 identity, grid, {"records": len(records)}, samples_per_shard=4)
    train_here(tmp_path / "shards", tmp_path / "run", "--train.max_steps=1", "--data.seq_len=0")
    loaded = open_model(tmp_path / "run")
    assert loaded.builder.grid == grid and loaded.builder.seq_len == 1 + 3 + 1 + 16 + 1 + 71 + 1
    assert loaded.model.cfg.vocab_size == 30522 + 64
    codes = gen.generate_images(loaded.model, loaded.builder, ["a man"], gen.GREEDY)
    assert codes.shape == (1, 16) and int(codes.max()) < 64
