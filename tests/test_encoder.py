"""The encoder actor's GPU paths, proven on CPU: the layout the VQGAN runs in, the fixed (padded) batch
shape, several calls in flight with one compute thread, and the compile and layout options."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from facecorpus.preprocess import to_model_input
from facecorpus.shards.encoder import Encoder
from facecorpus.shards.reading import OK
from facecorpus.vqgan import load_vqgan
from twinkit import pixel_batch


@pytest.fixture(autouse=True)
def keep_threads():
    """The Encoder sets torch's intra-op threads (its actor's share); give the test process its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Watched:
    """A `load_model` for the real tiny VQGAN that records, per encode call, the batch's rows, the
    calling thread and whether the first convolution saw an NCHW-contiguous input."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []
        self.layouts: list[bool] = []

    def __call__(self, *args, **kwargs):
        model = load_vqgan(*args, **kwargs)
        model.encoder.conv_in.register_forward_pre_hook(
            lambda _m, inp: self.layouts.append(inp[0].is_contiguous()))
        encode = model.encode

        def watched(x):
            self.calls.append((len(x), threading.get_ident()))
            return encode(x)
        model.encode = watched
        return model


def test_the_vqgan_runs_nchw_whatever_strides_its_input_has():
    """HWC uint8 batches become channels_last-strided floats (to_model_input); main let every
    convolution and GroupNorm follow that layout (measured 1.8x slower on an H100), while the bare
    loop of the benchmark ran NCHW."""
    watched = Watched()
    model = watched("tiny-f16")
    x = to_model_input(pixel_batch(2, 0)["pixels"])
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    codes = model.encode(x)
    assert watched.layouts == [True]  # main: False
    assert torch.equal(codes, model.encode(x.contiguous()))


def test_channels_last_is_a_choice_that_gives_the_same_codes():
    x = to_model_input(pixel_batch(4, 1)["pixels"])
    nchw, last = load_vqgan("tiny-f16"), load_vqgan("tiny-f16", channels_last=True)
    seen = []
    last.encoder.conv_in.register_forward_pre_hook(
        lambda _m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    assert torch.equal(nchw.encode(x), last.encode(x)) and seen == [True]


def test_a_padded_fixed_shape_batch_gives_the_real_rows_codes():
    """A short batch padded to the fixed shape (black rows, codes dropped) gives the codes of the
    same images encoded alone; the model only ever sees the fixed shape."""
    batch = pixel_batch(5, 2)
    plain = Encoder("tiny-f16", None, False, 2)(batch)["codes"]
    watched = Watched()
    fixed = Encoder("tiny-f16", None, False, 2, load_model=watched, batch=8)
    assert np.array_equal(fixed(batch)["codes"], plain)
    assert [rows for rows, _ in watched.calls] == [8]  # main: no fixed shape (TypeError on `batch`)
    big = pixel_batch(11, 3)  # more than a batch: 8 + 3 padded to 8
    assert np.array_equal(fixed(big)["codes"], Encoder("tiny-f16", None, False, 2)(big)["codes"])
    assert [rows for rows, _ in watched.calls] == [8, 8, 8]


def test_concurrent_calls_give_the_codes_of_one_batch_at_a_time_from_one_compute_thread():
    """Ray runs several calls of one actor at once (tokenization.py `inflight`): each result is the
    one its batch gets alone, and the model runs in one thread only (CUDA graphs of a compiled
    encoder belong to the thread that recorded them)."""
    batches = [pixel_batch(4, 10 + i) for i in range(4)]
    serial = Encoder("tiny-f16", None, False, 1)
    want = [serial(b)["codes"] for b in batches]
    watched = Watched()
    enc = Encoder("tiny-f16", None, False, 1, load_model=watched, batch=4)
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda b: enc(b)["codes"], batches))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    threads = {tid for _, tid in watched.calls}
    assert len(watched.calls) == 4 and len(threads) == 1  # main: the callers' own threads
    assert threading.get_ident() not in threads


def test_a_failed_image_among_concurrent_calls_costs_one_ledger_row():
    """The retry in halves still finds the bad image when calls run concurrently and padded."""
    bad = pixel_batch(4, 20)
    bad["pixels"][2] = 7  # the stand-in below refuses this exact image

    def load(*args, **kwargs):
        model = load_vqgan(*args, **kwargs)
        encode = model.encode

        def picky(x):
            flat = x.reshape(len(x), -1)
            if bool(((flat - flat[:, :1]).abs().sum(1) == 0).logical_and(flat[:, 0] != -1).any()):
                raise RuntimeError("injected: a flat grey image")
            return encode(x)
        model.encode = picky
        return model
    enc = Encoder("tiny-f16", None, False, 1, load_model=load, batch=4)
    with ThreadPoolExecutor(max_workers=2) as pool:
        out_bad, out_good = pool.map(enc, [bad, pixel_batch(4, 21)])
    assert [i for i, s in enumerate(out_bad["stage"]) if s != OK] == [2]
    assert "injected: a flat grey image" in out_bad["message"][2] and out_bad["retried"].sum() == 4
    assert list(out_good["stage"]) == [OK] * 4 and out_good["retried"].sum() == 0
