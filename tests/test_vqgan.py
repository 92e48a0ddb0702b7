"""VQGAN loading (strict, no Lightning, no network, no pickled code by default), identity, encode/decode."""

from __future__ import annotations

import socket
import sys
import types

import numpy as np
import pytest
import torch

from facecorpus import vqgan as vq
from facecorpus.converters.samples import celeba, faces
from facecorpus.preprocess import preprocess
from facecorpus.trainer.metrics import psnr

TINY_PSNR_FLOOR = 21.5   # measured 22.95 dB; the margin is for other CPUs' arithmetic, not for other weights


@pytest.fixture(scope="module")
def tiny():
    return vq.load_vqgan("tiny-f16")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, size=256, mode="bicubic").clamp(-1, 1)


def test_tiny_contract_and_identity(tiny, images):
    codes = tiny.encode(images)
    assert codes.shape == (3, 16, 16) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 1024
    assert codes.unique().numel() > 50  # the seeded codebook spreads images over many codes
    out = tiny.decode(codes)
    assert out.shape == (3, 3, 256, 256) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(tiny.decode(codes.reshape(3, 256)), out)
    cfg, path = vq.resolve("tiny-f16", None)
    assert tiny.identity == {"name": "tiny-f16", "config_sha256": vq.config_sha256(cfg),
                             "checkpoint_sha256": vq.sha256_file(path),
                             "codebook_size": 1024, "grid": [16, 16], "resolution": 256}
    assert "pytorch_lightning" not in sys.modules and "torchvision" not in sys.modules


def unseen_faces(n: int, seed: int = 2026) -> torch.Tensor:
    """`n` faces drawn as the CelebA sample tree draws them, from a seed the bundled weights' training
    tree (seed 1, scripts/train-tiny-vqgan) did not use: faces they never saw, as model input."""
    rng = np.random.default_rng(seed)
    looks = [celeba.look(row) for row in celeba.attribute_rows(rng, n).tolist()]
    return torch.stack([preprocess(faces.face(look, int(rng.integers(2**32)), celeba.IMAGE_SIZE), size=256)
                        for look in looks])


def test_the_bundled_tiny_weights_reconstruct_faces_they_never_saw(tiny):
    # Seeded random weights score 10.9 dB here, the first trained ones (32 GroupNorm groups, 300 steps)
    # 14.0 dB, these 22.95 dB (docs/vqgan.md has the figure on the 321 test faces of their own tree, and the command).
    x = unseen_faces(8)
    with torch.no_grad():
        out = tiny.decode(tiny.encode(x))
    assert float(psnr((x + 1) / 2, out).mean()) >= TINY_PSNR_FLOOR


def test_codes_do_not_depend_on_batch_composition(tiny, images):
    together = tiny.encode(images)
    for i in range(len(images)):
        assert torch.equal(tiny.encode(images[i:i + 1])[0], together[i])


def test_decode_rejects_bad_codes(tiny):
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        tiny.decode(torch.full((1, 16, 16), 1024))
    with pytest.raises(ValueError, match="codes"):
        tiny.decode(torch.zeros(1, 15, 15, dtype=torch.long))


def _save(tmp_path, obj, name="m.ckpt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_strict_load_names_missing_unexpected_and_shapes(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    missing = {k: v for k, v in sd.items() if k != "quant_conv.bias"}
    with pytest.raises(vq.VQGANError, match=r"1 missing keys.*quant_conv\.bias"):
        vq.load_vqgan("tiny-f16", _save(tmp_path, missing))
    with pytest.raises(vq.VQGANError, match=r"unexpected keys.*extra\.weight"):
        vq.load_vqgan("tiny-f16", _save(tmp_path, {**sd, "extra.weight": torch.zeros(1)}))
    bad = {**sd, "quantize.embedding.weight": torch.zeros(512, 16)}
    with pytest.raises(vq.VQGANError, match=r"wrong shapes.*quantize\.embedding\.weight: checkpoint \(512, 16\)"):
        vq.load_vqgan("tiny-f16", _save(tmp_path, bad))


def test_vqmodel_and_net2net_checkpoints_load_the_same_weights(tiny, images, tmp_path):
    sd = tiny.state_dict()
    vqmodel = {"state_dict": {**sd, "loss.discriminator.main.0.weight": torch.zeros(2)}, "global_step": 3}
    net2net = {"state_dict": {**{f"first_stage_model.{k}": v for k, v in sd.items()},
                              "transformer.tok_emb.weight": torch.zeros(4, 4),
                              "cond_stage_model.x": torch.zeros(1)}, "epoch": 1}
    want = tiny.encode(images)
    for obj in (vqmodel, net2net):
        m = vq.load_vqgan("tiny-f16", _save(tmp_path, obj))
        assert torch.equal(m.encode(images), want)
        assert m.identity["config_sha256"] == tiny.identity["config_sha256"]
        assert m.identity["checkpoint_sha256"] != tiny.identity["checkpoint_sha256"]


def test_pickled_objects_need_explicit_trust_and_load_without_their_modules(tiny, tmp_path, monkeypatch):
    # A legacy Lightning checkpoint pickles objects of classes from modules the user may not have.
    fake = types.ModuleType("fake_lightning_callbacks")

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/rec_loss"

    ModelCheckpoint.__module__ = fake.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    path = _save(tmp_path, {"state_dict": tiny.state_dict(), "callbacks": {"cb": ModelCheckpoint()}})
    monkeypatch.delitem(sys.modules, fake.__name__)
    with pytest.raises(vq.VQGANError, match="--trust-checkpoint"):
        vq.load_vqgan("tiny-f16", path)
    m = vq.load_vqgan("tiny-f16", path, trust_checkpoint=True)
    assert torch.equal(m.quant_conv.weight, tiny.quant_conv.weight)


def test_taming_yaml_config_same_identity_as_json(tmp_path):
    yaml_text = """
model:
  target: taming.models.cond_transformer.Net2NetTransformer
  params:
    first_stage_config:
      target: taming.models.vqgan.VQModel
      params:
        embed_dim: 16
        n_embed: 1024
        ddconfig: {double_z: false, z_channels: 16, resolution: 256, in_channels: 3, out_ch: 3,
                   ch: 32, ch_mult: [1, 1, 1, 1, 1], num_res_blocks: 0, attn_resolutions: [], dropout: 0.0,
                   norm_groups: 1}
"""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    cfg = vq.read_config(path)
    assert vq.config_sha256(cfg) == vq.config_sha256(vq.resolve("tiny-f16", None)[0])
    _, bundled = vq.resolve("tiny-f16", None)
    assert vq.load_vqgan(path, bundled).identity["name"] == "cfg"
    (tmp_path / "bad.yaml").write_text("model: {params: {}}\n")
    with pytest.raises(vq.VQGANError, match="no VQGAN `ddconfig`"):
        vq.read_config(tmp_path / "bad.yaml")


def test_norm_groups_regroups_every_groupnorm_and_keeps_tamings_state_dict():
    cfg, _ = vq.resolve("tiny-f16", None)
    plain = {**cfg, "ddconfig": {k: v for k, v in cfg["ddconfig"].items() if k != "norm_groups"}}
    for config, groups in ((plain, 32), (cfg, 1)):
        norms = [m for m in vq.VQGAN(config).modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and {m.num_groups for m in norms} == {groups}
    assert vq.config_sha256(plain) != vq.config_sha256(cfg)   # a different architecture, a different identity
    a, b = vq.VQGAN(plain).state_dict(), vq.VQGAN(cfg).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    # Same weights, other groups: another function of the pixels.
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    one, per_channel = vq.VQGAN(cfg), vq.VQGAN(plain)
    per_channel.load_state_dict(one.state_dict())
    with torch.no_grad():
        assert not torch.allclose(one(x)[0], per_channel(x)[0])
    with pytest.raises(vq.VQGANError, match="norm_groups 5 does not divide a 32-channel level"):
        vq.VQGAN({**cfg, "ddconfig": {**cfg["ddconfig"], "norm_groups": 5}})


def test_ffhq_preset_needs_weights_and_no_network(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("load_vqgan opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    with pytest.raises(vq.VQGANError, match="ships no weights: pass --ckpt"):
        vq.load_vqgan("ffhq-f16")
    cfg, _ = vq.resolve("ffhq-f16", None)
    assert cfg["ddconfig"]["ch_mult"] == [1, 1, 2, 2, 4] and cfg["embed_dim"] == 256 and cfg["n_embed"] == 1024
    with pytest.raises(vq.VQGANError, match="does not exist"):
        vq.load_vqgan("no-such-preset.yaml")
