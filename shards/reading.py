"""The read stage of `tokenize`: an image file -> preprocessed uint8 pixels, or the stage and reason it
failed. Runs in Ray read tasks (and in the tests' reference tokenizer); never imports torch.

A path is resolved (symlinks followed) before it is checked against its dataset's raw folder, so a
link inside the folder that leads outside it is refused (stage `refused`) unless the user allowed
such links; either way it is counted. Only regular files are opened, and without blocking: a FIFO,
socket, device or folder under an image's name is a `read` failure that says what it is.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

import numpy as np

from facecorpus.excerpt import shorten
from facecorpus.preprocess import load_image, preprocess_uint8

OK = ""  # `stage` of an image that has not failed
REFUSED = "refused"  # its path resolves outside its dataset's raw folder
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class Read(NamedTuple):
    pixels: np.ndarray | None  # (size, size, 3) uint8, or None when the image failed
    stage: str                 # OK, or the stage that failed: refused, read, decode, preprocess
    message: str               # why it failed ("" when OK); paths and decoder errors are user data: shortened
    outside: bool              # the path resolves outside its dataset's raw folder


def inside(real: str, root: str) -> bool:
    """`real` (a resolved path) lies in the resolved folder `root`."""
    return os.path.commonpath([real, root]) == root


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_one(path: str, root: str, bbox: str, size: int, allow_outside: bool = False) -> Read:
    """Read, decode and preprocess one image. `root`: its dataset's raw folder, resolved; `bbox`:
    "x0,y0,x1,y1" or ""; `size`: the VQGAN's input resolution."""
    real = os.path.realpath(path)
    outside = not inside(real, root)
    if outside and not allow_outside:
        return Read(None, REFUSED, shorten(f"resolves outside its dataset folder {root} (to {real}); "
                                           "--allow-outside-links reads such files"), True)
    try:
        st = os.stat(real)
    except OSError as exc:
        return Read(None, "read", shorten(f"missing or unreadable file: {exc.strerror or exc}"), outside)
    if not stat.S_ISREG(st.st_mode):
        return Read(None, "read", f"not a regular file ({_kind(st.st_mode)})", outside)
    if st.st_size == 0:
        return Read(None, "read", "zero-byte file", outside)
    try:
        # O_NONBLOCK: should a FIFO take the file's place after the check, opening it cannot hang.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return Read(None, "read", "not a regular file (replaced while being opened)", outside)
            img = load_image(fh)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's, not the run's
        return Read(None, "decode", shorten(f"{type(exc).__name__}: {exc}"), outside)
    try:
        box = [int(v) for v in bbox.split(",")] if bbox else None
        return Read(preprocess_uint8(img, box, size=size), OK, "", outside)
    except Exception as exc:  # noqa: BLE001
        return Read(None, "preprocess", shorten(f"{type(exc).__name__}: {exc}"), outside)


def read_batch(batch: dict, size: int, allow_outside: bool = False) -> dict:
    """Ray task: read a block of the plan; failures ride along as (stage, message) per image."""
    n = len(batch["image_id"])
    pixels = np.zeros((n, size, size, 3), np.uint8)
    stage, message, outside = [OK] * n, [""] * n, np.zeros(n, bool)
    for i, (path, root, box) in enumerate(zip(batch["path"], batch["root"], batch["bbox"])):
        px, stage[i], message[i], outside[i] = read_one(str(path), str(root), str(box), size, allow_outside)
        if px is not None:
            pixels[i] = px
    return {"image_id": batch["image_id"], "path": batch["path"], "pixels": pixels, "outside": outside,
            "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object)}
