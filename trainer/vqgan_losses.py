"""The VQGAN's losses as taming trains them (taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator,
ported: that module imports torchvision through its LPIPS, which cannot be installed here).

Autoencoder (optimizer 0):
    nll    = mean(|x - x̂| + perceptual_weight * LPIPS(x, x̂))      (LPIPS only with weights given by path)
    g      = -mean(D(x̂))                                           (once the GAN has started)
    λ      = disc_weight * clamp(‖∇_L nll‖ / (‖∇_L g‖ + 1e-4), 0, 1e4), L = the decoder's last layer
    loss   = nll + λ * disc_factor * g + codebook_weight * q      (q: VectorQuantizer2's codebook +
                                                                   commitment loss, taming's legacy form)
Discriminator (optimizer 1):
    d_loss = disc_factor * 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x̂))))    (hinge)

The GAN terms are multiplied by 0 before `disc_start` in taming (`adopt_weight`); here they are not
computed at all then, which gives the same loss and gradients without the discriminator's cost.
D is taming's `NLayerDiscriminator` (patch-GAN, BatchNorm), initialised with its `weights_init`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

from .vqgan_config import LossConfig


def discriminator(cfg: LossConfig) -> torch.nn.Module:
    """taming's patch-GAN discriminator on RGB images, initialised as taming initialises it."""
    return NLayerDiscriminator(input_nc=3, n_layers=cfg.disc_layers, use_actnorm=False, ndf=cfg.disc_ndf).apply(weights_init)


def gan_on(cfg: LossConfig, step: int) -> bool:
    """Whether the GAN terms count at this optimizer step (taming: global_step >= disc_start)."""
    return cfg.disc_factor > 0 and step >= cfg.disc_start


def reconstruction(x: torch.Tensor, xrec: torch.Tensor, cfg: LossConfig, lpips) -> tuple[torch.Tensor, dict]:
    """taming's `nll_loss`: the mean of the L1 error plus the weighted LPIPS distance; and its parts."""
    l1 = (x - xrec).abs()
    if lpips is None or not cfg.perceptual:
        return l1.mean(), {"l1": l1.detach().mean()}
    p = lpips(x.contiguous(), xrec.contiguous())
    return (l1 + cfg.perceptual_weight * p).mean(), {"l1": l1.detach().mean(), "perceptual": p.detach().mean()}


def adaptive_weight(nll: torch.Tensor, g: torch.Tensor, last_layer: torch.nn.Parameter, disc_weight: float) -> torch.Tensor:
    """taming's calculate_adaptive_weight: balances the GAN gradient against the reconstruction's at the
    decoder's last layer. Gradients of this rank's batch (as under Lightning DDP)."""
    nll_grads = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


def autoencoder_loss(x, xrec, qloss, cfg: LossConfig, step: int, lpips, disc, last_layer) -> tuple[torch.Tensor, dict]:
    """The autoencoder's loss (optimizer 0) and its named, detached parts. `disc` is the discriminator
    module itself, not its DDP wrapper: no gradient of this pass may reach it."""
    nll, parts = reconstruction(x, xrec, cfg, lpips)
    loss = nll + cfg.codebook_weight * qloss.mean()
    parts = {**parts, "nll": nll.detach(), "codebook": qloss.detach().mean()}
    if gan_on(cfg, step):
        g = -torch.mean(disc(xrec.contiguous()))
        weight = adaptive_weight(nll, g, last_layer, cfg.disc_weight)
        loss = loss + weight * cfg.disc_factor * g
        parts.update(g=g.detach(), d_weight=weight)
    return loss, {"loss": loss.detach(), **parts}


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


def discriminator_loss(x, xrec, cfg: LossConfig, disc) -> tuple[torch.Tensor, dict]:
    """The discriminator's hinge loss (optimizer 1) on real images and detached reconstructions."""
    real, fake = disc(x.contiguous().detach()), disc(xrec.contiguous().detach())
    d_loss = cfg.disc_factor * hinge_d_loss(real, fake)
    return d_loss, {"disc": d_loss.detach(), "logits_real": real.detach().mean(), "logits_fake": fake.detach().mean()}
