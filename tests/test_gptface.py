"""GPTFace round 1: the model, its masks, ITM pairing, the batch builder and the MILM + ITM loss."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from facecorpus import vocab
from facecorpus.codes import FFHQ_F16, CodeGrid
from facecorpus.trainer import generate as gen
from facecorpus.trainer.config import ConfigError, GPTFaceConfig, MaskingConfig, model_preset
from facecorpus.trainer.gptface import GPTFace, param_summary
from facecorpus.trainer.gptface_batch import (
    IGNORE,
    IMAGE,
    OTHER,
    TEXT,
    GPTFaceBatcher,
    Layout,
    itm_donors,
    modality_table,
    restrict_logits,
)
from facecorpus.trainer.gptface_loss import gptface_loss, summarize
from facecorpus.trainer.gptface_masking import (
    image_budget,
    image_mask_count,
    image_span_mask,
    span_length_probs,
    text_span_mask,
)
from facecorpus.trainer.sequences import SequenceBuilder, truncate_words

GPTFACE_GRID = CodeGrid(8192, 21, 336)
SMALL_GRID = CodeGrid(64, 4, 64)       # 16 codes: keeps the training test to a second or two
CAPTIONS = ["a smiling young woman with blonde hair", "an old man with a grey beard and round glasses",
            "a child laughing", "she has heavy makeup, arched eyebrows and wavy hair",
            "a bald man wearing a hat", "a teenager with freckles and a ponytail"]


def records(grid: CodeGrid, n: int, per_image: int = 2, seed: int = 0) -> list[dict]:
    """n records, `per_image` consecutive records (different captions) of each image."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, grid.codebook_size, grid.shape).astype(np.uint16) for _ in range(n)]
    return [{"key": f"test/{i}/caption/0", "image_id": f"test/{i // per_image}", "codes": images[i // per_image],
             "text": CAPTIONS[i % len(CAPTIONS)]} for i in range(n)]


def tiny(grid: CodeGrid = FFHQ_F16) -> GPTFace:
    torch.manual_seed(0)
    return GPTFace(model_preset("gptface-tiny", grid))


def batcher(grid: CodeGrid = FFHQ_F16, seed: int = 0, **masking) -> GPTFaceBatcher:
    return GPTFaceBatcher(Layout(grid), MaskingConfig(**masking), seed)


# ---------------------------------------------------------------- vocabulary and model shape

def test_vocab_layout_is_a_function_of_the_codebook():
    assert vocab.vocab_size(1024) == 31546
    assert vocab.vocab_size(8192) == 38714
    assert vocab.image_rows(8192) == slice(30522, 38714)


@pytest.mark.parametrize("grid, d_ff, expected", [
    (FFHQ_F16, 2048, 109_575_227),       # the preset: GLU width parameter-matched to FFN 3,072 (docs/gptface.md)
    (GPTFACE_GRID, 2048, 115_229_499),
    (FFHQ_F16, 3072, 137_911_355),       # the other reading: gate and value each 3,072 wide
    (GPTFACE_GRID, 3072, 143_565_627),
])
def test_parameter_counts_are_pinned(grid, d_ff, expected):
    with torch.device("meta"):   # shapes only: no 110M-parameter initialisation on the CPU
        model = GPTFace(dataclasses.replace(model_preset("gptface-base", grid), d_ff=d_ff))
    assert model.num_params() == expected and f"({expected:,}) over {grid.codebook_size:,} codes" in param_summary(model)
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert blocks == 12 * (4 * 768 * 769 + 2 * 2 * 768 + 768 * 2 * d_ff + 2 * d_ff + d_ff * 768 + 768)


def test_presets_take_their_grid_from_a_code_grid():
    base = model_preset("gptface-base", GPTFACE_GRID)
    assert (base.n_layer, base.d_model, base.n_head, base.d_ff, base.max_text) == (12, 768, 12, 2048, 64)
    assert base.vocab_size == 38714 and base.n_positions == 1 + 441 + 1 + 64 and base.grid == GPTFACE_GRID
    small = model_preset("gptface-tiny", FFHQ_F16)
    assert (small.n_layer, small.d_model, small.n_positions, small.vocab_size) == (2, 64, 322, 31546)


@pytest.mark.parametrize("kw, message", [
    ({"glu": "relu"}, "model.glu='relu': must be one of 'gelu', 'silu', 'sigmoid'"),
    ({"d_model": 100}, "model.d_model=100: must be divisible by model.n_head=12"),
    ({"codebook_size": -1}, "model.codebook_size=-1: must be >= 1, or 0 (from the shards' code grid)"),
    ({"codebook_size": 1024}, "model.codebook_size=1024: must be set with model.grid_side and model.resolution"),
    ({"codebook_size": 70000, "grid_side": 16, "resolution": 256}, "model: codebook of 70000 codes does not fit uint16"),
    ({"max_text": 0}, "model.max_text=0: must be >= 1"),
])
def test_config_refuses_bad_shapes(kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        GPTFaceConfig(**kw)


# ---------------------------------------------------------------- image span masks

@pytest.mark.parametrize("side", [16, 21])
@pytest.mark.parametrize("fraction", [0.004, 0.15, 0.4, 0.65, 1.0])
def test_span_mask_is_one_4_connected_region_of_exactly_the_budget(side, fraction):
    count = image_mask_count(fraction, side * side)
    for seed in range(5):
        mask = image_span_mask(side, count, np.random.default_rng(seed))
        _, regions = ndimage.label(mask)   # the default structure is the 4-neighbourhood
        assert mask.sum() == count and regions == 1


def test_span_masks_differ_by_seed_and_start_anywhere():
    masks = {image_span_mask(16, 38, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert len(masks) == 20
    cover = sum(image_span_mask(16, 1, np.random.default_rng(s)) for s in range(2000))
    assert cover.min() >= 1    # the seed code is uniform over the grid: every cell is hit in 2,000 draws


@pytest.mark.parametrize("step, budget", [(0, 0.15), (19_999, 0.15), (20_000, 0.16), (400_000, 0.35),
                                          (1_000_000, 0.65)])
def test_budget_schedule(step, budget):
    assert image_budget(step, MaskingConfig()) == pytest.approx(budget, abs=1e-12)


def test_budget_schedule_is_configurable():
    cfg = MaskingConfig(image_start=0.1, image_rise=0.05, image_every=10, image_max=0.3)
    assert [image_budget(s, cfg) for s in (0, 9, 10, 25, 10_000)] == pytest.approx([0.1, 0.1, 0.15, 0.2, 0.3])


def test_mask_counts_round_half_up_on_both_grids():
    assert [image_mask_count(0.15, 256), image_mask_count(0.65, 256)] == [38, 166]
    assert [image_mask_count(0.15, 441), image_mask_count(0.65, 441)] == [66, 287]
    assert image_mask_count(image_budget(700_000, MaskingConfig()), 441) == 221    # 50% of 441 = 220.5, half up


# ---------------------------------------------------------------- text span masks

def test_span_lengths_are_spanberts_clipped_geometric():
    probs = span_length_probs(0.2, 10)
    assert len(probs) == 10 and probs.sum() == pytest.approx(1)
    assert probs[0] == pytest.approx(0.2 / (1 - 0.8 ** 10)) and probs[9] / probs[0] == pytest.approx(0.8 ** 9)
    assert (np.arange(1, 11) * probs).sum() == pytest.approx(3.8, abs=0.01)   # SpanBERT's mean span, 3.8 words


def test_text_mask_hits_twenty_percent_in_whole_word_spans():
    ids = vocab.encode_text(" ".join(CAPTIONS) + " unbelievably photogenic")[:64]
    cont = np.array([vocab.wordpiece().id_to_token(i).startswith("##") for i in ids])
    runs = 0
    for seed in range(50):
        mask = text_span_mask(cont, MaskingConfig(), np.random.default_rng(seed))
        assert mask.sum() == math.ceil(0.2 * len(ids))
        starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
        ends = np.flatnonzero(mask & ~np.r_[mask[1:], False])
        assert not cont[starts].any()                      # every span starts on a word
        inside = [e for e in ends if e + 1 < len(ids) and cont[e + 1]]
        assert len(inside) <= 1                            # only the span the budget cut may end inside one
        runs += len(starts)
    assert runs < 50 * math.ceil(0.2 * len(ids)) / 2       # spans, not scattered single ids


def test_text_mask_replaces_with_mask_only():
    batch = batcher().build(records(FFHQ_F16, 8), step=0, first_position=0)
    lay = Layout(FFHQ_F16)
    for r in np.flatnonzero(batch.itm.numpy() == 1):
        truth = vocab.encode_text(CAPTIONS[r % len(CAPTIONS)])
        ids, tgt = batch.ids[r, lay.text_start:lay.text_start + len(truth)], batch.targets[r, lay.text_start:][:len(truth)]
        masked = ids == vocab.MASK
        assert int(masked.sum()) == math.ceil(0.2 * len(truth))
        assert torch.equal(torch.where(masked, tgt, ids), torch.tensor(truth))   # no random, no kept ids
        assert (tgt[~masked] == IGNORE).all()


def test_text_cut_to_64_ids_on_a_word_boundary_and_counted():
    recs = records(FFHQ_F16, 4)
    recs[0]["text"] = " ".join(["the"] + ["unbelievably"] * 30)   # un ##bel ##ie ##va ##bly
    full = vocab.encode_text(recs[0]["text"])
    kept, dropped = truncate_words(full, 64)
    assert len(kept) == 61 and dropped == len(full) - 61       # 64 would end inside the 13th word
    assert not vocab.wordpiece().id_to_token(full[61]).startswith("##")
    batch = batcher().build(recs, 0, 0)
    assert batch.stats == {"texts truncated": 1, "text ids dropped": len(full) - 61}
    assert batch.ids.shape[1] <= Layout(FFHQ_F16).length


# ---------------------------------------------------------------- ITM pairing

def test_itm_negatives_are_half_and_never_the_same_image():
    recs = records(FFHQ_F16, 12, per_image=3)   # three captions of each image
    image_ids, texts = [r["image_id"] for r in recs], [r["text"] for r in recs]
    for seed in range(200):
        donors = itm_donors(image_ids, texts, [r["key"] for r in recs], np.random.default_rng(seed))
        negatives = np.flatnonzero(donors != np.arange(12))
        assert len(negatives) == 6
        assert all(image_ids[d] != image_ids[r] and texts[d] != texts[r] for r, d in zip(negatives, donors[negatives]))
    batch = batcher().build(recs, 0, 0)
    assert batch.itm.sum() == 6 and batch.itm.dtype == torch.float32


def test_itm_with_one_image_says_why():
    recs = [dict(r, image_id="celeba/000001") for r in records(FFHQ_F16, 4)]
    with pytest.raises(ValueError, match=r"test/\d/caption/0: no ITM negative possible: all 4 records of the batch "
                                         r"show image 'celeba/000001'; ITM needs records of at least two images"):
        batcher().build(recs, 0, 0)


def test_milm_targets_only_on_matched_rows():
    batch = batcher().build(records(FFHQ_F16, 8), step=20_000, first_position=0)
    n_image = image_mask_count(0.16, 256)
    for r in range(8):
        image_targets = (batch.targets[r, 1:257] != IGNORE).sum()
        assert image_targets == (n_image if batch.itm[r] == 1 else 0)
        assert (batch.ids[r, 1:257] == vocab.MASK).sum() == n_image      # negatives are masked all the same
    assert batch.image_budget == pytest.approx(0.16)


# ---------------------------------------------------------------- batches: layout, errors, determinism

def test_batch_layout_on_the_gptface_grid():
    recs = records(GPTFACE_GRID, 4)
    batch = batcher(GPTFACE_GRID).build(recs, 0, 0)
    ids, mod = batch.ids, batch.modality
    assert (ids[:, 0] == vocab.CLS).all() and (ids[:, 442] == vocab.SEP).all()
    image = ids[:, 1:442]
    assert ((image == vocab.MASK) | ((image >= 30522) & (image < 38714))).all()
    assert (mod[:, 1:442] == IMAGE).all() and (mod[:, [0, 442]] == OTHER).all()
    assert torch.equal(mod[:, 443:] == TEXT, ~batch.pad[:, 443:]) and (mod[batch.pad] == OTHER).all()
    assert batch.padded and batch.ids.shape[1] % 8 == 0
    unmasked = (image != vocab.MASK)[0]
    assert torch.equal(image[0][unmasked] - 30522, torch.from_numpy(recs[0]["codes"].reshape(-1).astype(np.int64))[unmasked])


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("image_id"), "test/0/caption/0: record lacks image_id"),
    (lambda r: r.update(codes=r["codes"][:15]), r"test/0/caption/0: codes are uint16 \(15, 16\), expected uint16 \(16, 16\)"),
    (lambda r: r.update(codes=r["codes"] + 1024), "test/0/caption/0: code .* is outside the codebook of 1024"),
    (lambda r: r.update(text="  "), "test/0/caption/0: empty text"),
])
def test_bad_records_are_named(change, message):
    recs = records(FFHQ_F16, 4)
    change(recs[0])
    with pytest.raises(ValueError, match=message):
        batcher().build(recs, 0, 0)


def test_batches_are_deterministic_and_per_sample():
    recs = records(FFHQ_F16, 8)
    a, b = batcher(seed=3).build(recs, 7, 16), batcher(seed=3).build(recs, 7, 16)
    for name in ("ids", "pad", "targets", "index", "modality", "itm"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    for other in (batcher(seed=4).build(recs, 7, 16), batcher(seed=3).build(recs, 8, 16)):
        assert not torch.equal(a.ids[:, :257], other.ids[:, :257])
    # A sample's image mask is a function of (seed, step, position) alone: the same whatever shares its batch.
    tail = batcher(seed=3).build(recs[4:], 7, 20)
    assert torch.equal(tail.ids[:, :257] == vocab.MASK, a.ids[4:, :257] == vocab.MASK)


# ---------------------------------------------------------------- modality logit masks

def test_one_modality_mask_and_one_word_cut_serve_both_families():
    table = modality_table(1024)
    assert torch.equal(table[IMAGE], gen.allowed_ids("image", 1024)) and torch.equal(table[TEXT], gen.allowed_ids("text", 1024))
    talk2face_text = gen.allowed_ids("text", 1024, sep=True)          # Talk2Face's targets end with [SEP]
    assert torch.equal(talk2face_text.nonzero().squeeze(1), torch.tensor([vocab.SEP, *range(vocab.FIRST_WORDPIECE, 30522)]))
    text = " ".join(["the"] + ["unbelievably"] * 30)
    builder = SequenceBuilder(grid=FFHQ_F16)
    assert builder.caption(text) == truncate_words(vocab.encode_text(text), builder.budget)[0]


@pytest.mark.parametrize("grid", [FFHQ_F16, GPTFACE_GRID])
def test_logit_mask_keeps_each_modality_to_its_ids(grid):
    V = vocab.vocab_size(grid.codebook_size)
    assert modality_table(grid.codebook_size).shape == (3, V)
    logits = torch.randn(64, V, generator=torch.Generator().manual_seed(0))
    logits[:32, :30522] += 1000.0     # the forbidden side is far more likely
    logits[32:, 30522:] += 1000.0
    modality = torch.tensor([IMAGE] * 32 + [TEXT] * 32)
    best = restrict_logits(logits, modality, grid.codebook_size).argmax(-1)
    assert ((best[:32] >= 30522) & (best[:32] < V)).all()
    assert ((best[32:] >= 999) & (best[32:] < 30522)).all()


# ---------------------------------------------------------------- the model and the loss

def test_loss_at_init_is_log_vocab_and_log_two():
    model = tiny().eval()
    out = gptface_loss(model, batcher().build(records(FFHQ_F16, 24), 0, 0))
    assert out.milm.item() == pytest.approx(math.log(31546), abs=0.05)
    assert out.itm.item() == pytest.approx(math.log(2), abs=0.05)
    logged = summarize(out.stats)
    assert logged["milm_image"] == pytest.approx(math.log(31546), abs=0.05)
    assert logged["milm_text"] == pytest.approx(math.log(31546), abs=0.15)   # ~20 positions: a noisier mean
    assert logged["image_masked"] == 12 * 38 and logged["text_masked"] > 0   # MILM on the 12 matched rows only
    assert out.loss.item() == pytest.approx(out.milm.item() + out.itm.item())


def test_tiny_model_learns_a_fixed_batch(one_thread):
    model = tiny(SMALL_GRID).train()
    batch = batcher(SMALL_GRID).build(records(SMALL_GRID, 8), 0, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        out = gptface_loss(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else (out.milm.item(), out.itm.item())
    assert out.milm.item() < 0.5 * first[0] and out.itm.item() < 0.5 * first[1]


def test_padding_never_changes_the_outputs_of_other_positions():
    model = tiny().eval()
    ids = torch.randint(1000, 30000, (1, 300), generator=torch.Generator().manual_seed(0))
    alone = model.hidden(ids)                                        # no padding: no mask at all
    padded = torch.cat([ids, torch.zeros(1, 20, dtype=torch.long)], 1)
    pad = torch.zeros(1, 320, dtype=torch.bool)
    pad[0, 300:] = True
    with_pad = model.hidden(padded, pad)
    torch.testing.assert_close(with_pad[:, :300], alone, rtol=1e-5, atol=1e-5)
    other = padded.clone()
    other[0, 300:] = 31000                                           # whatever sits in the padding
    torch.testing.assert_close(model.hidden(other, pad)[:, :300], with_pad[:, :300], rtol=0, atol=0)


def test_logits_at_index_equal_the_full_logits():
    model = tiny(SMALL_GRID).eval()
    batch = batcher(SMALL_GRID).build(records(SMALL_GRID, 4), 0, 0).to("cpu")
    full = model(batch.ids, batch.attention_pad)
    part = model(batch.ids, batch.attention_pad, batch.index)
    torch.testing.assert_close(part.logits, full.logits.reshape(-1, full.logits.shape[-1])[batch.index])
    torch.testing.assert_close(part.itm, full.itm)
    assert full.itm.shape == (4,)
