"""The four tasks exactly as docs/design.md writes them, truncation and attribute subsets."""

from __future__ import annotations

import numpy as np
import pytest
from facecorpus.trainer.sequences import TASKS, SequenceBuilder, collate, text_budget

from facecorpus import textproto, vocab

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
