"""GPTFace round 1: the model, its masks, ITM pairing, the batch builder and the MILM + ITM loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from facecorpus.trainer.gptface import GPTFace, GPTFaceConfig, gptface_preset
from facecorpus.trainer.gptface_masking import (MaskingConfig, image_budget, image_mask_count, image_span_mask,
                                                span_length_probs, text_span_mask)
from scipy import ndimage

from facecorpus import vocab
from facecorpus.codes import FFHQ_F16, CodeGrid

GPTFACE_GRID = CodeGrid(8192, 21, 336)
CAPTIONS = ["a smiling young woman with blonde hair", "an old man with a grey beard and round glasses",
            "a child laughing", "she has heavy makeup, arched eyebrows and wavy hair",
            "a bald man wearing a hat", "a teenager with freckles and a ponytail"]


def tiny(grid: CodeGrid = FFHQ_F16) -> GPTFace:
    torch.manual_seed(0)
    return GPTFace(gptface_preset("gptface-tiny", grid))


# ---------------------------------------------------------------- vocabulary and model shape

def test_vocab_layout_is_a_function_of_the_codebook():
    assert vocab.vocab_size(1024) == vocab.VOCAB_SIZE == 31546
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
        model = GPTFace(gptface_preset("gptface-base", grid, d_ff=d_ff))
    assert model.num_params() == expected
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert blocks == 12 * (4 * 768 * 769 + 2 * 2 * 768 + 768 * 2 * d_ff + 2 * d_ff + d_ff * 768 + 768)


def test_presets_take_their_grid_from_a_code_grid():
    base = gptface_preset("gptface-base", GPTFACE_GRID)
    assert (base.n_layer, base.d_model, base.n_head, base.d_ff, base.max_text) == (12, 768, 12, 2048, 64)
    assert base.vocab_size == 38714 and base.n_positions == 1 + 441 + 1 + 64 and base.grid == GPTFACE_GRID
    small = gptface_preset("gptface-tiny", FFHQ_F16)
    assert (small.n_layer, small.d_model, small.n_positions, small.vocab_size) == (2, 64, 322, 31546)


@pytest.mark.parametrize("kw, message", [
    ({"glu": "relu"}, "model.glu='relu': choose one of gelu, silu, sigmoid"),
    ({"d_model": 100}, "model.d_model=100 is not divisible by model.n_head=12"),
    ({"codebook_size": 0}, "code grid codebook_size must be a positive integer, got 0"),
])
def test_config_refuses_bad_shapes(kw, message):
    with pytest.raises(ValueError, match=message):
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
