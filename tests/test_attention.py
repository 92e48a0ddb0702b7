"""The fast attention paths, proven on CPU: FlexAttention's block mask is the SDPA mask position by
position and gives the same logits and losses (both LayerNorm variants, the released one included);
packed rows give every sequence the loss it gets alone. torch 2.13's flex_attention runs eagerly on
CPU (the unfused reference: it materializes the scores), so the logits are compared too, not only the
mask; it has no backward on CPU, so gradients through the flex kernel are compared on a GPU only
(benchmarks/gpu.sh)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import config as C
from facecorpus.trainer.model import Talk2Face, prefix_lm_block_mask, prefix_lm_mask
from facecorpus.trainer.packing import first_fit, pack
from facecorpus.trainer.sequences import collate
from twinkit import instances


def model(attention: str, layernorm: str = "torch", seed: int = 0) -> Talk2Face:
    torch.manual_seed(seed)
    cfg = C.model_preset("tiny", FFHQ_F16)
    cfg.attention, cfg.layernorm = attention, layernorm
    return Talk2Face(cfg).eval()


def dense(block_mask, B: int, T: int) -> torch.Tensor:
    return create_mask(block_mask.mask_mod, B, 1, T, T, device="cpu")


def test_block_mask_is_the_sdpa_mask_position_by_position():
    batch = collate(instances(8, 0), 64)
    seg = batch["seg"]
    pos = torch.arange(seg.shape[1])
    assert torch.equal(dense(prefix_lm_block_mask(seg), *seg.shape), prefix_lm_mask(seg, pos, pos))
    packed = pack(instances(8, 1), 160)
    seg, doc = packed["seg"], packed["doc"]
    pos = torch.arange(seg.shape[1])
    want = prefix_lm_mask(seg, pos, pos, doc)
    assert torch.equal(dense(prefix_lm_block_mask(seg, doc), *seg.shape), want)
    assert want.any(-1).all()  # every query sees something: no NaN row for SDPA
    first = packed["doc"][0] == 1
    assert not want[0, 0][first][:, ~first].any()  # the first document sees nothing of the others


@pytest.mark.parametrize("layernorm", ["torch", "released"])
def test_flex_and_sdpa_give_the_same_logits_and_losses(layernorm):
    """`released`: the released weights' LayerNorm (unbiased std, eps outside the sqrt) keeps its
    exact math under the new path: the SDPA run here is today's path."""
    batch = collate(instances(8, 2), 64)
    ids, seg, targets, index = batch["ids"], batch["seg"], batch["targets"], batch["target_index"]
    sdpa, fast = model("sdpa", layernorm), model("flex", layernorm)
    with torch.no_grad():  # FlexAttention itself runs only without gradients on CPU (torch 2.13)
        torch.testing.assert_close(fast(ids, seg), sdpa(ids, seg), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(ids, seg, targets=targets, target_index=index),
                                   sdpa(ids, seg, targets=targets, target_index=index), rtol=1e-5, atol=1e-5)


def test_flex_trains_on_cpu_through_the_same_mask_and_without_attention_dropout():
    """No FlexAttention backward on CPU: a training forward runs the mask through SDPA, and a flex
    model never drops attention probabilities (its GPU kernel cannot), so both give one function."""
    batch = collate(instances(4, 4), 64)
    cfg = C.model_preset("tiny", FFHQ_F16)
    cfg.attention, cfg.dropout = "flex", 0.5
    torch.manual_seed(0)
    m = Talk2Face(cfg).train()
    assert all(block.attn.dropout == 0.0 for block in m.blocks)
    m.embed.drop.p = m.blocks[0].drop.p = m.blocks[1].drop.p = 0.0   # leave only attention dropout, if any
    losses = m(batch["ids"], batch["seg"], targets=batch["targets"], target_index=batch["target_index"])
    losses.mean().backward()
    with torch.no_grad():
        again = m(batch["ids"], batch["seg"], targets=batch["targets"], target_index=batch["target_index"])
    torch.testing.assert_close(again, losses.detach(), rtol=1e-5, atol=1e-5)
    assert m.blocks[0].attn.q.weight.grad is not None


def test_flex_is_a_checked_config_choice():
    cfg = C.apply_overrides(C.RunConfig.from_preset("tiny"), ["--model.attention=flex"])
    assert cfg.model.attention == "flex" and C.RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(C.ConfigError, match=r"model.attention='xformers': must be one of 'sdpa', 'flex'"):
        C.apply_overrides(cfg, ["--model.attention=xformers"])
    old = cfg.to_dict()
    del old["model"]["attention"]  # a config saved before the choice existed
    assert C.RunConfig.from_dict(old).model.attention == "sdpa"


def per_sequence(losses: torch.Tensor, seq_of_target: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float64).scatter_add(0, seq_of_target, losses.double())


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("loss_on", ["target", "all"])
def test_packed_rows_give_each_sequence_its_own_loss(attention, loss_on):
    insts = instances(12, 3)
    alone = collate(insts, 64, loss_on)
    packed = pack(insts, 200, loss_on, rows=5)
    layout = first_fit([len(i.ids) for i in insts], 200)
    assert packed["ids"].shape == (5, 200) and len(layout) < 5   # an empty row pads to the fixed count
    assert alone["target_index"].numel() == packed["target_index"].numel()   # no target across documents
    m = model(attention)
    want = m(alone["ids"], alone["seg"], targets=alone["targets"], target_index=alone["target_index"])
    got = m(packed["ids"], packed["seg"], targets=packed["targets"], target_index=packed["target_index"],
            pos=packed["pos"], doc=packed["doc"])
    # Which sequence each target belongs to: its row (alone), or its row's document (packed).
    seq_alone = alone["target_index"] // 64
    where = packed["target_index"]
    doc_of = packed["doc"].view(-1)[where] - 1
    seq_packed = torch.tensor([layout[r][d] for r, d in zip((where // 200).tolist(), doc_of.tolist())])
    torch.testing.assert_close(per_sequence(got, seq_packed, 12), per_sequence(want, seq_alone, 12),
                               rtol=1e-5, atol=1e-4)
    task_alone = alone["task"].index_select(0, seq_alone)
    assert torch.equal(torch.bincount(packed["target_task"], minlength=4), torch.bincount(task_alone, minlength=4))


def test_first_fit_keeps_order_and_refuses_what_cannot_fit():
    assert first_fit([5, 4, 3, 2, 6], 8) == [[0, 2], [1, 3], [4]]
    with pytest.raises(ValueError, match="a sequence of 9 ids does not fit in a packed row of 8"):
        first_fit([3, 9], 8)
