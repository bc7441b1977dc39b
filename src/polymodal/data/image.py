"""Image processor: path / PIL image / array → ``pixel_values`` [C, H, W] float32, normalised.

Decoding follows one policy for every input (``image_decode``: EXIF orientation, transparency on white, value
ranges by bit depth, NaN refused, polymodal's ``max_pixels`` as the only pixel cap, checked from the header
before any pixel is decoded). Resizing follows Hugging Face / torchvision arithmetic (shortest edge with the long
side truncated, center-crop offsets ``(size - crop) // 2``), so a processor built from a checkpoint's
``preprocessor_config.json`` (``image_hf``) reproduces that checkpoint's own preprocessing.
Pure PIL + numpy + torch (no torchvision).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import ModalityConfig, bounds
from .errors import DataError
from .image_decode import (
    Decoded,
    array_to_canonical,
    canonical,
    check_array,
    check_cap,
    decoded_size,
    load_pixels,
    map_bands,
    open_image_file,
    pixel_cap,
    to_unit_array,
)
from .image_hf import RESAMPLE_BY_INT, options_from_hf
from .image_resize import TORCH_MODES
from .image_resize import resize_center_crop as torch_resize_center_crop
from .processors import Processor, parse_options

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
RESAMPLE = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
    "box": Image.BOX, "hamming": Image.HAMMING,
}
RESIZE_MODES = ("shortest_edge", "square")
RESIZE_BACKENDS = ("pil", "torch")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class ImageProcessorConfig:
    image_size: int = 224  # output is image_size × image_size
    resize_size: int | None = None  # before the center crop (see resize_mode); None = image_size (no crop margin)
    # shortest_edge: shorter side → resize_size, longer side int(resize_size * long / short) (HF, torchvision);
    # square: warp to resize_size × resize_size (HF size {height, width}: ViT, SigLIP, BLIP, DeiT)
    resize_mode: str = "shortest_edge"
    channels: int = 3  # 3 = RGB, 1 = grayscale (the luminance of the RGB image)
    mean: list[float] | None = None  # None: ImageNet stats for RGB, 0.5 for grayscale (or the checkpoint's)
    std: list[float] | None = None
    resample: str = "bilinear"
    # pil: Pillow's resize, bit-identical to transformers' PIL ("slow") processors; torch: torch's uint8
    # antialiased resize (image_resize), ~3x faster per photo, identical to transformers' torchvision ("fast")
    # backend and one 8-bit level from Pillow on ~0.3 % of pixels. Augmentation always uses Pillow.
    resize_backend: str = "pil"
    rescale_factor: float = 1 / 255  # multiplies 8-bit values before mean/std (HF rescale_factor; deeper sources alike)
    max_pixels: int = 40_000_000  # width × height read from the header; larger files are refused
    formats: list[str] | None = None  # allowed PIL formats; None = PNG, JPEG, BMP, GIF, TIFF, WEBP
    # augmentation (only when called with augment=True)
    crop_scale: list[float] | None = None  # random resized crop area range; None = [0.8, 1.0]
    rotation: float = 10.0  # max degrees, uniform in ±rotation
    translate: float = 0.1  # max shift as a fraction of the image size
    hflip: bool = False  # off by default: digits and text must not be mirrored

    # Valid ranges, checked when the config is read (ConfigError names model.modalities.<name>.processor.<key>).
    CONFIG_BOUNDS = {
        "image_size": bounds(ge=1), "resize_size": bounds(ge=1), "max_pixels": bounds(ge=1),
        "std": bounds(gt=0), "crop_scale": bounds(gt=0, le=1), "rotation": bounds(ge=0),
        "translate": bounds(ge=0, lt=1),
    }


class ImageProcessor(Processor):
    """Decode → (augment) → resize → center crop → [0, 1] → × rescale_factor·255 → (x - mean) / std.

    Accepts a file path, a PIL image (any mode), or a numpy array (H, W) / (H, W, C) with C in 1, 2 (grey +
    alpha), 3, 4 (RGBA): uint8 / 255, uint16 / 65535, other integer types by their range, floats already in
    [0, 1] (see ``image_decode.array_to_unit``; int64, negative values, NaN / inf are a DataError). Torch tensors
    are refused (pass ``tensor.permute(1, 2, 0).numpy()``). Output: {"pixel_values": [C, image_size, image_size]}.
    """

    kind = "image"

    def __init__(self, config: ImageProcessorConfig):
        if config.channels not in (1, 3):
            raise DataError(f"image processor: channels must be 1 or 3, got {config.channels}")
        if config.resample not in RESAMPLE:
            raise DataError(f"image processor: resample {config.resample!r} is not one of {list(RESAMPLE)}")
        if config.resize_mode not in RESIZE_MODES:
            raise DataError(f"image processor: resize_mode {config.resize_mode!r} is not one of {list(RESIZE_MODES)}")
        if config.resize_backend not in RESIZE_BACKENDS:
            raise DataError(f"image processor: resize_backend {config.resize_backend!r} is not one of "
                            f"{list(RESIZE_BACKENDS)}")
        if config.resize_backend == "torch" and config.resample not in TORCH_MODES:
            raise DataError(f"image processor: resize_backend 'torch' resizes with {list(TORCH_MODES)}, not "
                            f"resample {config.resample!r}; use resize_backend: pil for it")
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
        # [0, 1] pixels × value_scale = 8-bit value × rescale_factor; exactly 1.0 by default (no extra rounding)
        self.value_scale = float(np.float32(config.rescale_factor * 255.0))
        self.formats = tuple(f.upper() for f in (config.formats or ALLOWED_FORMATS))
        self.crop_scale = tuple(config.crop_scale or (0.8, 1.0))

    @classmethod
    def from_config(cls, cfg: ModalityConfig, prefix: str) -> ImageProcessor:
        options = dict(cfg.processor or {})
        parse_options(ImageProcessorConfig, options, prefix)  # reject unknown keys before anything else
        if cfg.pretrained:
            # Explicit options win; then the checkpoint's preprocessor_config.json; then our defaults.
            options = {**options_from_hf(cfg.pretrained), **options}
        return cls(parse_options(ImageProcessorConfig, options, prefix))

    # ------------------------------------------------------------------------------------------ decode

    def check(self, raw: Any) -> None:
        """Cheap validity check: header (format, pixel cap) and stream integrity of files; shape / dtype / values
        of arrays; the pixel cap of PIL images. Raises DataError naming the input."""
        if isinstance(raw, (str, os.PathLike)):
            what = f"image file {str(raw)!r}"
            with open_image_file(raw, self.formats, self.config.max_pixels) as image:
                fmt = image.format
                try:
                    image.verify()  # PNG: walks every chunk and its CRC without decoding pixels
                except Exception as err:
                    raise DataError(f"{what} is corrupt: {err}") from err
            if fmt != "PNG":
                # verify() barely looks at other formats (a truncated JPEG passes it), so decode: JPEG in draft
                # mode at 1/8 scale, which still reads the whole compressed stream but costs little.
                with open_image_file(raw, self.formats, self.config.max_pixels) as image:
                    if fmt in ("JPEG", "MPO"):
                        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                    load_pixels(image, what)
                    if image.mode == "F":  # float TIFF: NaN / inf / out of [0, 1] found here, not mid-training
                        canonical(image, 1, what)
        elif isinstance(raw, np.ndarray):
            what = f"image array of shape {raw.shape}"
            check_array(raw, what)
            check_cap(what, raw.shape[1], raw.shape[0], self.config.max_pixels)
        elif isinstance(raw, Image.Image):
            check_cap(f"PIL image ({raw.mode})", raw.width, raw.height, self.config.max_pixels)
            if raw.mode == "F":
                canonical(raw, 1, f"PIL image (F, {raw.width}×{raw.height})")  # NaN / inf / range
        else:
            raise DataError(_type_message(raw))

    def load(self, raw: Any) -> Decoded:
        """Any accepted input → the canonical decoded image (``image_decode``): an 8-bit PIL image in mode RGB / L,
        or, for sources deeper than 8 bits, a list of ``channels`` float "F" bands in [0, 1]."""
        with self._decoded(raw, copy=True) as image:
            return image

    @contextmanager
    def _decoded(self, raw: Any, copy: bool) -> Iterator[Decoded]:
        """The canonical image, valid inside the block (a file stays open, so an image that needs no conversion
        is used without a copy unless ``copy``); every step runs under polymodal's pixel cap."""
        with pixel_cap(self.config.max_pixels):
            if isinstance(raw, (str, os.PathLike)):
                what = f"image file {str(raw)!r}"
                with open_image_file(raw, self.formats, self.config.max_pixels) as image:
                    load_pixels(image, what)
                    yield canonical(image, self.channels, what, copy=copy)
            elif isinstance(raw, np.ndarray):
                what = f"image array of shape {raw.shape}"
                check_array(raw, what)
                check_cap(what, raw.shape[1], raw.shape[0], self.config.max_pixels)
                yield array_to_canonical(raw, self.channels, what)
            elif isinstance(raw, Image.Image):
                what = f"PIL image ({raw.mode}, {raw.width}×{raw.height})"
                check_cap(f"PIL image ({raw.mode})", raw.width, raw.height, self.config.max_pixels)
                yield canonical(raw, self.channels, what, copy=copy)  # never modified: every step makes a new image
            else:
                raise DataError(_type_message(raw))

    # ------------------------------------------------------------------------------------------ transform

    def __call__(self, raw: Any, augment: bool = False) -> dict[str, Tensor]:
        """raw → {"pixel_values": [C, image_size, image_size] float32}."""
        resample = RESAMPLE[self.config.resample]
        with self._decoded(raw, copy=False) as image:
            if augment:
                pixels = torch.from_numpy(to_unit_array(self._augment(image, resample)))
            elif self.config.resize_backend == "torch" and isinstance(image, Image.Image):  # 8-bit
                new_w, new_h = self.resized_size(*decoded_size(image))
                pixels = torch_resize_center_crop(image, new_w, new_h, self.image_size, self.config.resample)
            else:  # Pillow; also for sources deeper than 8 bits (float bands), which torch's uint8 path cannot take
                pixels = torch.from_numpy(to_unit_array(self._resize_center_crop(image, resample)))
        if self.value_scale != 1.0:
            pixels = pixels * self.value_scale
        return {"pixel_values": ((pixels - self.mean) / self.std).contiguous()}

    def batch(self, raws: Sequence[Any], workers: int | None = None) -> dict[str, Tensor]:
        """Many inputs → {"pixel_values": [B, C, image_size, image_size]}, processed on ``workers`` threads.

        The values are exactly those of calling the processor on each input (``collate`` of the results). Threads
        pay off because Pillow releases the GIL while it decodes and resizes (~95 % of the time of a photo), so
        throughput grows with the cores given; a DataLoader with workers is the other way to use them.
        ``workers``: None = min(len(raws), usable CPUs); 1 = the calling thread only. Raises DataError for the
        first failing input in input order (the message names it), ValueError for an empty ``raws``.
        """
        raws = list(raws)
        if not raws:
            raise ValueError("image processor batch: no inputs")
        workers = min(len(raws), workers or _usable_cpus())
        if workers <= 1:
            return self.collate([self(raw) for raw in raws])
        with ThreadPoolExecutor(workers, thread_name_prefix="polymodal-image") as pool:
            return self.collate(list(pool.map(self, raws)))  # map keeps input order, re-raises the first error

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, before the crop.

        shortest_edge: transformers' ``get_resize_output_image_size(default_to_square=False)`` and torchvision's
        ``Resize(int)``: the shorter side becomes resize_size, the longer ``int(resize_size * long / short)``
        (truncated, not rounded). square: resize_size × resize_size.
        """
        size = self.resize_size
        if self.config.resize_mode == "square":
            return size, size
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size

    def _resize_center_crop(self, image: Decoded, resample: int) -> Decoded:
        new_w, new_h = self.resized_size(*decoded_size(image))
        image = map_bands(image, lambda band: band.resize((new_w, new_h), resample))
        # transformers' center_crop offsets; a crop larger than the image pads with zeros, as PIL's crop does
        left, top = (new_w - self.image_size) // 2, (new_h - self.image_size) // 2
        box = (left, top, left + self.image_size, top + self.image_size)
        return map_bands(image, lambda band: band.crop(box))

    def _augment(self, image: Decoded, resample: int) -> Decoded:
        """Random resized crop (mild scale, aspect 3/4..4/3) + small rotation/translation (+ optional flip)."""
        width, height = decoded_size(image)
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
        # sub-pixel box: works for 8×8 images too
        image = map_bands(image, lambda band: band.resize((size, size), resample, box=box))
        angle = _uniform(-self.config.rotation, self.config.rotation)
        shift = self.config.translate * size
        translate = (_uniform(-shift, shift), _uniform(-shift, shift))
        if angle or translate != (0.0, 0.0):
            image = map_bands(image, lambda band: band.rotate(angle, resample=Image.BILINEAR, translate=translate))
        if self.config.hflip and torch.rand(()) < 0.5:
            image = map_bands(image, lambda band: band.transpose(Image.FLIP_LEFT_RIGHT))
        return image

    def empty(self) -> dict[str, Tensor]:
        return {"pixel_values": torch.zeros(self.channels, self.image_size, self.image_size)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a Hugging Face style preprocessor_config.json (read back when ``pretrained`` is this dir); for
        RGB, transformers' ViTImageProcessor built from it gives the same pixel_values (tested)."""
        directory = super().save_pretrained(directory)
        if self.config.resize_mode == "square":
            size = {"height": self.resize_size, "width": self.resize_size}
        else:
            size = {"shortest_edge": self.resize_size}
        by_name = {name: number for number, name in RESAMPLE_BY_INT.items()}
        payload = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": size,
            "do_center_crop": True,
            "crop_size": {"height": self.image_size, "width": self.image_size},
            "resample": by_name[self.config.resample],
            "do_rescale": True,
            "rescale_factor": self.config.rescale_factor,
            "do_normalize": True,
            "image_mean": self.mean.flatten().tolist(),
            "image_std": self.std.flatten().tolist(),
            "do_convert_rgb": True,
        }
        (directory / "preprocessor_config.json").write_text(json.dumps(payload, indent=2))
        return directory


def _type_message(raw: Any) -> str:
    if isinstance(raw, torch.Tensor):
        return (
            f"image input is a torch tensor of shape {tuple(raw.shape)}; pass a numpy array (H, W, C) instead, "
            f"e.g. tensor.permute(1, 2, 0).numpy() for a [C, H, W] tensor"
        )
    return f"image input must be a path, PIL image or numpy array, got {type(raw).__name__}"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on (containers, taskset)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _uniform(low: float, high: float) -> float:
    # torch's RNG: DataLoader seeds it per worker, so augmentation is reproducible with a seeded run.
    return float(low + (high - low) * torch.rand(()))
