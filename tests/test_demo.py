"""The demo's learning stages: the attributes it scores are the ones the drawer draws, its attribute
prompts are protocol text, its sample grid has one tile per face, and on a tiny run the train,
evaluate and samples stages write OUT/run, OUT/eval and OUT/samples with every field."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from facecorpus import textproto
from facecorpus.converters.celeba import ATTRIBUTES
from facecorpus.converters.samples import celeba as celeba_sample
from facecorpus.trainer import demo, demo_eval, demo_generate
from facecorpus.trainer.sequences import TEXT_BUDGET, cut_prompt, is_attribute_text


def label_of(attribute: str) -> str:
    return "gender" if attribute == "Male" else textproto.attribute_name(attribute)


def test_the_scored_attributes_are_exactly_the_ones_the_drawer_draws():
    """Flipping one CelebA attribute changes the drawn look exactly when the evaluation scores it
    (from a man with no hair attribute (red hair), no beard, a flat mouth: every drawn feature can
    still change)."""
    row = np.full(len(ATTRIBUTES), -1)
    for name in ("Male", "No_Beard"):
        row[ATTRIBUTES.index(name)] = 1
    base = celeba_sample.look(row)
    changes = set()
    for i, name in enumerate(ATTRIBUTES):
        if name == "Mouth_Slightly_Open":
            continue   # drawn only without a smile: not decided by the picture alone
        flipped = row.copy()
        flipped[i] = -flipped[i]
        if celeba_sample.look(flipped) != base:
            changes.add(label_of(name))
    assert changes == set(demo_eval.DRAWN)


def test_attribute_prompts_are_protocol_text_stating_every_drawn_attribute():
    prompts = demo_generate.prompts()
    assert len(prompts) == len(demo_generate.LOOKS) >= 4
    for title, text in prompts:
        assert is_attribute_text(text), text
        dataset, labels = textproto.from_text(text)
        assert dataset == "celeba" and set(labels) == set(demo_eval.DRAWN)
        hair = [k for k in demo_generate.HAIRS if labels[k]]
        assert len(hair) == 1 and hair[0].split()[0] in title
        assert cut_prompt(text, TEXT_BUDGET)[1] is None   # the whole prompt fits the model's text budget


def test_prompt_looks_draw_their_labels():
    """The grid's reference column draws what the labels say, as the CelebA sample tree would."""
    for _, gender, hair, on in demo_generate.LOOKS:
        labels = demo_generate.prompt_labels(gender, hair, on)
        row = np.full(len(ATTRIBUTES), -1)
        for i, name in enumerate(ATTRIBUTES):
            value = labels.get(label_of(name))
            row[i] = 1 if value is True or value == "male" else -1
        assert demo_generate.drawn_look(gender, hair, on) == celeba_sample.look(row)


def test_grid_has_one_tile_per_face_and_a_title_column():
    colours = [[(200, 0, 0), (0, 200, 0), (0, 0, 200)], [(90, 90, 90), (250, 250, 0), (0, 250, 250)]]
    rows = [[Image.new("RGB", (256, 256), c) for c in row] for row in colours]
    out = demo_generate.grid(rows, ["first", "second"])
    T, W = demo_generate.TILE, demo_generate.LABEL_WIDTH
    assert out.size == (W + 3 * T, 2 * T)
    for i, row in enumerate(colours):
        for j, c in enumerate(row):
            assert out.getpixel((W + j * T + T // 2, i * T + T // 2)) == c
    title = np.asarray(out.crop((0, 0, W, T)))
    assert (title < 128).any() and (title == 255).mean() > 0.9   # dark text on white


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The demo's OUT at test scale, trained for 2 steps by the demo's own stage."""
    from demokit import demo_out

    out = demo_out(tmp_path_factory.mktemp("demo"))
    demo.run(out, Console(file=io.StringIO()), seed=0, steps=2)
    return out


@pytest.mark.slow
def test_train_and_evaluate_stages_write_run_and_results(trained):
    assert (trained / "run" / "step-00000002").is_dir() and (trained / "run" / "step-00000001").is_dir()
    result = demo_eval.run(trained, Console(file=io.StringIO()), seed=0)
    r = json.loads((trained / "eval" / "results.json").read_text())
    a = r["attributes"]
    assert set(a["per_attribute"]) == set(demo_eval.DRAWN) and a["split"] == "test" and a["images"] > 0
    for x in a["per_attribute"].values():
        assert 0 <= x["accuracy"] <= 100 and 50 <= x["baseline"] <= 100 and x["n"] == a["images"]
    assert a["mean_baseline"] == pytest.approx(np.mean([x["baseline"] for x in a["per_attribute"].values()]))
    assert isinstance(a["target_met"], bool)
    c = r["caption"]
    assert c["n"] == len(c["examples"]) > 0 and all(e["references"] for e in c["examples"])
    assert 0 <= c["bleu4"] <= 100 and c["cider"] >= 0
    v = r["vqgan"]
    assert v["vqgan"] == "tiny-f16" and v["images"] > 0 and math.isfinite(v["psnr"]) and 5 < v["psnr"] < 60
    md = (trained / "eval" / "results.md").read_text()
    for needle in ("BLEU-4", "CIDEr", "PSNR", "majority baseline", *demo_eval.DRAWN):
        assert needle in md
    assert result["PSNR"].endswith("dB")


@pytest.mark.slow
def test_samples_stage_writes_the_face_grid_and_the_scored_captions(trained):
    if not (trained / "eval" / "results.json").exists():
        demo_eval.run(trained, Console(file=io.StringIO()), seed=0)
    demo_generate.run(trained, Console(file=io.StringIO()), seed=0)
    grid = Image.open(trained / "samples" / "faces.png")
    T, n = demo_generate.TILE, len(demo_generate.LOOKS)
    assert grid.size == (demo_generate.LABEL_WIDTH + (1 + demo_generate.FACES_PER_PROMPT) * T, n * T)
    prompts = (trained / "samples" / "prompts.md").read_text()
    assert all(f"`{text}`" in prompts for _, text in demo_generate.prompts())
    caption = json.loads((trained / "eval" / "results.json").read_text())["caption"]
    table = (trained / "samples" / "captions.md").read_text().splitlines()
    assert len([x for x in table if x.startswith("| ") and "image" not in x]) == caption["n"]
