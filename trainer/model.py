"""The Talk2Face prefix-LM: word + position + segment embeddings, pre-LN blocks, untied LM head.

Shapes follow the released weights (docs/talk2face-release.md). Parameter names are short so the
released TencentPretrain state dict maps onto them one to one:

    embed.word / embed.pos / embed.seg                    nn.Embedding
    blocks.{i}.ln1, blocks.{i}.attn.{q,k,v,o}              LayerNorm, nn.Linear with bias
    blocks.{i}.ln2, blocks.{i}.ff.{fc1,fc2}               LayerNorm, nn.Linear with bias
    ln_f, lm_head (no bias)

Both LayerNorm variants store `weight` and `bias`, so a state dict loads into either.

Attention over a whole sequence (training, held-out loss, cache-less generation) runs through SDPA
with the boolean prefix-LM mask, or, with `model.attention=flex`, through FlexAttention with the same
pattern as a block mask, which lets the kernel skip the blocks no query may see (padding, the future
of a target) instead of reading a mask; FlexAttention has no dropout on the attention probabilities,
so that model has none there. torch 2.13 has no FlexAttention backward on CPU: a CPU forward that
needs gradients runs the same mask through SDPA (the tests show both give the same logits). Rows may
pack several sequences (trainer/packing.py): a document id per position then keeps each sequence to
itself. Decoding with a KV cache always uses SDPA.
"""

from __future__ import annotations

import functools
import warnings
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


def prefix_lm_mask(key_seg: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                   doc: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [B, 1, Tq, Tk] mask, True = may attend.

    Key j is visible to query i iff seg[j] == 1, or seg[j] == 2 and j <= i; padding (0) never is.
    Positions are absolute, so the same rule serves a full sequence and a cached decode step. With
    `doc` ([B, T], packed rows, no cache) key j must also lie in query i's document, and a padding
    query sees itself alone (a row with nothing visible would make SDPA's softmax NaN).
    """
    causal = k_pos[None, :] <= q_pos[:, None]                       # [Tq, Tk]
    prefix = (key_seg == 1)[:, None, :]                             # [B, 1, Tk]
    target = (key_seg == 2)[:, None, :] & causal[None]              # [B, Tq, Tk]
    mask = prefix | target
    if doc is not None:
        pad_self = (key_seg == 0)[:, :, None] & torch.eye(len(q_pos), dtype=torch.bool, device=doc.device)
        mask = (mask & (doc[:, :, None] == doc[:, None, :])) | pad_self
    return mask[:, None]


def prefix_lm_block_mask(key_seg: torch.Tensor, doc: torch.Tensor | None = None):
    """`prefix_lm_mask` of a whole sequence (no cache) as a FlexAttention BlockMask: the same
    pattern, position by position (tests compare them exactly), from which the kernel learns which
    128x128 blocks are empty and skips them."""
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(b, h, q, kv):
        key = key_seg[b, kv]
        ok = (key == 1) | ((key == 2) & (kv <= q))
        if doc is None:
            return ok
        return (ok & (doc[b, q] == doc[b, kv])) | ((q == kv) & (key_seg[b, q] == 0))

    B, T = key_seg.shape
    # Compiled on GPUs (a B x T x T pass in one kernel), unless the caller is itself being compiled.
    fast = key_seg.is_cuda and not torch.compiler.is_compiling()
    return create_block_mask(visible, B, None, T, T, device=key_seg.device, _compile=fast)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """FlexAttention: compiled into one fused kernel on GPUs (eager, it materializes every score);
    eager on CPU, where it is the reference the tests compare with SDPA. Inside a compiled block
    (train.compile) the block's compilation makes the kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask)
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask)


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
        # No attention-probability dropout with `flex` (its kernel has none), whichever kernel runs.
        self.n_head, self.dropout = cfg.n_head, cfg.dropout if cfg.attention == "sdpa" else 0.0
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
        if isinstance(mask, torch.Tensor):
            # A boolean mask keeps the memory-efficient kernel available (no fp32 B x T x T additive tensor).
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        else:  # a BlockMask: FlexAttention has no dropout on the attention probabilities
            y = flex(q, k, v, mask)
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

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor, cache: KVCache | None = None, pos: torch.Tensor | None = None,
               doc: torch.Tensor | None = None):
        """Final-LayerNorm states [B, T, D]; `pos` overrides positions (default: continue from the cache);
        `doc` ([B, T]) marks the sequences of packed rows (trainer/packing.py; no cache)."""
        B, T = ids.shape
        if doc is not None and cache is not None:
            raise ValueError("packed rows (doc) are for whole sequences; a KV cache holds one sequence per row")
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
        if self.cfg.attention == "flex" and cache is None and (ids.is_cuda or not torch.is_grad_enabled()):
            mask = prefix_lm_block_mask(seg, doc)
        else:
            mask = prefix_lm_mask(key_seg, q_pos, torch.arange(start + T, device=ids.device), doc)
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
                target_index: torch.Tensor | None = None, doc: torch.Tensor | None = None):
        """Logits [B, T, V]; with `targets` ([B, T], -1 = no loss) instead the per-position cross-entropy
        (fp32, flat, in row-major order of the positions that have a target).

        The head runs only where a target exists: the vocabulary projection is a sixth of the model's
        FLOPs, and most positions of a to-caption sequence carry no loss. `target_index` (the flat
        positions of the targets, from the data loader) avoids the host sync of finding them here.
        Packed rows (trainer/packing.py) pass their positions as `pos` and their documents as `doc`.
        """
        h = self.hidden(ids, seg, cache, pos, doc)
        if targets is None:
            return self.lm_head(h)
        if target_index is None:
            target_index = (targets.view(-1) >= 0).nonzero().squeeze(1)
        logits = self.lm_head(h.reshape(-1, h.shape[-1]).index_select(0, target_index))
        return F.cross_entropy(logits.float(), targets.view(-1).index_select(0, target_index), reduction="none")


def param_summary(model: Talk2Face) -> str:
    n = model.num_params()
    return f"{n / 1e6:.1f}M parameters ({n:,})"

