"""Model FLOPs utilisation: useful training FLOPs per second over the device's dense bf16 peak.

Peaks come from the vendors' datasheets (dense, no sparsity). A device not in the table reports
`n/a`: a guessed peak would make the figure meaningless (nanoGPT hard-codes an A100's 312e12).
"""

from __future__ import annotations

import torch

from .config import GPTFaceConfig, ModelConfig

# (substring of torch.cuda.get_device_name(), dense bf16 tensor-core FLOP/s). Order matters: the
# first match wins, so more specific names come first.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),        # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
]


def device_peak(device: torch.device | str) -> float | None:
    """Dense bf16 peak of `device`, or None when it is a CPU or not in the table."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def batch_flops(cfg: ModelConfig | GPTFaceConfig, lengths: torch.Tensor, n_targets: int) -> float:
    """Training FLOPs (forward + backward) of the useful work in one batch of rows `lengths` long
    (non-pad tokens per row), either model family.

    6 x the block's matmul weights (`cfg.block_matmuls`: a GLU's three matrices for GPTFace, the FFN's
    two for Talk2Face) per layer and non-pad token; 12 x layers x d x length per token for the
    attention scores over its own row (PaLM, appendix B: exact for GPTFace's bidirectional encoder;
    Talk2Face's prefix-LM masking savings not subtracted); and 6 x d x vocab per position that has a
    target (the head runs only there). Padding counts as nothing.
    """
    d, L = cfg.d_model, cfg.n_layer
    lengths = lengths.double()
    body = 6 * L * cfg.block_matmuls * float(lengths.sum())
    attn = 12 * L * d * float((lengths ** 2).sum())
    return body + attn + 6 * d * cfg.vocab_size * n_targets


def mfu(flops: float, seconds: float, peak: float | None, n_devices: int = 1) -> float | None:
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (peak * n_devices)


def fmt_mfu(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
