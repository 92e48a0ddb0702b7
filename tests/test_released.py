"""The released Talk2Face weights: a TencentPretrain-layout state dict loads strictly into
talk2face-base, and our logits equal an independent, written-out implementation of the release's math.

The reference below is deliberately plain (no code shared with trainer/model.py): the release's
LayerNorm (unbiased std, eps 1e-6 outside the square root), tanh-GELU, an additive -10000 prefix mask
built from segment ids, pre-LN blocks, an untied head; everything named as in talk2face.bin.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from facecorpus import vocab
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import generate, released
from facecorpus.trainer.sequences import SequenceBuilder

pytestmark = pytest.mark.usefixtures("one_thread")


V, POS = 31546, 1024
# preset -> (layers, hidden, heads, feed-forward): the release's shape, and the tiny preset for fast tests
SIZES = {"talk2face-base": (12, 768, 12, 3072), "tiny": (2, 64, 2, 256)}


def release_state_dict(preset: str = "talk2face-base", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the names and shapes of docs/talk2face-release.md (LayerNorms non-trivial)."""
    L, D, _, FF = SIZES[preset]
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = {"embedding.word.embedding.weight": r(V, D), "embedding.pos.embedding.weight": r(POS, D),
          "embedding.seg.embedding.weight": r(3, D)}
    for i in range(L):
        p = f"encoder.transformer.{i}."
        for j in range(3):
            sd[p + f"self_attn.linear_layers.{j}.weight"], sd[p + f"self_attn.linear_layers.{j}.bias"] = r(D, D), r(D)
        sd[p + "self_attn.final_linear.weight"], sd[p + "self_attn.final_linear.bias"] = r(D, D), r(D)
        sd[p + "feed_forward.linear_1.weight"], sd[p + "feed_forward.linear_1.bias"] = r(FF, D), r(FF)
        sd[p + "feed_forward.linear_2.weight"], sd[p + "feed_forward.linear_2.bias"] = r(D, FF), r(D)
        for n in (1, 2):
            sd[p + f"layer_norm_{n}.gamma"], sd[p + f"layer_norm_{n}.beta"] = r(D, std=0.1, mean=1.0), r(D, std=0.1)
    sd["encoder.layer_norm.gamma"], sd["encoder.layer_norm.beta"] = r(D, std=0.1, mean=1.0), r(D, std=0.1)
    sd["target.lm.output_layer.weight"] = r(V, D)
    return sd


def ref_layer_norm(x, gamma, beta, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)  # unbiased, as torch.Tensor.std defaults to
    return gamma * (x - mean) / (std + eps) + beta


def ref_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


def ref_logits(sd: dict, ids: torch.Tensor, seg: torch.Tensor, H: int) -> torch.Tensor:
    """The release's forward pass written out: [B,T] ids and segments, H heads -> [B,T,V] logits."""
    b, t = ids.shape
    D = sd["embedding.word.embedding.weight"].shape[1]
    L = sum(1 for k in sd if k.endswith("layer_norm_1.gamma"))
    h = sd["embedding.word.embedding.weight"][ids] + sd["embedding.pos.embedding.weight"][torch.arange(t)][None] \
        + sd["embedding.seg.embedding.weight"][seg]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    visible = (seg[:, None, :] == 1) | ((seg[:, None, :] == 2) & (j <= i)[None])
    mask = (1.0 - visible.float())[:, None] * -10000.0            # B x 1 x T x T, additive
    for n in range(L):
        p = f"encoder.transformer.{n}."

        def lin(x, name, p=p):
            return x @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

        x = ref_layer_norm(h, sd[p + "layer_norm_1.gamma"], sd[p + "layer_norm_1.beta"])
        q, k, v = (lin(x, f"self_attn.linear_layers.{m}").view(b, t, H, D // H).transpose(1, 2) for m in range(3))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // H) + mask
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D)
        h = h + lin(ctx, "self_attn.final_linear")
        x = ref_layer_norm(h, sd[p + "layer_norm_2.gamma"], sd[p + "layer_norm_2.beta"])
        h = h + lin(ref_gelu(lin(x, "feed_forward.linear_1")), "feed_forward.linear_2")
    h = ref_layer_norm(h, sd["encoder.layer_norm.gamma"], sd["encoder.layer_norm.beta"])
    return h @ sd["target.lm.output_layer.weight"].T


def three_prompts() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """One sequence per prompt as generation builds it, with a few target ids (segment 2) appended."""
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 1024, (256,), generator=g)   # the release's FFHQ f16 grid: 16 x 16 of 1,024 codes
    builder = SequenceBuilder(grid=FFHQ_F16)
    to_image = generate.text_prefix(builder, "a smiling young woman with wavy blond hair")[0]
    cases = [
        ("to-image", to_image, vocab.image_ids(torch.randint(0, 1024, (8,), generator=g).tolist())),
        ("to-caption", generate.image_prefix(builder, "to-caption", codes), vocab.encode_text("this woman has")),
        ("to-attributes", generate.image_prefix(builder, "to-attributes", codes), vocab.encode_text("fairface race: white")),
    ]
    out = []
    for name, prefix, target in cases:
        ids = torch.tensor([prefix + target])
        seg = torch.tensor([[1] * len(prefix) + [2] * len(target)])
        out.append((name, ids, seg))
    return out


def check_three_prompts(preset: str, sd: dict, model) -> None:
    L, D, H, _ = SIZES[preset]
    assert model.cfg.layernorm == "released" and (model.cfg.n_layer, model.cfg.d_model) == (L, D)
    with torch.no_grad():
        for name, ids, seg in three_prompts():
            ours, ref = model(ids, seg), ref_logits(sd, ids, seg, H)
            err = (ours - ref).abs().max().item()
            assert err < 1e-5, f"{preset} {name}: max |ours - reference| = {err:.2e}"


@pytest.fixture(scope="module")
def sd():
    return release_state_dict("tiny")


@pytest.fixture(scope="module")
def model(sd):
    return released.load_released({"module." + k: v for k, v in sd.items()}, preset="tiny")


def test_tiny_release_layout_matches_the_written_out_math(sd, model):
    check_three_prompts("tiny", sd, model)


@pytest.mark.slow
def test_talk2face_base_loads_strictly_and_matches_the_written_out_math():
    # The release's own shape (134.3M parameters), with the DDP prefix; about 30 s on 2 cores.
    torch.set_num_threads(os.cpu_count() or 1)  # big matmuls do use a second core
    sd = release_state_dict("talk2face-base")
    model = released.load_released({"module." + k: v for k, v in sd.items()})
    assert sum(p.numel() for p in model.parameters()) == 134_299_392  # 134.3M, the reference page's count
    check_three_prompts("talk2face-base", sd, model)


def test_cached_decoding_matches_the_reference_at_every_step(sd, model):
    """A target decoded one token at a time through the cache sees what the full pass sees."""
    _, ids, seg = three_prompts()[1]
    p = int((seg == 1).sum())
    cache = model.new_cache(1, ids.shape[1])
    with torch.no_grad():
        steps = [model(ids[:, :p], seg[:, :p], cache=cache)[:, -1]]
        steps += [model(ids[:, t:t + 1], seg[:, t:t + 1], cache=cache)[:, -1] for t in range(p, ids.shape[1] - 1)]
        ref = ref_logits(sd, ids, seg, SIZES["tiny"][2])[0, p - 1:-1]
    assert (torch.stack(steps, 1)[0] - ref).abs().max().item() < 1e-5


def test_without_module_prefix_too(sd):
    # A plain state dict (no DDP prefix) maps to the same names; checked on the name table alone,
    # so this test needs no second 134M-parameter model.
    converted = released.convert(sd)
    assert len(converted) == len(sd) == 3 + 16 * SIZES["tiny"][0] + 3
    assert converted["blocks.1.attn.k.bias"] is sd["encoder.transformer.1.self_attn.linear_layers.1.bias"]
    assert converted["blocks.0.ln2.weight"] is sd["encoder.transformer.0.layer_norm_2.gamma"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("encoder.transformer.1.feed_forward.linear_2.bias"), "missing"),
    (lambda d: d.__setitem__("encoder.transformer.0.self_attn.linear_layers.3.weight", torch.zeros(1)), "not in the"),
    (lambda d: d.__setitem__("encoder.transformer.0.self_attn.linear_layers.0.gamma", torch.zeros(1)), "not in the"),
    (lambda d: d.__setitem__("encoder.transformer.2.layer_norm_1.gamma", torch.zeros(64)), "no place"),
    (lambda d: d.__setitem__("embedding.pos.embedding.weight", torch.zeros(512, 64)), "shape"),
])
def test_strict_loading_names_the_problem(sd, change, message):
    broken = dict(sd)
    change(broken)
    with pytest.raises(released.ReleasedCheckpointError, match=message):
        released.load_released(broken, preset="tiny")


def test_released_file_round_trip(tmp_path, sd, model):
    path = tmp_path / "talk2face.bin"
    torch.save(sd, path)
    loaded = released.load_released(path, preset="tiny")
    ids = torch.tensor([[vocab.CLS, 2000, 3746, vocab.SEP, 2158, vocab.SEP, vocab.IMAGE_OFFSET + 5]])
    seg = torch.tensor([[1, 1, 1, 1, 1, 1, 2]])
    with torch.no_grad():
        assert torch.equal(loaded(ids, seg), model(ids, seg))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", b"\x80\x02garbage"], ids=["empty", "zip", "pickle"])
def test_unreadable_released_file_is_named(tmp_path, content):
    path = tmp_path / "talk2face.bin"
    path.write_bytes(content)
    with pytest.raises(released.ReleasedCheckpointError, match=r"talk2face.bin: unreadable \("):
        released.load_released(path, preset="tiny")
