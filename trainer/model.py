"""The Talk2Face prefix-LM: word + position + segment embeddings, pre-LN blocks, untied LM head.

Shapes follow the released weights (docs/talk2face-release.md). Parameter names are short so the
released TencentPretrain state dict maps onto them one to one:

    embed.word / embed.pos / embed.seg                    nn.Embedding
    blocks.{i}.ln1, blocks.{i}.attn.{q,k,v,o}              LayerNorm, nn.Linear with bias
    blocks.{i}.ln2, blocks.{i}.ff.{fc1,fc2}               LayerNorm, nn.Linear with bias
    ln_f, lm_head (no bias)

Both LayerNorm variants store `weight` and `bias`, so a state dict loads into either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class ReleasedLayerNorm(nn.Module):
    """The release's LayerNorm: gamma * (x - mean) / (std_unbiased + eps) + beta, eps outside the sqrt."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True, unbiased=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


def layer_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.layernorm == "released":
        return ReleasedLayerNorm(cfg.d_model, cfg.ln_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)


def prefix_lm_mask(key_seg: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, Tq, Tk] mask, True = may attend.

    Key j is visible to query i iff seg[j] == 1, or seg[j] == 2 and j <= i; padding (0) never is.
    Positions are absolute, so the same rule serves a full sequence and a cached decode step.
    """
    causal = k_pos[None, :] <= q_pos[:, None]                       # [Tq, Tk]
    prefix = (key_seg == 1)[:, None, :]                             # [B, 1, Tk]
    target = (key_seg == 2)[:, None, :] & causal[None]              # [B, Tq, Tk]
    return (prefix | target)[:, None]


@dataclass
class KVCache:
    """Keys and values of every layer for up to `max_len` tokens, plus their segment ids."""

    k: torch.Tensor      # [n_layer, B, H, max_len, head_dim]
    v: torch.Tensor
    seg: torch.Tensor    # [B, max_len], 0 where nothing is stored yet
    length: int = 0      # ids stored by `hidden`; `decode_step` keeps its position on the device instead

    def reset(self) -> None:
        """Empty the cache for reuse (same buffers, so a captured CUDA graph stays valid). Stale keys
        stay but are invisible: attention only sees slots whose segment is 1 or 2."""
        self.seg.zero_()
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.seg.shape[1]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.o = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, mask, cache: KVCache | None = None, layer: int = 0, pos: torch.Tensor | None = None):
        B, T, D = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for lin in (self.q, self.k, self.v))
        if pos is not None:
            # Static decode step (`Talk2Face.decode_step`): write at the device index `pos` and attend
            # over all max_len slots (the mask hides empty ones), so every step has the same shapes.
            cache.k[layer].index_copy_(2, pos, k)
            cache.v[layer].index_copy_(2, pos, v)
            k, v = cache.k[layer], cache.v[layer]
        elif cache is not None:
            end = cache.length + T
            cache.k[layer, :, :, cache.length:end] = k
            cache.v[layer, :, :, cache.length:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
        # A boolean mask keeps the memory-efficient kernel available (no fp32 B x T x T additive tensor).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN: h + Attn(LN1(h)), then h + FFN(LN2(h))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.attn = layer_norm(cfg), Attention(cfg)
        self.ln2, self.ff = layer_norm(cfg), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask, cache: KVCache | None = None, layer: int = 0, pos: torch.Tensor | None = None):
        x = x + self.drop(self.attn(self.ln1(x), mask, cache, layer, pos))
        return x + self.drop(self.ff(self.ln2(x)))


class Embedding(nn.Module):
    """word + position + segment, summed, no LayerNorm (as released), then dropout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.n_positions, cfg.d_model)
        self.seg = nn.Embedding(cfg.n_segments, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, ids, seg, pos):
        return self.drop(self.word(ids) + self.pos(pos) + self.seg(seg))


class Talk2Face(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.vocab_size:
            raise ValueError("model.vocab_size is 0 (to follow a code grid): size the config first "
                             "(RunConfig.sized, or model_preset(name, grid))")
        self.cfg = cfg
        self.embed = Embedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = layer_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # untied, as released
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # BERT's initialisation, which TencentPretrain also uses.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch: int, max_len: int, device=None, dtype=None) -> KVCache:
        p = self.lm_head.weight
        device, dtype = device or p.device, dtype or p.dtype
        cfg = self.cfg
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(batch, max_len, dtype=torch.long, device=device))

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor, cache: KVCache | None = None, pos: torch.Tensor | None = None):
        """Final-LayerNorm states [B, T, D]; `pos` overrides positions (default: continue from the cache)."""
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.n_positions:
            raise ValueError(f"sequence of {start + T} ids exceeds model.n_positions={self.cfg.n_positions}")
        q_pos = torch.arange(start, start + T, device=ids.device)
        if cache is not None:
            if start + T > cache.max_len:
                raise ValueError(f"cache holds {cache.max_len} ids; {start + T} requested")
            cache.seg[:, start:start + T] = seg
            key_seg = cache.seg[:, :start + T]
        else:
            key_seg = seg
        mask = prefix_lm_mask(key_seg, q_pos, torch.arange(start + T, device=ids.device))
        x = self.embed(ids, seg, q_pos[None].expand(B, T) if pos is None else pos)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache, i)
        if cache is not None:
            cache.length = start + T
        return self.ln_f(x)

    def decode_step(self, ids: torch.Tensor, seg: torch.Tensor, cache: KVCache, pos: torch.Tensor) -> torch.Tensor:
        """One new id per row at position `pos` (a 1-element long tensor on the device) -> final-LayerNorm
        states [B, 1, D]. Same result as `hidden(ids, seg, cache)` at cache.length == pos, but with
        shapes that never change and no host sync (nothing reads `pos` on the host), so the step can be
        captured once in a CUDA graph and replayed. Leaves `cache.length` alone: the caller owns `pos`.
        Positions beyond n_positions or max_len are the caller's to avoid (an index error on CPU)."""
        B = ids.shape[0]
        cache.seg.index_copy_(1, pos, seg)
        k_pos = torch.arange(cache.max_len, device=ids.device)
        key_seg = cache.seg[:, None, None, :]                             # [B, 1, 1, max_len]
        mask = (key_seg == 1) | ((key_seg == 2) & (k_pos <= pos))         # prefix_lm_mask for one query
        x = self.embed(ids, seg, pos.expand(B, 1))
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache, i, pos)
        return self.ln_f(x)

    def forward(self, ids: torch.Tensor, seg: torch.Tensor, cache: KVCache | None = None,
                targets: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                target_index: torch.Tensor | None = None):
        """Logits [B, T, V]; with `targets` ([B, T], -1 = no loss) instead the per-position cross-entropy
        (fp32, flat, in row-major order of the positions that have a target).

        The head runs only where a target exists: the vocabulary projection is a sixth of the model's
        FLOPs, and most positions of a to-caption sequence carry no loss. `target_index` (the flat
        positions of the targets, from the data loader) avoids the host sync of finding them here.
        """
        h = self.hidden(ids, seg, cache, pos)
        if targets is None:
            return self.lm_head(h)
        if target_index is None:
            target_index = (targets.view(-1) >= 0).nonzero().squeeze(1)
        logits = self.lm_head(h.reshape(-1, h.shape[-1]).index_select(0, target_index))
        return F.cross_entropy(logits.float(), targets.view(-1).index_select(0, target_index), reduction="none")


def param_summary(model: Talk2Face) -> str:
    n = model.num_params()
    return f"{n / 1e6:.1f}M parameters ({n:,})"

