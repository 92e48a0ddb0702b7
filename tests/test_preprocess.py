"""The one preprocessing path: every mode decodes to the picture a viewer sees (compared pixel by
pixel with the expected picture), face-box crop, size from the VQGAN, exactly one normalization (2x-1)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from facecorpus.codes import FFHQ_F16
from facecorpus.preprocess import (
    BACKGROUND,
    POLICY,
    ImageDecodeError,
    load_image,
    policy_problem,
    preprocess,
    preprocess_uint8,
    to_model_input,
    to_pil,
)

SIZE = FFHQ_F16.resolution
SIDE = 32  # test pictures are SIDE x SIDE and preprocessed at that size: no resampling in the comparison


def _picture() -> np.ndarray:
    """An RGB picture with no symmetry (so a rotation or flip shows) and every grey level's neighbours."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    rgb = np.stack([x * 255 // (SIDE - 1), y * 255 // (SIDE - 1), (x * y) % 256], -1).astype(np.uint8)
    rgb[:4, :8] = (255, 0, 0)  # a red mark in the top-left corner
    return rgb


def _grey() -> np.ndarray:
    return np.arange(SIDE * SIDE, dtype=np.uint32).reshape(SIDE, SIDE).__mod__(256).astype(np.uint8)


def _decode(img_or_bytes) -> np.ndarray:
    """What tokenization sees: the file through load_image, then preprocess_uint8 at the picture's size."""
    img = load_image(io.BytesIO(img_or_bytes)) if isinstance(img_or_bytes, bytes) else img_or_bytes
    return preprocess_uint8(img, size=SIDE)


def _file(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return np.rint(rgb * a + np.array(BACKGROUND) * (1 - a)).astype(np.uint8)


def _close(got: np.ndarray, want: np.ndarray, tol: int = 1) -> bool:
    return got.shape == want.shape and int(np.abs(got.astype(int) - want.astype(int)).max()) <= tol


def test_16_bit_grey_png_is_scaled_not_clipped_to_white():
    grey = _grey()
    got = _decode(_file(Image.fromarray((grey.astype(np.uint16) * 257)), "PNG"))  # Pillow: I;16
    assert np.array_equal(got, np.repeat(grey[..., None], 3, -1))  # 257 * g -> g exactly
    assert got.mean() < 200  # main: solid white (convert("L") clips 16-bit values at 255)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I;16"])
def test_16_bit_layouts_round_to_the_nearest_8_bit_level(mode):
    values = np.array([[0, 128, 129, 385, 65535, 32896]], np.uint16)  # 128 -> 0, 129 -> 1, 385 -> 1, 32896 -> 128
    img = Image.frombytes(mode, (6, 1), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    got = preprocess_uint8(img, size=6)[0, :, 0]
    assert got.tolist() == [0, 0, 1, 1, 255, 128]


def test_float_tiff_in_0_1_is_scaled_by_255():
    grey = _grey()
    got = _decode(_file(Image.fromarray(grey.astype(np.float32) / 255), "TIFF"))  # mode F
    assert np.array_equal(got[..., 0], grey)  # main: almost black (0..1 taken as grey levels 0..1)


@pytest.mark.parametrize(("values", "why"), [
    (np.full((4, 4), 200.0, np.float32), "not \\[0, 1\\]"),
    (np.array([[0.5, np.nan], [0, 1]], np.float32), "NaN"),
])
def test_float_pixels_without_a_faithful_scale_are_refused(values, why):
    with pytest.raises(ImageDecodeError, match=why):
        load_image(io.BytesIO(_file(Image.fromarray(values), "TIFF")))


def test_32_bit_integer_grey_reads_as_16_bit_and_out_of_range_is_refused():
    grey = _grey()
    got = _decode(_file(Image.fromarray((grey.astype(np.int32) * 257)), "TIFF"))  # mode I
    assert np.array_equal(got[..., 0], grey)
    with pytest.raises(ImageDecodeError, match="not 0..65535"):
        load_image(io.BytesIO(_file(Image.fromarray(np.full((4, 4), 70000, np.int32)), "TIFF")))


def test_exif_rotated_jpeg_is_encoded_upright():
    upright = np.zeros((SIDE, 2 * SIDE, 3), np.uint8)
    upright[:, :SIDE] = 255  # left half white, right half black
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the camera's sensor rows
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = _file(stored, "JPEG", quality=95, exif=exif.tobytes())
    got = np.asarray(load_image(io.BytesIO(data)))
    assert got.shape == upright.shape  # main: 64 high, 32 wide (sideways)
    assert np.abs(got.astype(int) - upright).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa", "La"])
def test_alpha_is_composited_over_white(mode):
    rgb = _picture()
    alpha = np.tile(np.linspace(0, 255, SIDE).astype(np.uint8), (SIDE, 1))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode in ("LA", "La"):
        rgba = rgba.convert("LA")
        rgb = np.repeat(np.asarray(rgba)[..., :1], 3, -1)
    img = rgba.convert(mode) if mode != "La" else Image.frombytes("La", rgba.size, _premultiply(rgba))
    want = _over_white(rgb, alpha)
    got = _decode(_file(img, "PNG") if mode in ("RGBA", "LA") else img)
    assert _close(got, want, tol=2 if mode in ("RGBa", "La") else 1)  # premultiplied: one more rounding
    assert got[:, 0].min() == 255  # fully transparent column: the background (main: the hidden colour)


def _premultiply(la: Image.Image) -> bytes:
    a = np.asarray(la).astype(np.uint16)
    return np.dstack([(a[..., 0] * a[..., 1] + 127) // 255, a[..., 1]]).astype(np.uint8).tobytes()


def test_palette_with_a_transparent_entry_and_grey_with_a_transparent_level():
    rgb = _picture()
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    index = np.asarray(pal)
    want = np.asarray(pal.convert("RGB")).copy()
    want[index == 0] = BACKGROUND
    assert np.array_equal(_decode(_file(pal, "PNG", transparency=0)), want)
    grey = _grey()
    got = _decode(_file(Image.fromarray(grey), "PNG", transparency=7))
    want = np.repeat(grey[..., None], 3, -1)
    want[grey == 7] = BACKGROUND
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("mode", "fmt"), [("CMYK", "TIFF"), ("CMYK", "JPEG"), ("P", "PNG"), ("1", "PNG"),
                                           ("L", "PNG"), ("YCbCr", "JPEG"), ("RGB", "PNG")])
def test_every_mode_decodes_to_the_expected_picture(mode, fmt):
    truth = Image.fromarray(_picture())
    img = truth.convert(mode)
    want = np.asarray(img.convert("RGB"))  # for P, 1, L: the picture those pixels show
    if mode in ("CMYK", "YCbCr"):
        want = _picture()  # Pillow's CMYK and YCbCr round trips are exact, before compression
    params = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    got = _decode(_file(img, fmt, **params))
    assert _close(got, want, tol=1 if fmt != "JPEG" else 12), np.abs(got.astype(int) - want).max()
    if fmt == "JPEG":
        assert np.abs(got.astype(int) - want).mean() < 2


def test_cielab_has_no_faithful_conversion_and_says_so():
    with pytest.raises(ImageDecodeError, match="mode LAB"):
        preprocess_uint8(Image.new("LAB", (4, 4)), size=4)


def test_decompression_bombs_are_a_decode_error_not_a_warning(monkeypatch):
    data = _file(Image.new("L", (50, 50)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2,500 pixels: over the limit, under twice it
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(io.BytesIO(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # over twice the limit: Pillow's own error
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(io.BytesIO(data))


def test_policy_names_version_2_and_explains_older_caches():
    assert POLICY["name"] == "facecorpus-preprocess/2"
    assert "anchor" not in str(POLICY)
    assert policy_problem(dict(POLICY)) is None
    old = {"name": "facecorpus-preprocess/1", "mode": "RGB (PIL convert; ...)"}
    assert "earlier policy" in policy_problem(old) and "EXIF" in policy_problem(old)
    assert "'facecorpus-preprocess/2'" in policy_problem(old)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "I;16", "1", "LA"])
def test_any_mode_gives_rgb_at_the_vqgan_resolution_in_range(mode):
    img = Image.new("RGB", (178, 218), (200, 100, 50)).convert(mode)
    for size in (SIZE, 336):  # Talk2Face's VQGAN, and a 336x336 one
        x = preprocess(img, size=size)
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_scale_is_2x_minus_1_and_nothing_else():
    img = Image.new("RGB", (SIZE, SIZE), (0, 255, 51))
    x = preprocess(img, size=SIZE)
    # 0 -> -1, 255 -> +1, 51 -> 2*0.2-1: no CLIP mean/std anywhere (Talk2Face's training code's trap).
    assert torch.allclose(x[:, 0, 0], torch.tensor([-1.0, 1.0, 2 * 51 / 255 - 1]))
    assert torch.equal(to_model_input(preprocess_uint8(img, size=SIZE)), x)


def test_bbox_crop_centres_the_face_with_margin():
    img = Image.new("RGB", (400, 300), (0, 0, 0))
    img.paste((255, 255, 255), (150, 100, 250, 200))  # a white 100x100 "face"
    arr = preprocess_uint8(img, bbox=[150, 100, 250, 200], size=SIZE)
    # square side 100 * (1 + 2*margin) = 150 around the box: the face fills the middle 2/3.
    side = 100 / (100 * (1 + 2 * POLICY["margin"])) * SIZE
    lo, hi = int((SIZE - side) / 2) + 3, int((SIZE + side) / 2) - 3
    assert arr[lo:hi, lo:hi].min() >= 250
    assert arr[:lo - 6].max() <= 5 and arr[hi + 6:].max() <= 5


def test_bbox_near_edge_pads_black_and_bad_boxes_are_named():
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    arr = preprocess_uint8(img, bbox=[0, 0, 50, 50], size=SIZE)
    assert arr[0, 0].max() == 0 and arr[SIZE // 2, SIZE // 2].min() == 255
    with pytest.raises(ValueError, match="not x0 < x1"):
        preprocess_uint8(img, bbox=[50, 0, 40, 10], size=SIZE)
    with pytest.raises(ValueError, match="outside"):
        preprocess_uint8(img, bbox=[200, 200, 300, 300], size=SIZE)


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
