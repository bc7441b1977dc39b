"""Image processor: path / PIL image / array → ``pixel_values`` [C, H, W] float, normalised.

Decoding is guarded: the pixel count is read from the file header and checked against ``max_pixels`` before
any pixel is decoded (a decompression bomb never reaches memory), and only common formats are accepted.
Pure PIL + torch (no torchvision).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..config import ModalityConfig
from .errors import DataError
from .processors import Processor, parse_options

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
# HF preprocessor configs store PIL resample filters as ints.
RESAMPLE_BY_INT = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class ImageProcessorConfig:
    image_size: int = 224  # output is image_size × image_size
    resize_size: int | None = None  # shorter side before the center crop; None = image_size (no crop margin)
    channels: int = 3  # 3 = RGB, 1 = grayscale
    mean: list[float] | None = None  # None: ImageNet stats for RGB, 0.5 for grayscale (or the checkpoint's)
    std: list[float] | None = None
    resample: str = "bilinear"
    max_pixels: int = 40_000_000  # width × height read from the header; larger files are refused
    formats: list[str] | None = None  # allowed PIL formats; None = PNG, JPEG, BMP, GIF, TIFF, WEBP
    # augmentation (only when called with augment=True)
    crop_scale: list[float] | None = None  # random resized crop area range; None = [0.8, 1.0]
    rotation: float = 10.0  # max degrees, uniform in ±rotation
    translate: float = 0.1  # max shift as a fraction of the image size
    hflip: bool = False  # off by default: digits and text must not be mirrored


class ImageProcessor(Processor):
    """Decode → (augment) → resize shorter side → center crop → [0, 1] → normalise.

    Accepts a file path, a PIL image, or a numpy array (H, W) / (H, W, C): uint8 in [0, 255], or float in
    [0, 1] (float arrays whose max exceeds 1 are taken as [0, 255]).
    """

    kind = "image"

    def __init__(self, config: ImageProcessorConfig):
        if config.channels not in (1, 3):
            raise DataError(f"image processor: channels must be 1 or 3, got {config.channels}")
        if config.resample not in RESAMPLE:
            raise DataError(f"image processor: resample {config.resample!r} is not one of {list(RESAMPLE)}")
        self.config = config
        self.image_size = config.image_size
        self.resize_size = config.resize_size or config.image_size
        self.channels = config.channels
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if config.channels == 3 else ([0.5], [0.5])
        mean, std = config.mean or default_mean, config.std or default_std
        if len(mean) != self.channels or len(std) != self.channels:
            raise DataError(f"image processor: mean/std need {self.channels} values, got {mean} / {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.formats = tuple(f.upper() for f in (config.formats or ALLOWED_FORMATS))
        self.crop_scale = tuple(config.crop_scale or (0.8, 1.0))

    @classmethod
    def from_config(cls, cfg: ModalityConfig, prefix: str) -> ImageProcessor:
        options = dict(cfg.processor or {})
        parse_options(ImageProcessorConfig, options, prefix)  # reject unknown keys before anything else
        if cfg.pretrained:
            # Explicit options win; then the checkpoint's preprocessor_config.json; then our defaults.
            options = {**_options_from_hf(cfg.pretrained), **options}
        return cls(parse_options(ImageProcessorConfig, options, prefix))

    # ------------------------------------------------------------------------------------------ decode

    def check(self, raw: Any) -> None:
        if isinstance(raw, (str, os.PathLike)):
            with self._open(raw) as image:
                fmt = image.format
                try:
                    image.verify()  # PNG: walks every chunk and its CRC without decoding pixels
                except Exception as err:
                    raise DataError(f"image file {str(raw)!r} is corrupt: {err}") from err
            if fmt != "PNG":
                # verify() barely looks at other formats (a truncated JPEG passes it), so decode: JPEG in draft
                # mode at 1/8 scale, which still reads the whole compressed stream but costs little.
                with self._open(raw) as image:
                    try:
                        if fmt == "JPEG":
                            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                        image.load()
                    except Exception as err:
                        raise DataError(f"image file {str(raw)!r} is corrupt: {err}") from err
        elif isinstance(raw, np.ndarray):
            _check_array(raw)
        elif not isinstance(raw, Image.Image):
            raise DataError(f"image input must be a path, PIL image or numpy array, got {type(raw).__name__}")

    def _open(self, path: str | os.PathLike) -> Image.Image:
        """Open lazily (header only) and enforce format + pixel cap before any decode."""
        if not Path(path).is_file():
            raise DataError(f"image file {str(path)!r} does not exist")
        try:
            image = Image.open(path)
        except UnidentifiedImageError as err:
            raise DataError(f"image file {str(path)!r} is not a readable image ({err})") from err
        except Image.DecompressionBombError as err:
            raise DataError(f"image file {str(path)!r} is too large: {err}") from err
        except OSError as err:
            raise DataError(f"image file {str(path)!r} is not a readable image ({err})") from err
        if image.format not in self.formats:
            image.close()
            raise DataError(f"image file {str(path)!r} has format {image.format}; allowed: {', '.join(self.formats)}")
        width, height = image.size
        if width * height > self.config.max_pixels:
            image.close()
            raise DataError(
                f"image file {str(path)!r} has {width}×{height} = {width * height:,} pixels, over the cap "
                f"max_pixels={self.config.max_pixels:,} (set processor.max_pixels to allow it)"
            )
        return image

    def load(self, raw: Any) -> Image.Image:
        """Any accepted input → a decoded PIL image in mode RGB or L."""
        if isinstance(raw, (str, os.PathLike)):
            with self._open(raw) as image:
                try:
                    image.load()
                except Exception as err:
                    raise DataError(f"image file {str(raw)!r} is corrupt: {err}") from err
                return self._to_mode(image)
        if isinstance(raw, np.ndarray):
            _check_array(raw)
            return self._to_mode(Image.fromarray(_array_to_uint8(raw)))
        if isinstance(raw, Image.Image):
            if raw.width * raw.height > self.config.max_pixels:
                raise DataError(f"image of {raw.width}×{raw.height} pixels is over max_pixels={self.config.max_pixels:,}")
            return self._to_mode(raw)
        raise DataError(f"image input must be a path, PIL image or numpy array, got {type(raw).__name__}")

    def _to_mode(self, image: Image.Image) -> Image.Image:
        target = "RGB" if self.channels == 3 else "L"
        if image.mode in ("RGBA", "LA", "P") and target == "RGB":
            # Composite transparency on white rather than letting PIL drop alpha to black.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert(target) if image.mode != target else image.copy()

    # ------------------------------------------------------------------------------------------ transform

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        """raw → {"pixel_values": [C, image_size, image_size] float32}."""
        image = self.load(raw)
        resample = RESAMPLE[self.config.resample]
        if augment:
            image = self._augment(image, resample)
        else:
            image = self._resize_center_crop(image, resample)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
        return {"pixel_values": ((pixels - self.mean) / self.std).contiguous()}

    def _resize_center_crop(self, image: Image.Image, resample: int) -> Image.Image:
        width, height = image.size
        scale = self.resize_size / min(width, height)
        new_w, new_h = max(self.image_size, round(width * scale)), max(self.image_size, round(height * scale))
        image = image.resize((new_w, new_h), resample)
        left, top = (new_w - self.image_size) // 2, (new_h - self.image_size) // 2
        return image.crop((left, top, left + self.image_size, top + self.image_size))

    def _augment(self, image: Image.Image, resample: int) -> Image.Image:
        """Random resized crop (mild scale, aspect 3/4..4/3) + small rotation/translation (+ optional flip)."""
        width, height = image.size
        area = width * height
        box = (0, 0, width, height)
        for _ in range(10):
            target = area * _uniform(*self.crop_scale)
            ratio = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
            crop_w, crop_h = math.sqrt(target * ratio), math.sqrt(target / ratio)
            if crop_w <= width and crop_h <= height:
                left, top = _uniform(0, width - crop_w), _uniform(0, height - crop_h)
                box = (left, top, left + crop_w, top + crop_h)
                break
        size = self.image_size
        image = image.resize((size, size), resample, box=box)  # sub-pixel box: works for 8×8 images too
        angle = _uniform(-self.config.rotation, self.config.rotation)
        shift = self.config.translate * size
        translate = (_uniform(-shift, shift), _uniform(-shift, shift))
        if angle or translate != (0.0, 0.0):
            image = image.rotate(angle, resample=Image.BILINEAR, translate=translate)
        if self.config.hflip and torch.rand(()) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image

    def empty(self) -> dict[str, Tensor]:
        return {"pixel_values": torch.zeros(self.channels, self.image_size, self.image_size)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a Hugging Face style preprocessor_config.json (read back when ``pretrained`` is this dir)."""
        directory = super().save_pretrained(directory)
        payload = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.resize_size},
            "do_center_crop": True,
            "crop_size": {"height": self.image_size, "width": self.image_size},
            "resample": {v: k for k, v in RESAMPLE_BY_INT.items()}[self.config.resample]
            if self.config.resample in RESAMPLE_BY_INT.values()
            else 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": self.mean.flatten().tolist(),
            "image_std": self.std.flatten().tolist(),
        }
        (directory / "preprocessor_config.json").write_text(json.dumps(payload, indent=2))
        return directory


def _uniform(low: float, high: float) -> float:
    # torch's RNG: DataLoader seeds it per worker, so augmentation is reproducible with a seeded run.
    return float(low + (high - low) * torch.rand(()))


def _check_array(array: np.ndarray) -> None:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise DataError(f"image array must be (H, W) or (H, W, C) with C in 1/3/4, got shape {array.shape}")
    if array.size == 0:
        raise DataError("image array is empty")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"image array dtype {array.dtype} is not numeric")


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        return array
    is_float = np.issubdtype(array.dtype, np.floating)
    array = array.astype(np.float32)
    if is_float and array.max(initial=0) <= 1.0:
        array = array * 255.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _options_from_hf(pretrained: str) -> dict[str, Any]:
    """image_size / resize_size / mean / std / resample from a checkpoint's preprocessor_config.json, if any."""
    data = _read_preprocessor_config(pretrained)
    if not data:
        return {}
    options: dict[str, Any] = {}
    size, crop = data.get("size") or {}, data.get("crop_size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    shortest = size.get("shortest_edge") or size.get("height")
    if data.get("do_center_crop") and crop.get("height"):
        options["image_size"] = int(crop["height"])
        if shortest:
            options["resize_size"] = int(shortest)
    elif shortest:
        options["image_size"] = int(shortest)
    if data.get("do_normalize", True) and data.get("image_mean") is not None:
        mean, std = data["image_mean"], data["image_std"]
        options["mean"] = list(mean) if isinstance(mean, (list, tuple)) else [mean] * 3
        options["std"] = list(std) if isinstance(std, (list, tuple)) else [std] * 3
        options["channels"] = len(options["mean"])
    if isinstance(data.get("resample"), int) and data["resample"] in RESAMPLE_BY_INT:
        options["resample"] = RESAMPLE_BY_INT[data["resample"]]
    return options


def _read_preprocessor_config(pretrained: str) -> dict[str, Any]:
    path = Path(pretrained) / "preprocessor_config.json"
    if Path(pretrained).is_dir():
        return json.loads(path.read_text()) if path.is_file() else {}
    try:  # a hub name: only what is already cached (HF_HUB_OFFLINE respected), never a hard failure
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(pretrained, "preprocessor_config.json")).read_text())
    except Exception:
        return {}
