"""The encode stage of `tokenize`: a Ray actor holding the VQGAN, encoding the pixel batches that reach it.

A batch that fails is retried in halves down to single images, so one bad image costs one ledger row,
not a batch, and the summary counts the images whose batch failed (`encode_retried`).
"""

from __future__ import annotations

import numpy as np

from facecorpus.codes import CODE_DTYPE
from facecorpus.excerpt import shorten
from facecorpus.preprocess import as_tensor, to_model_input
from facecorpus.shards.reading import OK


class Encoder:
    """Callable class for `map_batches`: the model is loaded once per actor. `load_model` builds it
    (facecorpus.vqgan.load_vqgan's signature); tests and benchmarks pass stand-ins."""

    def __init__(self, vqgan: str, ckpt: str | None, trust_checkpoint: bool, threads: int, compile: bool = False,
                 load_model=None):
        import torch  # here, not at the top: the read tasks never need it

        from facecorpus.vqgan import load_vqgan

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = {"compile": compile} if compile else {}
        self.model = (load_model or load_vqgan)(vqgan, ckpt, device=device, trust_checkpoint=trust_checkpoint,
                                                **kwargs)
        self.codes = self.model.code_grid.count
        self.limit = None  # images per encoder call once the device ran out of memory on a bigger one

    def _chunks(self, pixels: np.ndarray) -> np.ndarray:
        step = self.limit or len(pixels)
        return np.concatenate([self._encode(pixels[i:i + step]) for i in range(0, len(pixels), step)])

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        device = self.model.device
        if device.type == "cuda":
            # uint8 (4x smaller than float) copied once into pinned memory, converted on the GPU.
            px = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            px.numpy()[...] = pixels
            px = px.to(device, non_blocking=True)
        else:  # no copy here: to(cpu) is a no-op and to_model_input's .float() copies
            px = as_tensor(pixels).to(device)
        return self.model.encode(to_model_input(px)).reshape(len(pixels), -1).cpu().numpy()

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
        return {"image_id": batch["image_id"], "path": batch["path"], "codes": codes, "outside": batch["outside"],
                "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object),
                "retried": retried}

    def _bisect(self, pixels: np.ndarray, idx: np.ndarray, exc: Exception, codes, stage, message) -> None:
        """Encode a failed batch again in halves, down to single images: a bad image costs about
        2*log2(batch) calls, not one per image, and a batch too big for the device (out of memory)
        goes through in smaller pieces instead of image by image."""
        if len(idx) == 1:
            stage[idx[0]], message[idx[0]] = "encode", shorten(f"{type(exc).__name__}: {exc}")
            return
        if "out of memory" in str(exc).lower():
            import torch

            torch.cuda.empty_cache()  # the failed attempt's blocks, before a smaller one tries
            # Later batches go in pieces this size from the start instead of failing first.
            self.limit = min(self.limit or len(idx), max(1, len(idx) // 2))
        for part in (idx[: len(idx) // 2], idx[len(idx) // 2:]):
            try:
                codes[part] = self._encode(pixels[part])
            except Exception as inner:  # noqa: BLE001
                self._bisect(pixels, part, inner, codes, stage, message)
