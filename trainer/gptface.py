"""GPTFace: a bidirectional encoder over `[CLS] image codes [SEP] text ids`, trained by MILM + ITM.

    position:  0      1 .. side²          side²+1   side²+2 .. side²+1+max_text
    id:        [CLS]  30522 + code, ...   [SEP]     WordPiece ids, then [PAD] to the batch width

One embedding table serves text ids and image codes (the vocabulary of facecorpus.vocab: 30,522
WordPiece ids, then one id per VQGAN code), and the same table, transposed, is the softmax that
predicts a masked id of either modality. Positions are learned, one row per slot of the layout
above; there is no segment embedding, as the paper has none (a position's row already says which
modality it holds). Padding is hidden from attention as keys only, so a batch without padding runs
SDPA with no mask at all, which lets it pick its fastest kernels.

The ITM head is one linear layer on the final `[CLS]` state: one logit, > 0 = matched.
The shape is a `config.GPTFaceConfig` (presets `gptface-base`, `gptface-tiny` in trainer/config.py).
The choices the paper leaves open (the GLU width above all) are argued in docs/gptface.md.
Names:
    embed, pos                                      [V, D] and [positions, D] tables (embed is also the softmax)
    blocks.{i}.ln1, blocks.{i}.attn.{qkv,o}         LayerNorm, nn.Linear with bias
    blocks.{i}.ln2, blocks.{i}.ff.{wi,wo}           LayerNorm, nn.Linear with bias (wi = gate | value)
    ln_f, out_bias, itm
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTFaceConfig

GLU_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid}   # GEGLU, SwiGLU, Dauphin's GLU
assert set(GLU_ACTIVATIONS) == set(GPTFaceConfig.CHOICES["glu"])


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTFaceConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)   # one GEMM for q, k and v
        self.o = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class GLUFeedForward(nn.Module):
    """act(x W_gate) * (x W_value), then W_out (Shazeer, "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: GPTFaceConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, 2 * cfg.d_ff)   # gate and value in one GEMM
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model)
        self.act = GLU_ACTIVATIONS[cfg.glu]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.wi(x).chunk(2, dim=-1)
        return self.wo(self.act(gate) * value)


class Block(nn.Module):
    """Pre-LN: h + Attn(LN1(h)), then h + GLU(LN2(h))."""

    def __init__(self, cfg: GPTFaceConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps), SelfAttention(cfg)
        self.ln2, self.ff = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps), GLUFeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.ff(self.ln2(x)))


class GPTFaceOutput(NamedTuple):
    logits: torch.Tensor   # [B, T, V], or [N, V] at the flat positions `index` asked for
    itm: torch.Tensor      # [B] matched-pair logits


class GPTFace(nn.Module):
    def __init__(self, cfg: GPTFaceConfig):
        super().__init__()
        self.cfg = cfg
        # Plain tables rather than nn.Embedding: the word table is also the tied softmax's weight, and
        # nothing is drawn until init_weights (nn.Embedding would draw in its constructor).
        self.embed = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.pos = nn.Parameter(torch.empty(cfg.n_positions, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))   # the tied softmax keeps BERT's per-id bias
        self.itm = nn.Linear(cfg.d_model, 1)
        if not self.embed.is_meta:   # a meta model (to count, or to materialise later) has no values to draw
            self.init_weights()

    def init_weights(self) -> None:
        """BERT's initialisation, as Talk2Face's model: N(0, 0.02) weights and tables, zero biases."""
        for table in (self.embed, self.pos):
            nn.init.normal_(table, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, ids: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Final-LayerNorm states [B, T, D] of ids [B, T]. `pad` [B, T] is True at padding, which no
        position attends to; pass None when nothing is padded so SDPA may take a mask-free kernel."""
        T = ids.shape[1]
        if T > self.cfg.n_positions:
            raise ValueError(f"sequence of {T} ids exceeds the model's {self.cfg.n_positions} positions")
        # [B, 1, 1, T] boolean, True = may attend. Every row keeps [CLS], so no query sees only padding.
        mask = None if pad is None else ~pad[:, None, None, :]
        x = self.drop(F.embedding(ids, self.embed) + self.pos[:T])
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def token_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The shared softmax's logits over text ids and image codes: states [..., D] -> [..., V]."""
        return F.linear(h, self.embed, self.out_bias)

    def itm_logit(self, h: torch.Tensor) -> torch.Tensor:
        return self.itm(h[:, 0]).squeeze(-1)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> GPTFaceOutput:
        """Token logits and ITM logits. `index` (flat positions b * T + t, from the batch builder)
        limits the vocabulary projection to those positions: it is the largest matrix product of the
        model, and only the masked positions carry a loss."""
        h = self.hidden(ids, pad)
        at = h if index is None else h.reshape(-1, h.shape[-1]).index_select(0, index)
        return GPTFaceOutput(self.token_logits(at), self.itm_logit(h))


def param_summary(model: GPTFace) -> str:
    n, cfg = model.num_params(), model.cfg
    return f"{n / 1e6:.1f}M parameters ({n:,}) over {cfg.codebook_size:,} codes on {cfg.grid_side}x{cfg.grid_side}"

