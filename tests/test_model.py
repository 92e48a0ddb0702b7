"""The Talk2Face model: prefix-LM mask, KV cache, released LayerNorm, presets, config overrides."""

from __future__ import annotations

import pytest
import torch

from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import config as C
from facecorpus.trainer.model import ReleasedLayerNorm, Talk2Face, prefix_lm_mask


def tiny(**kw) -> Talk2Face:
    torch.manual_seed(0)
    cfg = C.model_preset("tiny", FFHQ_F16)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Talk2Face(cfg).eval()


def test_mask_hand_built_six_tokens():
    seg = torch.tensor([[1, 1, 1, 2, 2, 0]])
    pos = torch.arange(6)
    expected = torch.tensor([
        # keys: 0  1  2  3  4  5(pad)
        [1, 1, 1, 0, 0, 0],   # segment-1 queries see all of segment 1 and no target
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],   # target queries see segment 1 and their own left context
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],   # a pad query sees the same; nothing ever sees padding
    ], dtype=torch.bool)
    assert torch.equal(prefix_lm_mask(seg, pos, pos)[0, 0], expected)


@pytest.mark.parametrize("layernorm", ["torch", "released"])
def test_target_tokens_never_change_segment1_outputs(layernorm):
    model = tiny(layernorm=layernorm)
    ids = torch.randint(1000, 2000, (1, 6))
    seg = torch.tensor([[1, 1, 1, 2, 2, 0]])
    base = model(ids, seg)
    for pos in (3, 4, 5):
        changed = ids.clone()
        changed[0, pos] = 31000
        out = model(changed, seg)
        torch.testing.assert_close(out[0, :3], base[0, :3], rtol=0, atol=0)   # masked keys weigh exactly 0
        if pos == 3:
            assert not torch.allclose(out[0, 4], base[0, 4])   # later targets do see it


def test_cache_matches_full_forward():
    model = tiny(n_layer=3)
    torch.manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 14))
    seg = torch.tensor([[1] * 8 + [2] * 6, [1] * 6 + [0] * 2 + [2] * 6])   # row 2: padding inside the prefix
    full = model(ids, seg)
    cache = model.new_cache(2, 20)
    parts = [model(ids[:, :8], seg[:, :8], cache)]   # prefill: prefix mask over its own tokens
    parts.append(model(ids[:, 8:11], seg[:, 8:11], cache))   # several new tokens at once
    parts += [model(ids[:, i:i + 1], seg[:, i:i + 1], cache) for i in range(11, 14)]
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def test_cache_overflow_is_refused():
    model = tiny()
    cache = model.new_cache(1, 4)
    with pytest.raises(ValueError, match="cache holds 4 ids; 5 requested"):
        model(torch.ones(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.long), cache)


def test_released_layernorm_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    ln = ReleasedLayerNorm(8, 1e-6)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).sum(-1, keepdim=True).div(7).sqrt()   # unbiased, eps outside the sqrt
    torch.testing.assert_close(ln(x), ln.weight * (x - mean) / (std + 1e-6) + ln.bias)
    assert not torch.allclose(ln(x), torch.nn.functional.layer_norm(x, (8,), ln.weight, ln.bias, 1e-6))


def test_base_preset_is_the_released_shape():
    cfg = C.model_preset("talk2face-base", FFHQ_F16)
    with torch.device("meta"):
        model = Talk2Face(cfg)
    assert model.num_params() == 134_299_392            # 134.3M, untied head
    names = dict(model.named_parameters())
    assert names["embed.word.weight"].shape == (31546, 768) and names["embed.pos.weight"].shape == (1024, 768)
    assert names["embed.seg.weight"].shape == (3, 768) and names["lm_head.weight"].shape == (31546, 768)
    assert {"blocks.11.attn.q.bias", "blocks.0.ff.fc1.weight", "blocks.0.ln2.weight", "ln_f.bias"} <= set(names)
    assert "lm_head.bias" not in names and names["lm_head.weight"] is not names["embed.word.weight"]


def test_loss_only_where_targets_exist():
    model = tiny()
    ids = torch.randint(0, 100, (2, 6))
    seg = torch.tensor([[1, 1, 1, 2, 2, 0]] * 2)
    targets = torch.tensor([[-1, -1, 5, 6, -1, -1], [-1, -1, 7, 8, -1, -1]])
    losses = model(ids, seg, targets=targets)
    logits = model(ids, seg)
    ref = torch.nn.functional.cross_entropy(logits[:, 2:4].reshape(-1, logits.shape[-1]), targets[:, 2:4].reshape(-1), reduction="none")
    torch.testing.assert_close(losses, ref)


def test_overrides_keep_types_and_name_existing_keys():
    cfg = C.apply_overrides(C.RunConfig.from_preset("tiny"), ["--train.lr=1e-4", "--max_steps=7", "--train.compile=true"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.compile) == (1e-4, 7, True)
    with pytest.raises(ValueError, match=r"--train.lrr: no such config key"):
        C.apply_overrides(cfg, ["--train.lrr=1"])
    with pytest.raises(ValueError, match=r"--train.max_steps='1.5': expected int"):
        C.apply_overrides(cfg, ["--train.max_steps=1.5"])
    with pytest.raises(ValueError, match=r"--nope: no such config key"):
        C.apply_overrides(cfg, ["--nope=1"])
    with pytest.raises(ValueError, match=r"data.micro_batch=6: must be a multiple of 4"):
        C.apply_overrides(cfg, ["--data.micro_batch=6"])
    assert C.RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_efficient_kernel_takes_the_boolean_mask_in_bf16():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny(dropout=0.1).cuda().train()
    ids = torch.randint(0, model.cfg.vocab_size, (4, 336), device="cuda")
    seg = torch.ones_like(ids)
    seg[:, 262:] = 2
    seg[:, 320:] = 0
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        losses = model(ids, seg, targets=torch.where(seg == 2, ids, -1))
    losses.mean().backward()
    assert torch.isfinite(losses).all() and model.embed.word.weight.grad is not None
