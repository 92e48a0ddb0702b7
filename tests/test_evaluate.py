"""Evaluation protocols on small hand-made shards: scoring rules, caption metrics, FID/IS, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from facecorpus import textproto
from facecorpus.codes import FFHQ_F16
from facecorpus.shards import format as fmt
from facecorpus.trainer import evaluate as ev
from facecorpus.trainer import generate as gen
from facecorpus.trainer import metrics
from facecorpus.trainer.config import model_preset
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.sequences import SequenceBuilder
from inceptionkit import save_fake_inception
from runs import save_run
from shardkit import record
from shardkit import write_shards as write_shards_of

B = SequenceBuilder(grid=FFHQ_F16)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_shards(root, records: list[dict]) -> None:
    """records: {dataset, image, split, kind, labels | text} -> shards + index.json, by the real writer."""
    write_shards_of(root, [record(r["dataset"], r["image"], r["kind"], r["split"],
                                  r.get("text") or textproto.to_text(r["dataset"], r["labels"]), r.get("labels"), n)
                           for n, r in enumerate(records)])


RECORDS = (
    [dict(dataset="cacd", image=f"c{i}", split="test", kind="attributes", labels={"age": a}) for i, a in enumerate((20, 30, 60))]
    + [dict(dataset="cacd", image="train0", split="train", kind="attributes", labels={"age": 40})]
    + [dict(dataset="fairface", image=f"f{i}", split="test", kind="attributes", labels={"age": "20-29", "race": r})
       for i, r in enumerate(("white", "black", "east asian", "white"))]
    + [dict(dataset="affectnet", image=f"a{i}", split="test", kind="attributes", labels={"expression": e})
       for i, e in enumerate(("happy", "sad"))]
    + [dict(dataset="celeba", image=f"e{i}", split="test", kind="attributes",
            labels={"gender": g, "bald": b, "smiling": s}) for i, (g, b, s) in enumerate((("male", True, False), ("female", False, True)))]
    + [dict(dataset="celebatexthq", image=f"h{i}", split="test", kind="caption", text=t)
       for i, t in enumerate(("the woman has blond hair.", "she has blond hair and is smiling.", "a man with a beard."))]
    + [dict(dataset="celebatexthq", image="h0", split="test", kind="caption", text="this woman has blond hair")]
    + [dict(dataset="mmcelebahq", image=f"m{i}", split="val", kind="caption", text=f"a person number {i} smiling")
       for i in range(4)]
)


@pytest.fixture
def shards(tmp_path):
    write_shards(tmp_path / "shards", RECORDS)
    return tmp_path / "shards"


def model():
    torch.manual_seed(0)
    return Talk2Face(model_preset("tiny", FFHQ_F16)).eval()


def answering(monkeypatch, answers: dict[str, list[str]]):
    """Replace greedy decoding by fixed answers per key: the protocol's scoring is what is tested."""
    def fake(model, builder, codes, key, *args, **kwargs):
        return answers[key][:len(codes)]
    monkeypatch.setattr(gen, "generate_attribute", fake)


def test_age_mae_counts_a_non_number_as_wrong(monkeypatch, shards):
    answering(monkeypatch, {"cacd age:": ["22", "thirty", "61"]})   # labels 20, 30, 60 (train's 40 unused)
    r = ev.evaluate_attributes(model(), B, shards, "age")
    # errors: 2, worst inside the range 20..60 for label 30 (=30), 1
    assert r["n"] == 3 and r["non_numeric"] == 1 and r["mae"] == pytest.approx((2 + 30 + 1) / 3)


def test_accuracy_and_celeba_mean(monkeypatch, shards):
    answering(monkeypatch, {"fairface race:": ["white", "black", "asian", "white"],
                            "celeba gender:": ["male", "male"], "celeba bald:": ["true", "false"],
                            "celeba smiling:": ["1", "true"]})
    assert ev.evaluate_attributes(model(), B, shards, "race")["accuracy"] == 75.0
    r = ev.evaluate_attributes(model(), B, shards, "celeba")
    # gender 1/2, bald 2/2, smiling: "1" is not `false` -> 1/2 ; mean of 50, 100, 50
    assert r["attributes"] == 3 and r["per_attribute"] == {"bald": 100.0, "gender": 50.0, "smiling": 50.0}
    assert r["accuracy"] == pytest.approx(200 / 3)


def test_rank_mode_only_answers_inside_the_label_set(shards):
    r = ev.evaluate_attributes(model(), B, shards, "race", rank=True)
    assert r["decoding"] == "rank" and all(e["answer"] in ("white", "black", "east asian") for e in r["examples"])


def test_missing_split_or_dataset_is_named(shards):
    with pytest.raises(ev.EvaluationError, match="no cacd attributes samples in split 'val'"):
        ev.evaluate_attributes(model(), B, shards, "age", split="val")
    index = json.loads((shards / "index.json").read_text())
    index["shards"][0]["count"] += 1
    (shards / "index.json").write_text(json.dumps(index))
    with pytest.raises(fmt.FormatError, match="1 samples, index.json says 2"):
        ev.read_samples(shards, index["shards"][0]["split"], index["shards"][0]["kind"], "cacd")


def test_caption_scores_perfect_and_imperfect():
    refs = {"a": ["The woman has blond hair.", "she is blond"], "b": ["a man with a short black beard"]}
    perfect = metrics.caption_scores(refs, {"a": "the woman has blond hair", "b": "A man with a short black beard."},
                                     meteor=False)
    assert perfect["bleu4"] == pytest.approx(100, abs=1e-3) and perfect["rouge_l"] == pytest.approx(100)
    worse = metrics.caption_scores(refs, {"a": "a man has a hat", "b": "the woman is blond"}, meteor=False)
    assert worse["bleu4"] < 1 and worse["rouge_l"] < perfect["rouge_l"] and worse["cider"] < perfect["cider"]
    assert perfect["meteor"] is None and "skipped" in perfect["meteor_note"]
    with pytest.raises(metrics.MetricsError, match="no reference"):
        metrics.caption_scores({}, {"x": "a face"})


@pytest.mark.slow  # starts a JVM with 2 GB heap: 10-60 s
@pytest.mark.skipif(not metrics.java_available(), reason="METEOR 1.5 needs java")
def test_meteor_through_java():
    refs = {"a": ["the woman has blond hair"], "b": ["a man with a beard"]}
    # One JVM start (the slow part): one perfect and one unrelated caption land between the extremes.
    scores = metrics.caption_scores(refs, {"a": "the woman has blond hair", "b": "the sky is blue"})
    assert 20 < scores["meteor"] < 90 and "Java" in scores["meteor_note"]


@pytest.fixture
def inception(tmp_path):
    return save_fake_inception(tmp_path / "inception.pt")


def test_fid_is_from_a_torchscript_inception_by_path(inception):
    net = metrics.load_inception(inception)
    g = torch.Generator().manual_seed(0)
    real = [torch.randint(0, 256, (16, 3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(2)]
    dark = [(b // 4) for b in real]
    same = metrics.fid_is(net, real, real)
    other = metrics.fid_is(net, real, dark)
    assert abs(same["fid"]) < 1e-3 and other["fid"] > 0.01 and 1.0 <= other["is"] <= 5.0
    with pytest.raises(metrics.MetricsError, match="does not exist"):
        metrics.load_inception(inception.parent / "nope.pt")


def test_markdown_has_the_papers_numbers_beside_ours():
    md = ev.markdown({"age": {"mae": 12.345, "n": 3, "split": "test", "dataset": "cacd"},
                      "caption": {"bleu4": 20.0, "rouge_l": 40.0, "meteor": None, "cider": 10.0, "n": 3,
                                  "meteor_note": "skipped: no java"}}, "ours (step-1)")
    assert "| Talk2Face (paper) | 8.3 | 44.7 | 66.2 | 90.3 |" in md
    assert "| ours (step-1) | 12.3 | – | – | – |" in md
    assert "| ours (step-1) | 20.0 | 40.0 | – | 10.0 |" in md and "Table 2" in md and "skipped: no java" in md


def test_evaluate_cli_all_tasks(tmp_path, shards, inception):
    from facecorpus.trainer.evaluate_cli import evaluate

    save_run(tmp_path / "run", model())
    out = tmp_path / "eval"
    res = CliRunner().invoke(evaluate, [str(tmp_path / "run"), "--shards", str(shards), "--inception", str(inception),
                                        "--n-faces", "3", "--no-meteor", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "eval.json").read_text())
    assert set(ev.TASKS) <= set(result)
    assert result["age"]["n"] == 3 and result["race"]["n"] == 4 and result["celeba"]["attributes"] == 3
    assert result["caption"]["n"] == 3 and result["caption"]["references_per_image"] == pytest.approx(4 / 3, abs=0.01)
    assert result["text2face"]["n_fake"] == 3 and result["text2face"]["n_real"] == 4
    assert "Talk2Face (paper)" in (out / "eval.md").read_text()
    res = CliRunner().invoke(evaluate, [str(tmp_path / "run"), "--shards", str(shards), "--task", "text2face"])
    assert res.exit_code != 0 and "--inception" in res.output
    save_run(tmp_path / "run", model(), {"vqgan": {"name": "tiny-f16", "checkpoint_sha256": "another"}}, step=2)
    res = CliRunner().invoke(evaluate, [str(tmp_path / "run"), "--shards", str(shards), "--task", "age"])
    assert res.exit_code != 0 and "re-shard with the training VQGAN" in res.output


def test_evaluate_cli_refuses_a_damaged_step_folder_and_codes_of_another_grid(tmp_path, shards):
    from facecorpus.cli import main

    step = save_run(tmp_path / "run", model())
    (step / "optimizer.pt").write_bytes(b"")
    res = CliRunner().invoke(main, ["evaluate", str(step), "--shards", str(shards), "--task", "age"])
    assert isinstance(res.exception, SystemExit) and res.exit_code != 0 and "Traceback" not in res.output
    assert "step-00000001: damaged checkpoint: optimizer.pt has 0 bytes" in res.output
    index = json.loads((shards / "index.json").read_text())
    index["vqgan"].update(codebook_size=8192, grid=[21, 21], resolution=336)
    (shards / "index.json").write_text(json.dumps(index))
    save_run(tmp_path / "run", model(), step=2)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--shards", str(shards), "--task", "age"])
    assert isinstance(res.exception, SystemExit) and res.exit_code != 0 and "Traceback" not in res.output
    assert "holds codes of {'codebook_size': 8192, 'grid': [21, 21], 'resolution': 336}" in res.output
