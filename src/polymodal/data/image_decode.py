"""One decoding policy for every image input: file path, PIL image or numpy array → a canonical image.

The canonical image is either

- an 8-bit PIL image in the target mode (``"RGB"`` or ``"L"``): what every 8-bit source becomes, so resizing is
  bit-identical to Hugging Face image processors, which resize uint8 PIL images; or
- a list of single-band PIL ``"F"`` images (one per output channel) holding values in [0, 1]: what sources with
  more than 8 bits become (modes I;16*, I, F; uint16 / int32 / float arrays), so no precision is lost to an
  8-bit conversion that would clip or quantise.

The policy (docs/DATA.md, "Image decoding policy"):

- EXIF orientation 2-8 is applied (Pillow's ``ImageOps.exif_transpose``) to files and PIL images alike, so the
  model sees the pixels as every viewer displays them (JPEG, TIFF, WebP and PNG eXIf carry the tag).
- Transparency (modes RGBA, LA, PA, RGBa, La, and a ``transparency`` key: P / L / RGB with a tRNS chunk) is
  composited on WHITE, partial alpha blending, whatever the output channel count; a grey output is the
  luminance of that RGB result (ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B, Pillow's "L" conversion).
  This is transformers' ``convert_to_rgb`` rule, so RGB output matches Hugging Face processors.
- Value ranges follow the bit depth: 8-bit value / 255; I;16 (any byte order) / 65535; mode I / the bit depth
  the file header gives (PNG: 16, TIFF: BitsPerSample; else 32-bit signed); F and float arrays are taken as
  already in [0, 1]. Arrays: see ``array_to_unit``.
- NaN or infinite values are a DataError naming the input.

Decompression bombs: polymodal's ``max_pixels`` is the one limit in force. Inside ``pixel_cap(cap)`` Pillow's own
check (``Image.MAX_IMAGE_PIXELS``: a warning above 89 MP, an error above 179 MP) is replaced, for the calling
thread only, by polymodal's cap, so Pillow neither refuses what the user allowed nor speaks instead of polymodal;
other threads and all code outside the block keep Pillow's behaviour unchanged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError

Decoded = Image.Image | list  # an 8-bit PIL image (RGB / L), or a list of "F" bands in [0, 1]

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
HIGH_PRECISION_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ORIENTATION_TAG = 0x0112
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of Pillow's RGB → L conversion


# ---------------------------------------------------------------------------------------------- pixel cap


class PixelCapExceeded(Image.DecompressionBombError):
    """Raised from inside Pillow (a frame or tile larger than the header said) when polymodal's cap is passed."""

    def __init__(self, size: tuple[int, int], cap: int):
        super().__init__(f"{size[0]}×{size[1]} pixels over max_pixels={cap:,}")
        self.size, self.cap = size, cap


_guard = threading.local()
_install_lock = threading.Lock()
_pillow_bomb_check: Any = None


def _guarded_bomb_check(size: tuple[int, int], *args: Any, **kwargs: Any) -> None:
    cap = getattr(_guard, "cap", None)
    if cap is None:  # not inside pixel_cap on this thread: Pillow's own behaviour, untouched
        return _pillow_bomb_check(size, *args, **kwargs)
    if max(1, size[0]) * max(1, size[1]) > cap:
        raise PixelCapExceeded(tuple(size), cap)
    return None


def _install_guard() -> None:
    # Pillow calls the module-level Image._decompression_bomb_check (Image.open, crop, TIFF tiles, GIF frames);
    # swapping it once for a thread-aware wrapper is the only way to lift the limit for one decode without
    # changing Image.MAX_IMAGE_PIXELS, a process-wide global that other threads read at the same time.
    global _pillow_bomb_check
    with _install_lock:
        current = getattr(Image, "_decompression_bomb_check", None)
        if current is None or current is _guarded_bomb_check:
            return
        _pillow_bomb_check = current
        Image._decompression_bomb_check = _guarded_bomb_check


@contextmanager
def pixel_cap(cap: int) -> Iterator[None]:
    """Within the block, on this thread only, Pillow's decompression-bomb limit is ``cap`` pixels (no warning)."""
    _install_guard()
    previous = getattr(_guard, "cap", None)
    _guard.cap = int(cap)
    try:
        yield
    finally:
        _guard.cap = previous


def cap_message(what: str, width: int, height: int, cap: int) -> str:
    return (
        f"{what} has {width}×{height} = {width * height:,} pixels, over the cap max_pixels={cap:,}; to allow it, "
        f"raise the image processor's max_pixels (model.modalities.<name>.processor.max_pixels)"
    )


def check_cap(what: str, width: int, height: int, cap: int) -> None:
    if width * height > cap:
        raise DataError(cap_message(what, width, height, cap))


@contextmanager
def open_image_file(path: str | os.PathLike, formats: tuple[str, ...], max_pixels: int) -> Iterator[Image.Image]:
    """Open lazily (header only) under ``pixel_cap(max_pixels)``; check format and pixel count before any decode.

    Raises DataError naming the file: missing, unreadable, format not in ``formats``, or over ``max_pixels``.
    """
    what = f"image file {str(path)!r}"
    if not os.path.isfile(path):
        raise DataError(f"{what} does not exist")
    with pixel_cap(max_pixels):
        try:
            image = Image.open(path)
        except PixelCapExceeded as err:
            raise DataError(cap_message(what, *err.size, err.cap)) from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise DataError(f"{what} is not a readable image ({err})") from err
        with image:
            # camera JPEGs with a preview frame open as MPO (a JPEG container): allowed wherever JPEG is
            if image.format not in formats and not (image.format == "MPO" and "JPEG" in formats):
                raise DataError(f"{what} has format {image.format}; allowed: {', '.join(formats)}")
            check_cap(what, *image.size, max_pixels)
            try:
                yield image
            except PixelCapExceeded as err:
                raise DataError(cap_message(what, *err.size, err.cap)) from None


def load_pixels(image: Image.Image, what: str) -> None:
    """Decode an opened file's pixels; a truncated or corrupt stream is a DataError naming the file."""
    try:
        image.load()
    except PixelCapExceeded:
        raise
    except Exception as err:
        raise DataError(f"{what} is corrupt: {err}") from err


# ---------------------------------------------------------------------------------------------- PIL images


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The image as displayed: EXIF orientation 2-8 applied (a new image), else ``image`` itself."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block must not make a readable image unreadable
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def canonical(image: Image.Image, channels: int, what: str, copy: bool = True) -> Decoded:
    """PIL image (any mode) → canonical image with ``channels`` (1 or 3) channels, by the module's policy.

    Never modifies ``image``. With ``copy`` (default) never returns ``image`` itself, so the caller may close it;
    ``copy=False`` returns it unchanged when it already is canonical (8-bit, target mode, upright).
    """
    source = image
    image = apply_exif_orientation(image)
    if image.mode in HIGH_PRECISION_MODES:
        return _unit_bands(_high_precision_values(image, what, _integer_depth(source)), channels)
    if image.mode == "La":  # premultiplied grey + alpha: Pillow has no La → LA conversion
        values = np.asarray(image, dtype=np.float32)
        alpha = values[..., 1:2]
        grey = np.where(alpha > 0, values[..., :1] * 255.0 / np.maximum(alpha, 1), 0)
        image = Image.fromarray(np.concatenate([np.clip(np.rint(grey), 0, 255), alpha], -1).astype(np.uint8))
    if image.mode in ALPHA_MODES or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "RGB"):  # P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's RGB conversion
        image = image.convert("RGB")
    if channels == 1 and image.mode == "RGB":
        image = image.convert("L")  # the luminance of the RGB result: the same policy for both channel counts
    elif channels == 3 and image.mode == "L":
        image = image.convert("RGB")
    return image.copy() if copy and image is source else image


def _high_precision_values(image: Image.Image, what: str, depth: tuple[int, bool]) -> np.ndarray:
    """Single-band I;16* / I / F image → float32 [H, W] in [0, 1]; mode I by ``depth`` = (bits, signed)."""
    values = np.asarray(image)
    if image.mode == "F":
        unit = _float_to_unit(values, what)
    elif image.mode == "I":
        bits, signed = depth
        if not signed and values.min(initial=0) < 0:
            values = values.astype(np.int64) % (1 << 32)  # unsigned 32-bit data wrapped by Pillow's int32 mode
        unit = _int_to_unit(values, (1 << (bits - 1 if signed else bits)) - 1, what)
    else:  # I;16, I;16B, ...: unsigned 16-bit in either byte order
        unit = values.astype(np.float32) / 65535.0
    transparent = image.info.get("transparency")
    if isinstance(transparent, int) and image.mode != "F":  # 16-bit grey PNG with a tRNS value: white, as above
        unit = np.where(values == transparent, np.float32(1.0), unit)
    return unit.astype(np.float32)


def _integer_depth(image: Image.Image) -> tuple[int, bool]:
    """(bits, signed) of a mode-I image as opened (before any transpose, which drops ``format`` and the tags):
    16-bit for PNG, the TIFF tags' BitsPerSample / SampleFormat, else 32-bit signed."""
    if image.format == "PNG":
        return 16, False
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258, 32)
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = tags.get(339, 1)
        signed = int(fmt[0] if isinstance(fmt, tuple) else fmt) == 2
        return bits, signed
    return 32, True


# ---------------------------------------------------------------------------------------------- arrays


def check_array(array: np.ndarray, what: str = "image array") -> None:
    """Shape, dtype and value checks of ``array_to_unit`` without building the image."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise DataError(
            f"{what} must be (H, W) or (H, W, C) with C in 1 (grey), 2 (grey + alpha), 3 (RGB), 4 (RGBA), "
            f"got shape {array.shape}"
        )
    if array.size == 0:
        raise DataError(f"{what} is empty (shape {array.shape})")
    dtype = array.dtype
    if dtype == np.int64:
        raise DataError(
            f"{what} has dtype int64, which has no image bit depth (it is numpy's default integer type, so the data "
            f"is usually 0-255 or 0-65535 cast by accident); cast it to uint8 (0-255), uint16 (0-65535) or float "
            f"in [0, 1]"
        )
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise DataError(f"{what} has dtype {dtype}, expected bool, an integer type or a float type")
    if np.issubdtype(dtype, np.floating):
        _float_to_unit(array, what)  # finiteness and [0, 1] range
    elif np.issubdtype(dtype, np.signedinteger) and array.min() < 0:
        raise DataError(
            f"{what} ({dtype}) holds negative values (min {array.min()}); image intensities are 0 and up: shift or "
            f"cast the data (uint8 0-255, uint16 0-65535, or float in [0, 1])"
        )


def array_to_unit(array: np.ndarray, what: str = "image array") -> np.ndarray:
    """Numpy image → float32 (H, W, C) in [0, 1].

    bool: False 0, True 1. Unsigned ints: value / dtype max (uint8 / 255, uint16 / 65535, uint32 / 2**32-1).
    Signed ints: value / dtype positive max (int8 / 127, int16 / 32767, int32 / 2**31-1, the convention of
    torchvision's ``convert_image_dtype``); negative values are a DataError; int64 is refused (see check_array).
    Floats: taken as already in [0, 1] (values outside by more than 1e-6 are a DataError); NaN / inf are a DataError.
    """
    check_array(array, what)
    values = array if array.ndim == 3 else array[..., None]
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.floating):
        return _float_to_unit(values, what)
    return _int_to_unit(values, np.iinfo(values.dtype).max, what)


def array_to_canonical(array: np.ndarray, channels: int, what: str = "image array") -> Decoded:
    """Numpy image → canonical image: uint8 goes through the PIL path (same as an 8-bit file), others stay float."""
    check_array(array, what)
    if array.dtype == np.uint8 or array.dtype == np.bool_:
        values = array.astype(np.uint8) * 255 if array.dtype == np.bool_ else array
        if values.ndim == 3 and values.shape[2] == 1:
            values = values[..., 0]
        # Pillow infers L / LA / RGB / RGBA from the shape
        return canonical(Image.fromarray(np.ascontiguousarray(values)), channels, what)
    unit = array_to_unit(array, what)
    if unit.shape[2] in (2, 4):  # straight alpha, composited on white as for PIL images
        alpha = unit[..., -1:]
        unit = unit[..., :-1] * alpha + (1.0 - alpha)
    if channels == 1 and unit.shape[2] == 3:
        unit = unit @ np.asarray(LUMA, dtype=np.float32)
    else:
        unit = unit[..., 0] if unit.shape[2] == 1 else unit
    if unit.ndim == 2:
        return _unit_bands(unit, channels)
    return [Image.fromarray(np.ascontiguousarray(unit[..., c], dtype=np.float32)) for c in range(3)]


def _int_to_unit(values: np.ndarray, maximum: int, what: str) -> np.ndarray:
    if values.min(initial=0) < 0:
        raise DataError(f"{what} holds negative values (min {values.min()}); image intensities are 0 and up")
    return (values.astype(np.float64) / float(maximum)).astype(np.float32)


def _float_to_unit(values: np.ndarray, what: str) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        raise DataError(
            f"{what} holds NaN or infinite values ({bad:,} of {values.size:,}); images must be finite: replace or "
            f"drop the input"
        )
    low, high = float(values.min()), float(values.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise DataError(
            f"{what} is float with values in [{low:g}, {high:g}]; float images must be in [0, 1] (divide 0-255 "
            f"data by 255, or pass it as uint8)"
        )
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _unit_bands(grey: np.ndarray, channels: int) -> list:
    band = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))  # mode F
    return [band] * channels  # grey → RGB repeats the band (its luminance is itself); PIL ops never mutate


# ---------------------------------------------------------------------------------------------- canonical images


def decoded_size(image: Decoded) -> tuple[int, int]:
    """(width, height) of a canonical image."""
    return (image[0] if isinstance(image, list) else image).size


def map_bands(image: Decoded, fn: Any) -> Decoded:
    """Apply a PIL operation (resize, crop, rotate, transpose) to the image or to each of its float bands."""
    if not isinstance(image, list):
        return fn(image)
    done: dict[int, Image.Image] = {}  # grey → RGB repeats one band: transform it once (fn is deterministic)
    for band in image:
        if id(band) not in done:
            done[id(band)] = fn(band)
    return [done[id(band)] for band in image]


def to_unit_array(image: Decoded) -> np.ndarray:
    """Canonical image → float32 [C, H, W] in [0, 1] (8-bit / 255; float bands clipped, e.g. bicubic overshoot)."""
    if isinstance(image, list):
        return np.clip(np.stack([np.asarray(band, dtype=np.float32) for band in image]), 0.0, 1.0)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
