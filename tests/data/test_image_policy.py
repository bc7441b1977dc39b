"""One image decoding policy on every path: EXIF orientation, modes and transparency, bit depths, arrays,
NaN / inf, and polymodal's max_pixels as the only pixel cap (issue #11)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import ModalityConfig, ModelConfig, from_dict
from polymodal.data import DataError, build_processor
from polymodal.data.image_decode import pixel_cap

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def proc(channels=3, size=8, **options):
    options = {"image_size": size, "channels": channels, "mean": [0.0] * channels, "std": [1.0] * channels, **options}
    return build_processor(ModalityConfig(kind="image", processor=options), "image")


def pixels(processor, raw, **kwargs) -> np.ndarray:
    return processor(raw, **kwargs)["pixel_values"].numpy()


# ---------------------------------------------------------------------------------------------- EXIF orientation

# EXIF 2.3 orientation → the displayed pixels from the stored ones (numpy, independent of Pillow's table).
DISPLAYED = {
    2: lambda s: s[:, ::-1],  # mirrored horizontally
    3: lambda s: s[::-1, ::-1],  # rotated 180°
    4: lambda s: s[::-1, :],  # mirrored vertically
    5: lambda s: s.swapaxes(0, 1),  # transposed
    6: lambda s: np.rot90(s, k=-1),  # rotated 90° clockwise
    7: lambda s: s[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda s: np.rot90(s, k=1),  # rotated 90° counter-clockwise
}
STORED = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high, asymmetric


def save_with_orientation(path, array, orientation, **kwargs):
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **kwargs)
    return str(path)


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
@pytest.mark.parametrize("fmt,kwargs", [("png", {}), ("tiff", {}), ("webp", {"lossless": True})])
def test_exif_orientation_applied_for_every_value_and_lossless_format(tmp_path, orientation, fmt, kwargs):
    path = save_with_orientation(tmp_path / f"o{orientation}.{fmt}", STORED, orientation, **kwargs)
    upright = np.ascontiguousarray(DISPLAYED[orientation](STORED))
    for channels in (3, 1):
        p = proc(channels, size=12, resize_size=12)
        np.testing.assert_array_equal(pixels(p, path), pixels(p, upright))
        np.testing.assert_array_equal(pixels(p, Image.open(path)), pixels(p, upright))  # a PIL image passed in


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_of_a_jpeg(tmp_path, orientation):
    path = save_with_orientation(tmp_path / "photo.jpg", STORED, orientation, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))  # the decoded JPEG pixels as stored
    upright = np.ascontiguousarray(DISPLAYED[orientation](stored))
    p = proc(3, size=12)
    np.testing.assert_array_equal(pixels(p, path), pixels(p, upright))


def test_exif_orientation_on_the_augmentation_and_predictor_paths(tmp_path):
    path = save_with_orientation(tmp_path / "o6.png", STORED, 6)
    upright = np.ascontiguousarray(DISPLAYED[6](STORED))
    p = proc(3, size=12)
    torch.manual_seed(3)
    augmented = pixels(p, path, augment=True)
    torch.manual_seed(3)
    np.testing.assert_array_equal(augmented, pixels(p, upright, augment=True))

    from polymodal.inference import Predictor
    from polymodal.models import MultimodalModel

    image = {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 12, "channels": 3}}
    config = {"modalities": {"image": image}, "fusion": {"dim": 8}, "head": {"labels": ["a", "b"], "dropout": 0.0}}
    predictor = Predictor(MultimodalModel(from_dict(ModelConfig, config, "model")))
    batches = [predictor.make_batch([{"image": raw}]).inputs["image"]["pixel_values"]
               for raw in (path, Image.open(path), upright)]
    assert torch.equal(batches[0], batches[2]) and torch.equal(batches[1], batches[2])


# ---------------------------------------------------------------------------------------------- modes, transparency

RGBA = np.random.default_rng(1).integers(0, 256, (7, 9, 4), dtype=np.uint8)
RGBA[0, :, 3], RGBA[1, :, 3] = 0, 255  # fully transparent and fully opaque rows, partial alpha elsewhere


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Straight alpha over white, in [0, 1], [3, H, W]."""
    colour, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    return (colour * alpha + (1 - alpha)).transpose(2, 0, 1)


@pytest.mark.parametrize("raw", ["file", "pil", "array"])
def test_rgba_composited_on_white_and_grey_is_its_luminance(tmp_path, raw):
    Image.fromarray(RGBA).save(tmp_path / "rgba.png")
    source = {"file": str(tmp_path / "rgba.png"), "pil": Image.fromarray(RGBA), "array": RGBA}[raw]
    p3, p1 = proc(3, size=7, resize_size=7), proc(1, size=7, resize_size=7)
    expected = composite_on_white(RGBA)[:, :, 1:8]  # 9×7 is cropped to its middle 7 columns
    rgb, grey = pixels(p3, source), pixels(p1, source)
    assert np.abs(rgb - expected).max() <= 1.5 / 255  # partial alpha blends (8-bit rounding)
    assert np.all(rgb[:, 0] == 1.0)  # fully transparent → white
    luminance = np.tensordot(LUMA, rgb, axes=1)
    assert np.abs(grey[0] - luminance).max() <= 1.0 / 255


def test_every_transparent_mode_follows_the_same_policy(tmp_path):
    rgba = Image.fromarray(RGBA)
    la = rgba.convert("LA")
    reference_rgb, reference_grey = pixels(proc(3, size=7), rgba), pixels(proc(1, size=7), la)
    cases = {
        "RGBa": (rgba.convert("RGBa"), reference_rgb, 3, 3 / 255),  # premultiplied: rounding at low alpha
        "LA": (la, reference_grey, 1, 1 / 255),
        "La": (la.convert("La"), reference_grey, 1, 3 / 255),
        "LA→RGB": (la, np.repeat(reference_grey, 3, 0), 3, 1 / 255),
    }
    for name, (image, expected, channels, tolerance) in cases.items():
        got = pixels(proc(channels, size=7), image)
        assert np.abs(got - expected).max() <= tolerance, name

    # palette with a transparent index (PNG tRNS) and palette + alpha (PA): transparent pixels are white
    palette = Image.new("P", (6, 6), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.paste(1, (0, 0, 3, 6))
    palette.save(tmp_path / "trns.png", transparency=0)
    for channels in (3, 1):
        got = pixels(proc(channels, size=6), str(tmp_path / "trns.png"))
        assert np.all(got[:, :, 3:] == 1.0)  # index 0 (black) is transparent → white
        red = np.array([200, 30, 30]) / 255
        assert np.allclose(got[:, :, :3], (red if channels == 3 else np.array([red @ LUMA]))[:, None, None], atol=1 / 255)
    pa = Image.merge("PA", (palette, Image.new("L", (6, 6), 0)))  # all transparent
    assert np.all(pixels(proc(3, size=6), pa) == 1.0)


def test_opaque_modes_cmyk_palette_1bit_and_ycbcr():
    rgb = Image.fromarray(RGBA[..., :3])
    for image in (rgb.convert("CMYK"), rgb.convert("P"), rgb.convert("YCbCr")):
        as_rgb = image.convert("RGB")
        np.testing.assert_array_equal(pixels(proc(3, size=7), image), pixels(proc(3, size=7), as_rgb))
        luminance = np.tensordot(LUMA, pixels(proc(3, size=7), as_rgb), axes=1)  # 9×7: cropped, not resampled
        assert np.abs(pixels(proc(1, size=7), image)[0] - luminance).max() <= 0.5 / 255
    bits = Image.fromarray(np.eye(8, dtype=bool))
    for channels in (1, 3):
        got = pixels(proc(channels), bits)
        np.testing.assert_array_equal(got, np.broadcast_to(np.eye(8, dtype=np.float32), got.shape))


# ---------------------------------------------------------------------------------------------- bit depths

RAMP16 = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)


def test_16bit_sources_are_scaled_by_65535_on_every_path(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "ramp.png")  # PNG bit depth 16, opened as I;16
    Image.fromarray(RAMP16).save(tmp_path / "ramp.tif")
    expected = RAMP16 / 65535.0
    big_endian = Image.frombytes("I;16B", (8, 8), RAMP16.astype(">u2").tobytes())
    sources = [str(tmp_path / "ramp.png"), str(tmp_path / "ramp.tif"), RAMP16, Image.fromarray(RAMP16), big_endian]
    for source in sources:
        for channels in (1, 3):
            got = pixels(proc(channels), source)
            assert np.abs(got - expected).max() < 1e-6, (source if isinstance(source, str) else type(source))
    # high-precision values survive resizing: a constant 16-bit level keeps its 65536-level value, no 8-bit step
    level = np.full((20, 30), 1000, dtype=np.uint16)
    assert np.abs(pixels(proc(1, size=8), level) - 1000 / 65535).max() < 1e-6


def test_32bit_integer_and_float_images(tmp_path):
    ints = (np.arange(64, dtype=np.int64).reshape(8, 8) * (2**31 - 1) // 63).astype(np.int32)
    expected = ints / (2**31 - 1)
    Image.fromarray(ints).save(tmp_path / "i32.tif")  # TIFF mode I: 32-bit signed samples
    for source in (ints, Image.fromarray(ints), str(tmp_path / "i32.tif")):
        assert np.abs(pixels(proc(1), source)[0] - expected).max() < 1e-6
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "f32.tif")  # mode F
    for source in (ramp, ramp.astype(np.float64), ramp.astype(np.float16), str(tmp_path / "f32.tif")):
        assert np.abs(pixels(proc(1), source)[0] - ramp).max() < 1e-3


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.uint32, 2**32 - 1),
                                         (np.int8, 127), (np.int16, 32767), (np.int32, 2**31 - 1)])
def test_integer_arrays_scaled_by_their_dtype_range(dtype, scale):
    values = (np.arange(48).reshape(4, 4, 3) * (np.iinfo(dtype).max // 47)).astype(dtype)
    got = pixels(proc(3, size=4), values)
    assert np.abs(got - values.transpose(2, 0, 1) / scale).max() < 1e-6


def test_array_alpha_channels_and_bool():
    rgba16 = RGBA.astype(np.uint16) * 257  # the same image at 16 bits
    expected = composite_on_white(RGBA)
    p = proc(3, size=7)  # 9×7: cropped to the middle 7 columns, not resampled
    assert np.abs(pixels(p, rgba16) - expected[:, :, 1:8]).max() < 1e-6  # exact in float
    grey_alpha = np.stack([RGBA[..., 0], RGBA[..., 3]], -1)  # (H, W, 2): grey + alpha
    grey = RGBA[..., 0] / 255 * RGBA[..., 3] / 255 + (1 - RGBA[..., 3] / 255)
    assert np.abs(pixels(proc(1, size=7), grey_alpha)[0] - grey[:, 1:8]).max() <= 1 / 255
    np.testing.assert_array_equal(pixels(proc(1), np.eye(8, dtype=bool))[0], np.eye(8))


@pytest.mark.parametrize("array,match", [
    (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 8, 3), np.inf, np.float64), "NaN or infinite"),
    (np.where(np.eye(8, dtype=bool), np.nan, 0.5).astype(np.float32), r"NaN or infinite values \(8 of 64\)"),
    (np.full((8, 8), 2.0, np.float32), r"values in \[2, 2\].*must be in \[0, 1\]"),
    (np.full((8, 8), -3, np.int16), "negative values"),
    (np.zeros((8, 8), np.int64), "int64.*cast it to uint8"),
    (np.zeros((8, 8, 5), np.uint8), r"C in 1 \(grey\)"),
])
def test_bad_arrays_are_refused_naming_the_input(array, match):
    p = proc(1)
    for call in (p.check, p):
        with pytest.raises(DataError, match=match) as info:
            call(array)
        assert "image array" in str(info.value)


def test_float_tiff_with_nan_is_refused_by_check_and_decode(tmp_path):
    values = np.full((8, 8), 0.5, np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    p = proc(1)
    for call in (p.check, p):
        with pytest.raises(DataError, match=r"nan\.tif.*NaN or infinite values \(1 of 64\)"):
            call(str(tmp_path / "nan.tif"))


def test_torch_tensors_are_refused_with_the_conversion_to_use():
    with pytest.raises(DataError, match=r"torch tensor.*permute\(1, 2, 0\)\.numpy\(\)"):
        proc(3)(torch.zeros(3, 8, 8))


# ---------------------------------------------------------------------------------------------- pixel cap


@pytest.fixture
def small_pillow_limit(monkeypatch):
    """Pillow's limit at 1,000 pixels: warning above 1,000, error above 2,000 (as at 89 MP / 179 MP)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_max_pixels_lifts_pillows_limit_for_that_decode_only(tmp_path, small_pillow_limit):
    path = tmp_path / "big.png"
    Image.new("L", (60, 50), 128).save(path)  # 3,000 pixels: over Pillow's error limit of 2,000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    p = proc(1, max_pixels=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        p.check(str(path))
        assert np.allclose(pixels(p, str(path)), 128 / 255)
        assert np.allclose(pixels(p, Image.new("L", (60, 50), 128)), 128 / 255)
        assert np.allclose(pixels(p, np.full((50, 60), 128, np.uint8), augment=True), 128 / 255)
    assert Image.MAX_IMAGE_PIXELS == 1000  # nothing leaked: Pillow's own limit is back for everyone else
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    Image.new("L", (30, 40)).save(tmp_path / "warn.png")  # 1,200: Pillow's warning zone, under our cap
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p(str(tmp_path / "warn.png"))


def test_over_the_cap_is_polymodals_message_on_every_input(tmp_path, small_pillow_limit):
    path = tmp_path / "big.png"
    Image.new("L", (60, 50)).save(path)
    p = proc(1, max_pixels=2_500)
    for call in (p.check, p):
        with pytest.raises(DataError, match=r"big\.png' has 60×50 = 3,000 pixels, over the cap max_pixels=2,500; "
                                             r"to allow it, raise .*processor\.max_pixels") as info:
            call(str(path))
        assert "decompression bomb" not in str(info.value).lower()
    for raw, what in ((Image.new("RGB", (60, 50)), "PIL image"), (np.zeros((50, 60), np.uint8), "image array")):
        for call in (p.check, p):
            with pytest.raises(DataError, match=f"{what}.*3,000 pixels, over the cap max_pixels=2,500"):
                call(raw)


def test_pixel_cap_is_per_thread(tmp_path, small_pillow_limit):
    path = tmp_path / "big.png"
    Image.new("L", (60, 50)).save(path)
    inside, release, seen = threading.Event(), threading.Event(), {}

    def hold_a_raised_cap():
        with pixel_cap(10**9):
            seen["worker"] = Image.open(path).size  # lifted for this thread
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=hold_a_raised_cap)
    worker.start()
    try:
        assert inside.wait(10)
        with pytest.raises(Image.DecompressionBombError):  # meanwhile, this thread still has Pillow's limit
            Image.open(path)
    finally:
        release.set()
        worker.join()
    assert seen["worker"] == (60, 50)


def test_camera_jpeg_opened_as_mpo_is_a_jpeg(tmp_path):
    # phones write JPEGs with a preview frame, which Pillow opens as format MPO
    image = Image.fromarray(STORED)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[image], exif=exif, quality=95)
    assert Image.open(tmp_path / "phone.jpg").format == "MPO"
    p = proc(3, size=12)
    p.check(str(tmp_path / "phone.jpg"))
    stored = np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB"))
    np.testing.assert_array_equal(pixels(p, str(tmp_path / "phone.jpg")), pixels(p, np.rot90(stored, k=-1).copy()))
    with pytest.raises(DataError, match="format MPO; allowed: PNG"):
        proc(3, formats=["PNG"]).check(str(tmp_path / "phone.jpg"))


def test_float_pil_image_with_nan_is_refused_by_check():
    with pytest.raises(DataError, match=r"PIL image \(F, 8×8\) holds NaN"):
        proc(1).check(Image.fromarray(np.full((8, 8), np.nan, np.float32)))


def test_inputs_are_never_modified_and_load_outlives_the_file(tmp_path):
    image = Image.fromarray(STORED)
    before = np.asarray(image).copy()
    proc(3, size=4)(image)
    np.testing.assert_array_equal(np.asarray(image), before)  # the caller's PIL image is untouched, still open
    image.save(tmp_path / "rgb.png")
    loaded = proc(3).load(str(tmp_path / "rgb.png"))  # the file is closed; the decoded image is independent
    np.testing.assert_array_equal(np.asarray(loaded), STORED)
    array = RAMP16.copy()
    proc(1)(array)
    np.testing.assert_array_equal(array, RAMP16)
