"""The shape of a VQGAN's image codes: codebook size, grid of codes per side, input resolution.

One definition for every part that handles image codes. A VQGAN reports its own (`VQGAN.code_grid`);
the token cache and `index.json` record it; shards, sequences, the model's vocabulary and generation
take it from there instead of from constants. Talk2Face's tokenizer (taming's FFHQ f16) and the
bundled `tiny-f16` are 1,024 codes on a 16x16 grid of a 256x256 image; GPTFace's is 8,192 codes on
21x21 of 336x336. Codes are stored as uint16, which holds any codebook up to 65,536.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CODE_DTYPE = np.uint16


@dataclass(frozen=True)
class CodeGrid:
    codebook_size: int   # codes in the VQGAN's book
    side: int            # codes per side: an image is side x side codes, row-major
    resolution: int      # pixels per side of the VQGAN's input image

    def __post_init__(self):
        for name in ("codebook_size", "side", "resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"code grid {name} must be a positive integer, got {value!r}")
        if self.codebook_size > np.iinfo(CODE_DTYPE).max + 1:
            raise ValueError(f"codebook of {self.codebook_size} codes does not fit {np.dtype(CODE_DTYPE).name}")

    @property
    def count(self) -> int:
        """Codes per image."""
        return self.side * self.side

    @property
    def shape(self) -> tuple[int, int]:
        return (self.side, self.side)

    def as_dict(self) -> dict:
        """The form stored in index.json and the token cache's identity."""
        return {"codebook_size": self.codebook_size, "grid": [self.side, self.side], "resolution": self.resolution}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> CodeGrid:
        """Read `as_dict()`'s form back; a malformed one is a ValueError naming `where`."""
        try:
            side, other = d["grid"]
            if side != other:
                raise ValueError(f"grid {d['grid']} is not square")
            return cls(int(d["codebook_size"]), int(side), int(d["resolution"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed code grid {d!r}: {exc}") from None

    def problem(self, codes: np.ndarray) -> str | None:
        """Why `codes` is not one image's codes on this grid (None when it is)."""
        if codes.dtype != CODE_DTYPE or codes.shape != self.shape:
            return f"codes are {codes.dtype} {codes.shape}, expected {np.dtype(CODE_DTYPE).name} {self.shape}"
        if codes.size and int(codes.max()) >= self.codebook_size:
            return f"code {int(codes.max())} is outside the codebook of {self.codebook_size}"
        return None


# Talk2Face's image tokenizer (taming FFHQ f16) and the bundled tiny-f16: the grid of every shard
# written before index.json recorded one.
FFHQ_F16 = CodeGrid(codebook_size=1024, side=16, resolution=256)
