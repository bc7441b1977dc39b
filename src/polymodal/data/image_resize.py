"""Resize + center crop of 8-bit images in torch: the arithmetic of transformers' torchvision ("fast") backend.

``ImageProcessor`` resizes with Pillow by default (``resize_backend: pil``), which reproduces transformers' PIL
("slow") image processors bit for bit. ``resize_backend: torch`` runs this module instead: the decoded 8-bit image
goes to a uint8 tensor without a copy of its layout (height × width × channels, i.e. channels-last) and is
resized by ``torch.nn.functional.interpolate(antialias=True)``, whose uint8 kernel (vectorised, ported from
Pillow-SIMD) is ~10× faster than Pillow's resize on a 1920 × 1080 photo. Its fixed-point weights have fewer bits
than Pillow's, so about 0.3 % of the pixels end one 8-bit level away from Pillow's (0.015 after CLIP
normalisation); the output matches transformers' torchvision backend (``CLIPImageProcessorFast``,
``backend="torchvision"``), whose steps this follows:

- torchvision ``transforms.v2.functional.resize_image`` (0.28): bicubic on uint8 runs the native uint8 kernel;
  bilinear too on CPUs with AVX2 / AVX-512 / Arm (elsewhere: float32, round, back to uint8); nearest is
  ``nearest-exact`` (transformers' ``pil_torch_interpolation_mapping``);
- transformers ``TorchvisionBackend.center_crop``: a crop larger than the image first pads it with zeros
  (left/top ``(crop - size) // 2``), then takes the offsets ``int((size - crop) / 2)``.
"""

from __future__ import annotations

import platform

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# polymodal's resample names → torch interpolate modes (transformers maps PIL NEAREST to NEAREST_EXACT).
TORCH_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}


def native_uint8(mode: str) -> bool:
    """Whether torchvision resizes a uint8 CPU image in uint8 for ``mode`` (else via float32 and rounding)."""
    if mode == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64", "arm64")
    return True  # bicubic (uint8 kernel on every CPU), nearest-exact (no arithmetic)


def image_to_uint8(image: Image.Image) -> Tensor:
    """An 8-bit PIL image (mode L or RGB) → uint8 [1, C, H, W] with channels-last strides (no layout copy)."""
    array = np.array(image)  # a writable copy: torch.from_numpy warns on Pillow's read-only buffer
    if array.ndim == 2:
        array = array[:, :, None]
    pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    # Give the batch dimension its own stride so that interpolate allocates a channels-last output too
    # (pytorch/pytorch#68430; torchvision does the same), which keeps the uint8 kernel from re-packing.
    batch_stride = pixels.numel()
    return pixels.as_strided(pixels.shape, (batch_stride, *pixels.stride()[1:]))


def resize_uint8(pixels: Tensor, height: int, width: int, resample: str) -> Tensor:
    """uint8 [1, C, H, W] → uint8 [1, C, height, width] with torchvision's arithmetic for ``resample``.

    Raises KeyError for a resample torch cannot do (lanczos, box, hamming); ImageProcessor refuses those first.
    """
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    mode = TORCH_MODES[resample]
    smooth = mode in ("bilinear", "bicubic")
    native = native_uint8(mode)
    source = pixels if native else pixels.float()
    resized = F.interpolate(source, size=(height, width), mode=mode,
                            align_corners=False if smooth else None, antialias=smooth)
    if not native:
        if mode == "bicubic":
            resized = resized.clamp_(0, 255)
        resized = resized.round_().to(torch.uint8)
    return resized


def center_crop_uint8(pixels: Tensor, crop: int) -> Tensor:
    """[..., H, W] → [..., crop, crop]: transformers' torchvision-backend center crop (zero padding when smaller)."""
    height, width = pixels.shape[-2:]
    if crop > width or crop > height:
        pad_w, pad_h = max(crop - width, 0), max(crop - height, 0)
        pixels = F.pad(pixels, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        height, width = pixels.shape[-2:]
    top, left = int((height - crop) / 2.0), int((width - crop) / 2.0)
    return pixels[..., top:top + crop, left:left + crop]


def resize_center_crop(image: Image.Image, width: int, height: int, crop: int, resample: str) -> Tensor:
    """8-bit PIL image → float32 [C, crop, crop] in [0, 1]: resize to width × height, center crop, / 255."""
    pixels = resize_uint8(image_to_uint8(image), height, width, resample)
    return center_crop_uint8(pixels, crop)[0].to(torch.float32).div_(255.0)


__all__ = ["TORCH_MODES", "center_crop_uint8", "image_to_uint8", "native_uint8", "resize_center_crop",
           "resize_uint8"]
