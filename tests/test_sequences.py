"""The four tasks exactly as docs/design.md writes them, truncation and attribute subsets."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from facecorpus import textproto, vocab
from facecorpus.codes import FFHQ_F16, CodeGrid
from facecorpus.trainer.config import RunConfig
from facecorpus.trainer.sequences import TASKS, SequenceBuilder, collate, default_seq_len, text_budget

CODES = np.arange(256, dtype=np.uint16).reshape(16, 16) * 4   # codes 0..1020


def test_budget_is_71_at_334():
    assert text_budget(334) == 71


@pytest.mark.parametrize("task, prompt", [(0, "to caption"), (1, "to image"), (2, "to attributes"), (3, "to image")])
def test_layout_of_each_task(task, prompt):
    b = SequenceBuilder(334)
    text = vocab.encode_text("a smiling woman")
    inst = b.build(task, CODES, text)
    p = vocab.encode_text(prompt)
    image = [30522 + 4 * i for i in range(256)]
    prefix, target = (image, text) if TASKS[task].startswith("face2") else (text, image)
    assert inst.ids == [vocab.CLS, *p, vocab.SEP, *prefix, vocab.SEP, *target, vocab.SEP]
    n1 = len(p) + len(prefix) + 3
    assert inst.seg == [1] * n1 + [2] * (len(target) + 1)
    assert inst.task == task


def test_prompt_ids_match_the_reference():
    assert vocab.encode_text("to caption") == [2000, 14408, 3258]   # to capt ##ion
    assert len(vocab.encode_text("to image")) == len(vocab.encode_text("to attributes")) == 2


def test_long_caption_cut_on_a_word_boundary_and_counted():
    b = SequenceBuilder(334)
    # "unbelievably" is several WordPieces; repeat it so a cut at 71 would fall inside a word.
    text = " ".join(["the", "a"] + ["unbelievably"] * 60)   # un ##bel ##ie ##va ##bly
    full = vocab.encode_text(text)
    ids = b.caption(text)
    assert len(full) > 71 and len(ids) == 67                # 71 would end inside the 14th word
    assert full[len(ids)] not in {i for i in full if vocab.wordpiece().id_to_token(i).startswith("##")}
    assert b.stats["captions truncated"] == 1 and b.stats["caption ids dropped"] == len(full) - len(ids)
    for task in (0, 1):
        assert len(b.build(task, CODES, ids).ids) <= 334


def test_short_caption_untouched():
    b = SequenceBuilder(334)
    assert b.caption("a man with a beard") == vocab.encode_text("a man with a beard")
    assert not b.stats


def test_attribute_subset_fits_is_random_and_parses_back():
    labels = {textproto.attribute_name(f"Attribute_Number_{i}"): bool(i % 2) for i in range(40)}
    text = textproto.to_text("celeba", labels)
    b = SequenceBuilder(334)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(5):
        ids = b.attributes(text, rng)
        assert len(ids) <= 71
        dataset, got = textproto.from_text(vocab.decode_text(ids).replace(" : ", ": ").replace(" ;", ";"))
        assert dataset == "celeba" and got and all(labels[k] == v for k, v in got.items())
        seen.add(tuple(got))
    assert len(seen) == 5                                   # random subsets in random order
    assert b.stats["attribute texts subset"] == 5


def test_short_attribute_text_keeps_every_pair_in_some_order():
    b = SequenceBuilder(334)
    text = "fairface age: 10-19; gender: male; race: east asian"
    ids = b.attributes(text, np.random.default_rng(3))
    assert sorted(ids) == sorted(vocab.encode_text(text))  # all pairs, as WordPieces of the same text
    assert not b.stats


def test_malformed_attribute_text_names_the_sample():
    with pytest.raises(ValueError, match=r"celeba-1-attributes-0: attribute text"):
        SequenceBuilder(334).attributes("celeba gender", np.random.default_rng(0), "celeba-1-attributes-0")


@pytest.mark.parametrize("loss_on", ["target", "all"])
def test_collate_targets(loss_on):
    b = SequenceBuilder(334)
    inst = b.build(0, CODES, vocab.encode_text("a man"))   # 263 + 2 ids, target "a man [SEP]"
    batch = collate([inst], 272, loss_on)
    t = batch["targets"][0]
    n = len(inst.ids)
    assert batch["ids"].shape == (1, 272) and int((batch["seg"][0] == 0).sum()) == 272 - n
    if loss_on == "target":
        assert t[n - 4:n - 1].tolist() == inst.ids[n - 3:] and int((t >= 0).sum()) == 3
    else:
        assert int((t >= 0).sum()) == n - 1 and t[:n - 1].tolist() == inst.ids[1:]


def test_sizes_follow_the_code_grid():
    # Talk2Face's FFHQ f16: 16 x 16 codes of 1,024 -> 1 + 3 + 1 + 256 + 1 + 71 + 1 = 334 ids, 31,546-id vocabulary.
    assert default_seq_len(FFHQ_F16) == 334 and SequenceBuilder().seq_len == 334
    assert vocab.vocab_size(FFHQ_F16.codebook_size) == 31546
    big = CodeGrid(codebook_size=8192, side=21, resolution=336)
    b = SequenceBuilder(grid=big)
    assert b.seq_len == 1 + 3 + 1 + 441 + 1 + 71 + 1 and b.budget == 71
    codes = np.arange(441, dtype=np.uint16).reshape(21, 21) * 18        # codes up to 7,920
    for task in range(4):
        inst = b.build(task, codes, vocab.encode_text("a man"))
        image = [i for i in inst.ids if i >= vocab.IMAGE_OFFSET]
        assert len(image) == 441 and max(image) == vocab.IMAGE_OFFSET + 7920 < vocab.vocab_size(8192)
    with pytest.raises(ValueError, match=r"an image needs 441 codes in \[0, 8192\), got 256"):
        b.build(0, CODES, [])
    with pytest.raises(ValueError, match=r"data.seq_len=334: must be >= 456 \(the longest prompt, 441 image codes and at least 8 text ids\)"):
        SequenceBuilder(334, big)


def test_sized_config_takes_vocabulary_and_length_from_the_grid():
    big = CodeGrid(codebook_size=8192, side=21, resolution=336)
    cfg = RunConfig.from_preset("tiny").sized(big)
    assert (cfg.model.vocab_size, cfg.data.seq_len, cfg.grid) == (30522 + 8192, 519, big)
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg              # the checkpoint keeps the grid
    assert RunConfig.from_preset("tiny").sized(FFHQ_F16).data.seq_len == 334
    with pytest.raises(ValueError, match=r"model.vocab_size=31546: must be 38714 \(30,522 \+ the shards' 8192 codes\)"):
        cfg_f16 = RunConfig.from_preset("tiny").sized(FFHQ_F16)
        dataclasses.replace(cfg_f16, grid=None).sized(big)
    with pytest.raises(ValueError, match=r"trained on codes of a .* grid; the shards have"):
        cfg.sized(FFHQ_F16)


def test_generation_cuts_texts_on_the_same_boundaries_as_training():
    b = SequenceBuilder(334)
    text = " ".join(["the", "a"] + ["unbelievably"] * 60)
    ids, note = b.prompt_text(text)
    assert ids == SequenceBuilder(334).caption(text) and note.startswith("cut to 67 of")
    pairs = "; ".join(f"attribute number {i}: false" for i in range(30))
    ids, note = b.prompt_text(f"celeba {pairs}")
    assert ids == SequenceBuilder(334).attributes(f"celeba {pairs}", None)      # no rng: the first pairs, in order
    assert vocab.decode_text(ids).startswith("celeba attribute number 0 : false ; attribute number 1 : false")
    assert note.startswith("kept the first ") and note.endswith("of 30 key-value pairs: the text budget is 71 ids")
    assert b.prompt_text("celebrity with a hat: smiling")[1] is None          # not a dataset's protocol: a caption
