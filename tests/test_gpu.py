"""The GPU paths on a GPU (benchmarks/gpu.sh runs these there; each has a CPU twin that CI runs):
FlexAttention's compiled kernel against SDPA, gradients included (no flex backward exists on CPU); the
encoder actor's pinned staging, side stream and CUDA-graph compile against one batch at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from facecorpus.codes import FFHQ_F16
from facecorpus.shards.encoder import Encoder
from facecorpus.trainer import config as C
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.packing import pack
from facecorpus.trainer.sequences import collate
from twinkit import instances, pixel_batch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def talk2face(attention: str, compiled: bool = False) -> Talk2Face:
    torch.manual_seed(0)
    cfg = C.model_preset("tiny", FFHQ_F16)
    cfg.attention = attention
    model = Talk2Face(cfg).cuda().train()
    if compiled:  # as train.compile does
        for block in model.blocks:
            block.compile()
    return model


@pytest.mark.parametrize(("packed", "compiled"), [(False, False), (True, False), (False, True)])
def test_compiled_flex_gives_sdpas_losses_and_gradients(packed, compiled):
    """fp32 on the GPU: the compiled flex kernel (alone, or inside compiled blocks) against SDPA with
    the boolean mask (test_attention.py compares the forward on CPU, where flex has no backward)."""
    insts = instances(16, 7)
    batch = pack(insts, 200, rows=6) if packed else collate(insts, 64)
    b = {k: v.cuda() for k, v in batch.items() if k in ("ids", "seg", "targets", "target_index", "pos", "doc")}
    grads = []
    for attention in ("sdpa", "flex"):
        m = talk2face(attention, compiled and attention == "flex")
        losses = m(b["ids"], b["seg"], targets=b["targets"], target_index=b["target_index"], pos=b.get("pos"),
                   doc=b.get("doc"))
        losses.mean().backward()
        grads.append((losses.detach(), m.blocks[0].attn.q.weight.grad, m.embed.word.weight.grad))
    for a, b_ in zip(*grads):
        torch.testing.assert_close(b_, a, rtol=2e-3, atol=2e-4)


def test_staged_concurrent_cuda_graph_encoder_agrees_with_one_eager_batch_at_a_time():
    """Pinned buffers, side streams, three calls in flight and a CUDA-graph compile give the codes of
    the eager encoder, batch by batch, up to bf16 near-ties (compiled kernels round differently)."""
    batches = [pixel_batch(16, 30 + i) for i in range(6)]
    eager = Encoder("tiny-f16", None, False, 1)
    want = [eager(b)["codes"] for b in batches]
    fast = Encoder("tiny-f16", None, False, 1, compile="reduce-overhead", batch=16)
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda b: fast(b)["codes"], batches))
    same = np.mean([np.mean(g == w) for g, w in zip(got, want)])
    assert same > 0.97, same   # bf16 both ways; a code flips only where two codebook entries nearly tie
    short = pixel_batch(5, 40)  # padded to the compiled shape
    assert np.mean(fast(short)["codes"] == eager(short)["codes"]) > 0.97
