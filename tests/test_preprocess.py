"""The one preprocessing path: modes, face-box crop, size, and exactly one normalization (2x-1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facecorpus.preprocess import (
    POLICY,
    SIZE,
    load_image,
    preprocess,
    preprocess_uint8,
    to_model_input,
    to_pil,
)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "I;16", "1", "LA"])
def test_any_mode_gives_rgb_256_in_range(mode):
    img = Image.new("RGB", (178, 218), (200, 100, 50)).convert(mode)
    x = preprocess(img)
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_scale_is_2x_minus_1_and_nothing_else():
    img = Image.new("RGB", (SIZE, SIZE), (0, 255, 51))
    x = preprocess(img)
    # 0 -> -1, 255 -> +1, 51 -> 2*0.2-1: no CLIP mean/std anywhere (the anchor's trap).
    assert torch.allclose(x[:, 0, 0], torch.tensor([-1.0, 1.0, 2 * 51 / 255 - 1]))
    assert torch.equal(to_model_input(preprocess_uint8(img)), x)


def test_bbox_crop_centres_the_face_with_margin():
    img = Image.new("RGB", (400, 300), (0, 0, 0))
    img.paste((255, 255, 255), (150, 100, 250, 200))  # a white 100x100 "face"
    arr = preprocess_uint8(img, bbox=[150, 100, 250, 200])
    # square side 100 * (1 + 2*margin) = 150 around the box: the face fills the middle 2/3.
    side = 100 / (100 * (1 + 2 * POLICY["margin"])) * SIZE
    lo, hi = int((SIZE - side) / 2) + 3, int((SIZE + side) / 2) - 3
    assert arr[lo:hi, lo:hi].min() >= 250
    assert arr[:lo - 6].max() <= 5 and arr[hi + 6:].max() <= 5


def test_bbox_near_edge_pads_black_and_bad_boxes_are_named():
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    arr = preprocess_uint8(img, bbox=[0, 0, 50, 50])
    assert arr[0, 0].max() == 0 and arr[SIZE // 2, SIZE // 2].min() == 255
    with pytest.raises(ValueError, match="not x0 < x1"):
        preprocess_uint8(img, bbox=[50, 0, 40, 10])
    with pytest.raises(ValueError, match="outside"):
        preprocess_uint8(img, bbox=[200, 200, 300, 300])


def test_without_box_the_whole_image_is_squashed_like_the_anchor():
    img = Image.new("RGB", (178, 218), (10, 20, 30))
    assert preprocess_uint8(img).shape == (SIZE, SIZE, 3)


def test_load_image_fails_on_truncated_file(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        load_image(path)


def test_to_model_input_refuses_floats_and_to_pil_round_trips():
    with pytest.raises(TypeError, match="uint8"):
        to_model_input(np.zeros((SIZE, SIZE, 3), np.float32))
    arr = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    x = (to_model_input(arr) + 1) / 2
    assert np.array_equal(np.asarray(to_pil(x)), arr)
