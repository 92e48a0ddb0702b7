"""The encode stage of `tokenize`: a Ray actor holding the VQGAN, encoding the pixel batches that reach it.

Keeping a GPU busy (docs/performance.md): Ray may hand the actor several batches at once (`inflight`
in tokenization.py). Each call stages its pixels in a pinned host buffer of its own thread and copies
them to the device on that thread's CUDA stream, while the compute thread encodes an earlier batch.
One thread, and only one, runs the model: the CUDA graphs of a compiled encoder belong to the thread
that recorded them (pytorch#123177), and one GPU runs one batch at a time anyway. With a fixed
`batch` (tokenize sets one for a compiled encoder), every call hands the model that shape (a short
batch is padded with black images whose codes are dropped), so a compiled encoder compiles once and
its CUDA graphs are replayed, never re-recorded.

A batch that fails is retried in halves down to single images, so one bad image costs one ledger row,
not a batch, and the summary counts the images whose batch failed (`encode_retried`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from facecorpus.codes import CODE_DTYPE
from facecorpus.excerpt import shorten
from facecorpus.preprocess import as_tensor, to_model_input
from facecorpus.shards.reading import OK


class Staging:
    """uint8 pixels -> the model's device, padded to a fixed number of rows. On CUDA through a pinned
    buffer and a side stream per calling thread (reused: pinning memory costs milliseconds per MB),
    so the copy of one batch overlaps the encoding of another."""

    def __init__(self, device):
        self.device = device
        self.local = threading.local()

    def put(self, pixels: np.ndarray, rows: int):
        """(pixels on the device with `rows` rows, a CUDA event the copy completes, or None)."""
        import torch

        src, n = as_tensor(pixels), len(pixels)
        if self.device.type != "cuda":  # no copy on CPU: to_model_input's .float() makes the one copy
            if rows == n:
                return src.to(self.device), None
            out = torch.zeros((rows, *src.shape[1:]), dtype=torch.uint8, device=self.device)
            out[:n] = src.to(self.device)
            return out, None
        buf = self._buffer(rows, tuple(src.shape[1:]))
        buf[:n].copy_(src)
        buf[n:].zero_()
        # Safe to refill next call: this thread waits for its codes, so the copy has long finished.
        stream = self.local.stream
        with torch.cuda.stream(stream):
            px = buf.to(self.device, non_blocking=True)
        return px, stream.record_event()

    def _buffer(self, rows: int, shape: tuple):
        import torch

        local = self.local
        if getattr(local, "shape", None) != (rows, *shape):
            local.buf = torch.empty((rows, *shape), dtype=torch.uint8, pin_memory=True)
            local.shape = (rows, *shape)
            local.stream = getattr(local, "stream", None) or torch.cuda.Stream(self.device)
        return local.buf


class Encoder:
    """Callable class for `map_batches`: the model is loaded once per actor. `load_model` builds it
    (facecorpus.vqgan.load_vqgan's signature); tests and benchmarks pass stand-ins. `batch`: the fixed
    number of images per model call (None: as many as arrive); `compile`: False or a torch.compile mode."""

    def __init__(self, vqgan: str, ckpt: str | None, trust_checkpoint: bool, threads: int,
                 compile: bool | str = False, load_model=None, batch: int | None = None,
                 channels_last: bool = False):
        import torch  # here, not at the top: the read tasks never need it

        from facecorpus.vqgan import load_vqgan

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = {k: v for k, v in (("compile", compile), ("channels_last", channels_last)) if v}
        self.model = (load_model or load_vqgan)(vqgan, ckpt, device=device, trust_checkpoint=trust_checkpoint,
                                                **kwargs)
        self.codes = self.model.code_grid.count
        self.batch = batch
        self.limit = None  # images per encoder call once the device ran out of memory on a bigger one
        self.staging = Staging(self.model.device)
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")

    def _rows(self, n: int) -> int:
        """Rows of the model call for `n` images: fixed (the batch, or the smaller size the device
        could take) when `batch` is set, else `n`."""
        return (self.limit or self.batch) if self.batch else n

    def _chunks(self, pixels: np.ndarray) -> np.ndarray:
        step = self.limit or self.batch or len(pixels)
        return np.concatenate([self._encode(pixels[i:i + step]) for i in range(0, len(pixels), step)])

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        """(n, side*side) codes of `n` uint8 images; staged in the calling thread, encoded in the
        compute thread."""
        px, ready = self.staging.put(pixels, max(len(pixels), self._rows(len(pixels))))
        return self.compute.submit(self._run, px, ready).result()[:len(pixels)]

    def _run(self, px, ready) -> np.ndarray:
        import torch

        if ready is not None:  # the compute stream waits for the side stream's copy, not the host
            stream = torch.cuda.current_stream(px.device)
            stream.wait_event(ready)
            px.record_stream(stream)  # allocated on the side stream, freed after use on this one
        # uint8 -> float on the model's device (a GPU converts in microseconds; 4x fewer bytes cross).
        return self.model.encode(to_model_input(px)).reshape(len(px), -1).cpu().numpy()

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        codes = np.zeros((n, self.codes), CODE_DTYPE)
        stage, message = list(batch["stage"]), list(batch["message"])
        retried = np.zeros(n, np.int8)  # 1: this image's first encoder call failed (the summary counts them)
        idx = np.flatnonzero([s == OK for s in stage])
        if len(idx):
            # The usual batch has no failure: no gather copy of its pixels.
            pixels = batch["pixels"] if len(idx) == n else batch["pixels"][idx]
            try:
                codes[idx] = self._chunks(pixels)
            except Exception as exc:  # noqa: BLE001 - find which image(s) broke the batch
                retried[idx] = 1
                self._bisect(batch["pixels"], idx, exc, codes, stage, message)
        # The read stage's columns ride along (image_id, path, outside, node...); pixels become codes.
        return {**{k: v for k, v in batch.items() if k != "pixels"}, "codes": codes,
                "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object),
                "retried": retried}

    def _bisect(self, pixels: np.ndarray, idx: np.ndarray, exc: Exception, codes, stage, message) -> None:
        """Encode a failed batch again in halves, down to single images: a bad image costs about
        2*log2(batch) calls, not one per image, and a batch too big for the device (out of memory)
        goes through in smaller pieces instead of image by image. With a fixed batch the halves are
        padded to it, so a compiled encoder is not recompiled for each size."""
        if len(idx) == 1:
            stage[idx[0]], message[idx[0]] = "encode", shorten(f"{type(exc).__name__}: {exc}")
            return
        if "out of memory" in str(exc).lower():
            import torch

            torch.cuda.empty_cache()  # the failed attempt's blocks, before a smaller one tries
            # Later batches go in pieces this size from the start instead of failing first.
            rows = max(len(idx), self._rows(len(idx)))
            self.limit = min(self.limit or rows, max(1, rows // 2))
        for part in (idx[: len(idx) // 2], idx[len(idx) // 2:]):
            try:
                codes[part] = self._encode(pixels[part])
            except Exception as inner:  # noqa: BLE001
                self._bisect(pixels, part, inner, codes, stage, message)
