"""GPTFace round 1: the model, its masks, ITM pairing, the batch builder and the MILM + ITM loss."""

from __future__ import annotations

import pytest
import torch
from facecorpus.trainer.gptface import GPTFace, GPTFaceConfig, gptface_preset

from facecorpus import vocab
from facecorpus.codes import FFHQ_F16, CodeGrid

GPTFACE_GRID = CodeGrid(8192, 21, 336)


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
