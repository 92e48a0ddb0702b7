"""train-vqgan's losses against taming's own code (its LPIPS and VQLPIPSWithDiscriminator, imported with a
stand-in torchvision that serves our VGG16 stack), against hand-computed values, and on a tiny model
whose reconstruction error falls on a fixed batch; codebook health and re-seeding."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from facecorpus import vqgan as vq
from facecorpus.converters.samples import faces
from facecorpus.trainer import lpips as lp
from facecorpus.trainer import vqgan_losses as L
from facecorpus.trainer.vqgan_codebook import CodebookWatch, usage_and_perplexity
from facecorpus.trainer.vqgan_config import LossConfig
from vqgankit import lpips_files

# A VQGAN small enough to train in seconds: 32x32 images, f4, 64 codes.
SMALL = {"name": "small", "ddconfig": {"double_z": False, "z_channels": 8, "resolution": 32, "in_channels": 3,
                                       "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 0,
                                       "attn_resolutions": [], "dropout": 0.0}, "n_embed": 64, "embed_dim": 8}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return lpips_files(tmp_path_factory.mktemp("lpips"))


@pytest.fixture
def taming_losses(monkeypatch, weights):
    """taming.modules.losses.{lpips,vqperceptual}, importable through a torchvision stand-in whose
    `models.vgg16().features` is our VGG16 stack with the seeded weights."""
    features = weights[2]
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(vgg16=lambda pretrained=False: types.SimpleNamespace(features=features))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    import taming.modules.losses.lpips as tlpips
    import taming.modules.losses.vqperceptual as tvq

    yield tlpips, tvq
    for name in [m for m in sys.modules if m.startswith("taming.modules.losses")]:
        del sys.modules[name]   # they hold the stand-in torchvision


def taming_lpips(tlpips, lins_path):
    """taming's LPIPS without its download: the same modules, our seeded weights."""
    model = tlpips.LPIPS.__new__(tlpips.LPIPS)
    torch.nn.Module.__init__(model)
    model.scaling_layer, model.chns = tlpips.ScalingLayer(), list(lp.CHANNELS)
    model.net = tlpips.vgg16(requires_grad=False, pretrained=False)
    for k, c in enumerate(lp.CHANNELS):
        setattr(model, f"lin{k}", tlpips.NetLinLayer(c, use_dropout=True))
    model.load_state_dict(torch.load(lins_path, weights_only=True), strict=False)
    return model.eval()


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_lpips_is_tamings(weights, taming_losses):
    ours = lp.LPIPS.from_files(weights[0], weights[1])
    theirs = taming_lpips(taming_losses[0], weights[1])
    a, b = images(), images(seed=1)
    want = theirs(a, b)
    got = ours(a, b)
    assert got.shape == want.shape == (2, 1, 1, 1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7) and float(got.min()) > 0
    assert float(ours(a, a).abs().max()) == 0.0


@pytest.mark.parametrize(("which", "sd", "message"), [
    ("vgg", {"features.0.weight": torch.zeros(64, 3, 3, 3)}, "vgg16.pth is not torchvision's vgg16 weights.*missing keys"),
    ("vgg", {"conv.weight": torch.zeros(1)}, "unexpected keys .*conv.weight"),
    ("lpips", {f"lin{k}.model.1.weight": torch.zeros(1, 3, 1, 1) for k in range(5)}, "vgg.pth is not LPIPS's.*wrong shapes"),
])
def test_lpips_weights_are_checked_strictly(tmp_path, weights, which, sd, message):
    vgg, lins = weights[0], weights[1]
    bad = tmp_path / ("vgg16.pth" if which == "vgg" else "vgg.pth")
    if which == "vgg" and "features.0.weight" not in sd:
        sd = {**torch.load(vgg, weights_only=True), **sd}
    torch.save(sd, bad)
    with pytest.raises(lp.LPIPSError, match=message):
        lp.LPIPS.from_files(bad if which == "vgg" else vgg, bad if which == "lpips" else lins)
    with pytest.raises(lp.LPIPSError, match="does not exist"):
        lp.LPIPS.from_files(tmp_path / "nope.pth", lins)


def _tamings_loss(tvq, lpips_model, disc, cfg: LossConfig):
    loss = tvq.VQLPIPSWithDiscriminator.__new__(tvq.VQLPIPSWithDiscriminator)
    torch.nn.Module.__init__(loss)
    loss.codebook_weight, loss.pixel_weight = cfg.codebook_weight, 1.0
    loss.perceptual_loss, loss.perceptual_weight = lpips_model, cfg.perceptual_weight
    loss.discriminator, loss.discriminator_iter_start = disc, cfg.disc_start
    loss.disc_loss, loss.disc_factor = tvq.hinge_d_loss, cfg.disc_factor
    loss.discriminator_weight, loss.disc_conditional = cfg.disc_weight, False
    return loss


@pytest.mark.parametrize("step", [2, 5])   # before and after disc_start=4
def test_losses_are_tamings(weights, taming_losses, step):
    cfg = LossConfig(vgg=str(weights[0]), lpips=str(weights[1]), disc_start=4, disc_weight=0.8, codebook_weight=1.3)
    torch.manual_seed(0)
    ours_lpips = lp.LPIPS.from_files(weights[0], weights[1])
    disc = L.discriminator(cfg)
    theirs = _tamings_loss(taming_losses[1], taming_lpips(taming_losses[0], weights[1]), disc, cfg)
    last = torch.nn.Conv2d(4, 3, 3, padding=1)   # the "decoder's last layer"
    x, h, q = images(), torch.randn(2, 4, 32, 32), torch.tensor(0.37)
    xrec = last(h)

    want, log = theirs(q, x, xrec, 0, step, last_layer=last.weight)
    disc.requires_grad_(False)
    got, parts = L.autoencoder_loss(x, xrec, q, cfg, step, ours_lpips, disc, last.weight)
    disc.requires_grad_(True)
    assert torch.allclose(got, want, rtol=1e-5)
    assert torch.allclose(parts["nll"], log["train/nll_loss"], rtol=1e-5)
    if step >= cfg.disc_start:
        assert torch.allclose(parts["d_weight"], log["train/d_weight"], rtol=1e-4)
        assert torch.allclose(parts["g"], log["train/g_loss"], rtol=1e-5)
    else:
        assert "g" not in parts and float(log["train/disc_factor"]) == 0.0
        d_want, _ = theirs(q, x, xrec, 1, step)
        d_got, _ = L.discriminator_loss(x, xrec, cfg, disc)
        assert d_want.item() == 0.0 and d_got.item() > 0   # taming multiplies by 0; we do not run it then
    if step >= cfg.disc_start:
        d_want, _ = theirs(q, x, xrec, 1, step)
        d_got, _ = L.discriminator_loss(x, xrec, cfg, disc)
        assert torch.allclose(d_got, d_want, rtol=1e-5)


def test_hinge_and_adaptive_weight_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.3])
    # real: relu(1 - 0.5) = 0.5, relu(1 - 2) = 0 -> 0.25; fake: relu(1 - 2) = 0, relu(1.3) = 1.3 -> 0.65
    assert L.hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.65))
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    nll, g = (3 * w).sum(), (4 * w).sum()          # gradients (3, 3) and (4, 4): norms 3√2 and 4√2
    want = 3 * 2 ** 0.5 / (4 * 2 ** 0.5 + 1e-4) * 0.8
    assert L.adaptive_weight(nll, g, w, 0.8).item() == pytest.approx(want, rel=1e-6)
    assert L.reconstruction(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5), LossConfig(), None)[0].item() == 0.5


@pytest.mark.slow
def test_a_tiny_vqgans_reconstruction_error_falls_on_a_fixed_batch(one_thread):
    torch.manual_seed(0)
    model = vq.VQGAN(SMALL).train()
    looks = [faces.Look(hair=h, mouth=m, eyeglasses=g) for h, m, g in
             (("black", "smile", True), ("blond", "flat", False), ("gray", "open", True), ("red", "frown", False))]
    pixels = np.stack([np.asarray(faces.face(look, i, (32, 32))) for i, look in enumerate(looks)])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.9))
    cfg, first = LossConfig(disc_start=10**6), None
    for _ in range(60):
        xrec, q, codes, _ = model(x)
        loss, parts = L.autoencoder_loss(x, xrec, q, cfg, 0, None, None, model.last_layer)
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else parts["l1"].item()
    assert codes.shape == (4, 8, 8)
    assert parts["l1"].item() < 0.5 * first, (first, parts["l1"].item())


def test_usage_and_perplexity_by_hand():
    counts = torch.tensor([2.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert usage_and_perplexity(counts) == {"usage": 0.5, "perplexity": pytest.approx(2.0)}
    assert usage_and_perplexity(torch.zeros(3)) == {"usage": 0.0, "perplexity": 0.0}
    watch = CodebookWatch(4, torch.device("cpu"))
    watch.add(torch.tensor([[0, 0], [1, 3]]))
    assert watch.health() == {"usage": 0.75, "perplexity": pytest.approx(np.exp(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))))}
    assert watch.health()["usage"] == 0.0   # a new window


def test_dead_codes_are_reseeded_from_encoder_outputs_deterministically():
    def run():
        emb = torch.nn.Embedding(6, 2)
        torch.nn.init.zeros_(emb.weight)
        opt = torch.optim.Adam(emb.parameters())
        emb(torch.tensor([0, 1])).sum().backward()
        opt.step()
        watch = CodebookWatch(6, torch.device("cpu"))
        watch.add(torch.tensor([0, 1, 1]))
        z = torch.arange(16, dtype=torch.float32).reshape(1, 2, 2, 4)   # 8 encoder outputs of 2 dims
        return watch.reseed(emb, opt, z, seed=3, step=100), emb.weight.detach().clone(), opt.state[emb.weight]

    n, weight, state = run()
    outputs = {tuple(v) for v in torch.arange(16.0).reshape(2, 8).T.tolist()}
    assert n == 4 and all(tuple(v) in outputs for v in weight[2:].tolist())
    assert len({tuple(v) for v in weight[2:].tolist()}) == 4          # distinct outputs
    assert float(state["exp_avg"][2:].abs().sum()) == 0 and float(state["exp_avg"][:2].abs().sum()) > 0
    assert torch.equal(run()[1], weight)                               # (seed, step) fix the choice
