"""GPTFace's few-shot protocol for both model families: recorded nested subsets, a linear probe on
frozen features, the paper's numbers beside ours, clear errors; end to end on the demo's shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facecorpus import textproto
from facecorpus.cli import main
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import fewshot as fs
from facecorpus.trainer.config import model_preset
from facecorpus.trainer.gptface import GPTFace
from facecorpus.trainer.model import Talk2Face
from runs import save_run
from shardkit import record, write_shards

pytestmark = pytest.mark.usefixtures("one_thread")
EXPRESSIONS = ("happy", "sad", "neutral")


def celeba(i: int, split: str) -> dict:
    labels = {"gender": ("male", "female")[i % 2], "smiling": i % 3 == 0, "bald": i % 4 == 0}
    return record("celeba", f"{split}{i}", "attributes", split, textproto.to_text("celeba", labels), labels)


def rafdb(i: int, split: str) -> dict:
    labels = {"expression": EXPRESSIONS[i % 3]}
    return record("rafdb", f"{split}{i}", "attributes", split, textproto.to_text("rafdb", labels), labels)


@pytest.fixture
def shards(tmp_path) -> Path:
    records = [make(i, split) for make in (celeba, rafdb) for split, n in (("train", 10), ("test", 4)) for i in range(n)]
    return write_shards(tmp_path / "shards", records)


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    torch.manual_seed(0)
    save_run(tmp_path / "gptface", GPTFace(model_preset("gptface-tiny", FFHQ_F16)), preset="gptface-tiny")
    save_run(tmp_path / "talk2face", Talk2Face(model_preset("tiny", FFHQ_F16)))
    return {"gptface": tmp_path / "gptface", "talk2face": tmp_path / "talk2face"}


def test_subsets_are_seeded_nested_and_at_least_one_image():
    small, large = fs.subset(1000, 0.01, 0), fs.subset(1000, 0.1, 0)
    assert len(small) == 10 and len(large) == 100 and set(small) <= set(large)
    assert np.array_equal(fs.subset(1000, 0.1, 0), large) and not np.array_equal(fs.subset(1000, 0.1, 1), large)
    assert len(fs.subset(5, 0.01, 0)) == 1 and len(fs.subset(7, 1.0, 0)) == 7 and len(fs.subset(10, 0.3, 0)) == 3


def test_the_probe_learns_what_the_features_hold():
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.integers(0, [2, 7], size=(300, 2)))
    x = torch.cat([torch.nn.functional.one_hot(y[:, 0], 2), torch.nn.functional.one_hot(y[:, 1], 7)], 1).float()
    x = x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape)).float()
    acc = fs.probe_accuracy(x[:200], y[:200], x[200:], y[200:], [2, 7])
    assert acc == [100.0, 100.0]
    noise = torch.from_numpy(rng.standard_normal((300, 9))).float()
    assert np.mean(fs.probe_accuracy(noise[:200], y[:200], noise[200:], y[200:], [2, 7])) < 80


@pytest.mark.parametrize("family", ["gptface", "talk2face"])
def test_evaluate_cli_runs_the_few_shot_protocol_for_both_families(tmp_path, shards, runs, family):
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["evaluate", str(runs[family]), "--shards", str(shards), "--task", "celeba-attributes",
                                    "--task", "rafdb", "--fractions", "0.2,1.0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "eval.json").read_text())
    assert result["family"] == family
    celeb, raf = result["celeba-attributes"], result["rafdb"]
    assert celeb["attributes"] == 3 and celeb["classes"] == {"bald": 2, "gender": 2, "smiling": 2}
    assert raf["attributes"] == 1 and raf["classes"] == {"expression": 3}
    assert (celeb["train_images"], celeb["test_images"]) == (10, 4)
    assert [r["train_images"] for r in celeb["results"]] == [2, 10]
    assert [r["paper_gptface"] for r in celeb["results"]] == [None, 91.74]
    assert all(0 <= r["accuracy"] <= 100 and len(r["subset_sha256"]) == 64 for r in celeb["results"] + raf["results"])
    assert fs.FEATURES[family] == celeb["features"] and "linear probe on frozen features" in celeb["protocol"]
    md = (out / "eval.md").read_text()
    assert "| 100% | 10 |" in md and "| 91.74 |" in md and "Few-shot (rafdb): 7-class expression test accuracy" in md


def test_the_chosen_keys_are_recorded_and_the_paper_fractions_are_the_default(tmp_path, shards, runs):
    res = CliRunner().invoke(main, ["evaluate", str(runs["gptface"]), "--shards", str(shards), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert set(result) >= {"celeba-attributes", "rafdb"} and "age" not in result       # `all`: GPTFace's paper's tasks
    rows = result["celeba-attributes"]["results"]
    assert [r["fraction"] for r in rows] == [0.01, 0.1, 1.0] and [r["paper_gptface"] for r in rows] == [89.73, 90.89, 91.74]
    train = sorted(f"celeba/train{i}/attributes/0" for i in range(10))
    assert rows[2]["subset_sha256"] == __import__("hashlib").sha256("\n".join(train).encode()).hexdigest()
    assert [r["paper_gptface"] for r in result["rafdb"]["results"]] == [78.65, 83.15, 85.01]


@pytest.mark.parametrize("args, expected", [
    (["--task", "age"], "--task age: ", ),
    (["--task", "rafdb", "--fractions", "0,1"], "--fractions '0,1': comma-separated fractions in (0, 1]"),
    (["--task", "rafdb", "--fractions", "half"], "--fractions 'half': comma-separated fractions in (0, 1]"),
])
def test_few_shot_errors_are_one_message(tmp_path, shards, runs, args, expected):
    res = CliRunner().invoke(main, ["evaluate", str(runs["gptface"]), "--shards", str(shards), *args,
                                    "--out", str(tmp_path / "e")])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert expected in res.output, res.output
    if args[1] == "age":
        assert "is a GPTFace model; age asks Talk2Face's prompts. Its tasks: celeba-attributes, rafdb" in res.output


def test_a_sample_without_a_label_is_named(tmp_path, runs):
    bad = celeba(1, "test")
    bad["labels"] = json.dumps({"gender": "female"})
    shards = write_shards(tmp_path / "shards", [celeba(i, "train") for i in range(3)] + [bad])
    res = CliRunner().invoke(main, ["evaluate", str(runs["gptface"]), "--shards", str(shards), "--task",
                                    "celeba-attributes", "--out", str(tmp_path / "e")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "test/attributes-000000.tar: sample 'celeba/test1/attributes/0' lacks the label(s) bald, smiling" in res.output


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory) -> Path:
    """The demo's shards at test scale (tests/demokit.py)."""
    from demokit import demo_out

    return demo_out(tmp_path_factory.mktemp("demo")) / "shards"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gptface-tiny", "tiny"])
def test_few_shot_runs_end_to_end_on_the_demo_shards(tmp_path, demo_shards, preset):
    from facecorpus.trainer.checkpoint import resolve_config
    from facecorpus.trainer.train import train

    cfg, _ = resolve_config(tmp_path / "run", str(demo_shards), preset,
                            ["--train.batch_size=8", "--data.micro_batch=8", "--data.num_workers=0",
                             "--train.max_steps=2", "--train.precision=fp32"])
    train(cfg, tmp_path / "run")
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--shards", str(demo_shards), "--task",
                                    "celeba-attributes", "--task", "rafdb", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "eval.json").read_text())
    assert result["celeba-attributes"]["attributes"] == 40 and result["rafdb"]["classes"]["expression"] >= 2
    assert (result["celeba-attributes"]["train_images"], result["celeba-attributes"]["test_images"]) == (27, 10)
    for task, fractions in (("celeba-attributes", [0.01, 0.1, 1.0]), ("rafdb", [0.2, 0.5, 1.0])):
        assert [r["fraction"] for r in result[task]["results"]] == fractions
        assert result[task]["results"][-1]["train_images"] == result[task]["train_images"] > 0
    assert "GPTFace (paper)" in (out / "eval.md").read_text()
