"""Image processor options from a Hugging Face checkpoint's ``preprocessor_config.json``.

The goal is the checkpoint's own preprocessing exactly (transformers' PIL backend, ``image_processing_backends.
PilBackend`` and ``image_transforms``): resize rule (shortest edge with the long side truncated by ``int``, as in
``get_resize_output_image_size``; or an exact height × width), center-crop size, ConvNeXt's ``crop_pct``, resample
filter, ``rescale_factor`` and normalisation. Keys missing from the file take the processor class's own
defaults (``FAMILY_DEFAULTS``, pinned to transformers in tests/data/test_image_hf_parity.py).

What polymodal cannot reproduce (non-square outputs, variable-size outputs, BGR channel flips, padding, ...) is
named in a UserWarning, never silently dropped.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

# HF preprocessor configs store PIL resample filters as ints (PIL.Image.Resampling).
RESAMPLE_BY_INT = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]

_SHORTEST_CROP = {"default_to_square": False, "resample": 3, "do_center_crop": True}
# The class defaults of transformers' image processors (v5 PIL backends; same values as the 4.x slow ones).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "CLIP": {**_SHORTEST_CROP, "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
             "image_mean": CLIP_MEAN, "image_std": CLIP_STD},
    "ChineseCLIP": {**_SHORTEST_CROP, "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
                    "image_mean": CLIP_MEAN, "image_std": CLIP_STD},
    "Bit": {**_SHORTEST_CROP, "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
            "image_mean": CLIP_MEAN, "image_std": CLIP_STD},
    "ViT": {"default_to_square": True, "resample": 2, "size": {"height": 224, "width": 224},
            "image_mean": HALF, "image_std": HALF},
    "DeiT": {"default_to_square": True, "resample": 3, "size": {"height": 256, "width": 256},
             "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "image_mean": HALF, "image_std": HALF},
    "Beit": {"default_to_square": True, "resample": 3, "size": {"height": 224, "width": 224},
             "do_center_crop": False, "crop_size": {"height": 224, "width": 224}, "image_mean": HALF, "image_std": HALF},
    "ConvNext": {"default_to_square": False, "resample": 3, "size": {"shortest_edge": 384}, "crop_pct": 224 / 256,
                 "image_mean": HALF, "image_std": HALF},
    "Siglip": {"default_to_square": False, "resample": 3, "size": {"height": 224, "width": 224},
               "image_mean": HALF, "image_std": HALF},
    "Blip": {"default_to_square": True, "resample": 3, "size": {"height": 384, "width": 384},
             "image_mean": CLIP_MEAN, "image_std": CLIP_STD},
}
# BaseImageProcessor / PilBackend defaults for anything else.
BASE_DEFAULTS: dict[str, Any] = {
    "do_resize": True, "default_to_square": True, "resample": 2, "do_center_crop": False, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True,
}
# Keys that change the pixels in ways polymodal does not reproduce (when truthy).
UNSUPPORTED_FLAGS = ("do_flip_channel_order", "rescale_offset", "do_pad", "do_reduce_labels")


def family_of(data: dict[str, Any]) -> str:
    """"CLIPImageProcessor" / "CLIPImageProcessorFast" / "CLIPFeatureExtractor" → "CLIP"."""
    name = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    for suffix in ("Pil", "Fast"):
        name = name.removesuffix(suffix)
    for suffix in ("ImageProcessor", "FeatureExtractor"):
        name = name.removesuffix(suffix)
    return name


def resolved_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The file's values over its family's class defaults over the base defaults."""
    return {**BASE_DEFAULTS, **FAMILY_DEFAULTS.get(family_of(data), {}), **data}


def options_from_preprocessor_config(data: dict[str, Any], where: str = "preprocessor_config.json") -> dict[str, Any]:
    """ImageProcessorConfig options (image_size, resize_size, resize_mode, resample, rescale_factor, mean, std,
    channels) that reproduce the Hugging Face image processor described by ``data``."""
    if not data:
        return {}
    cfg = resolved_settings(data)
    family = family_of(data)
    notes: list[str] = []
    options: dict[str, Any] = {}

    size = _size_dict(cfg.get("size"), bool(cfg.get("default_to_square")))
    crop = _size_dict(cfg.get("crop_size"), True) if cfg.get("do_center_crop") else {}
    crop_side = _square_side(crop, "crop_size", notes) if crop else None
    if not cfg.get("do_resize", True):
        notes.append("do_resize is false (variable-size output); polymodal resizes to a fixed size anyway")
    if size.get("shortest_edge"):
        shortest = int(size["shortest_edge"])
        if size.get("longest_edge"):
            notes.append(f"size.longest_edge={size['longest_edge']} is not applied (only the shortest edge is)")
        if family == "ConvNext" and crop_side is None:
            # ConvNextImageProcessor.resize: under 384, shortest edge → int(s / crop_pct), then crop s × s;
            # from 384 up, warp to s × s.
            if shortest < 384:
                options.update(resize_mode="shortest_edge", image_size=shortest,
                               resize_size=int(shortest / float(cfg.get("crop_pct") or 224 / 256)))
            else:
                options.update(resize_mode="square", image_size=shortest, resize_size=shortest)
        else:
            if cfg.get("crop_pct") is not None:
                notes.append(f"crop_pct={cfg['crop_pct']} is not applied")
            options.update(resize_mode="shortest_edge", resize_size=shortest)
            if crop_side is None:
                notes.append(
                    f"size.shortest_edge={shortest} without a center crop gives variable-size images; polymodal "
                    f"center-crops to {shortest}×{shortest}"
                )
            options["image_size"] = crop_side or shortest
    elif size.get("height"):
        side = _square_side(size, "size", notes)
        options.update(resize_mode="square", resize_size=side, image_size=crop_side or side)
    elif size:
        notes.append(f"size {size} is not a form polymodal reproduces (shortest_edge, or height and width)")

    if isinstance(cfg.get("resample"), int) and cfg["resample"] in RESAMPLE_BY_INT:
        options["resample"] = RESAMPLE_BY_INT[cfg["resample"]]
    options["rescale_factor"] = float(cfg.get("rescale_factor") or 1 / 255) if cfg.get("do_rescale", True) else 1.0
    if cfg.get("do_normalize", True) and cfg.get("image_mean") is not None:
        mean, std = cfg["image_mean"], cfg["image_std"]
        options["mean"] = list(mean) if isinstance(mean, (list, tuple)) else [mean] * 3
        options["std"] = list(std) if isinstance(std, (list, tuple)) else [std] * len(options["mean"])
        options["channels"] = len(options["mean"])
    elif not cfg.get("do_normalize", True):
        options["mean"], options["std"], options["channels"] = [0.0] * 3, [1.0] * 3, 3
    notes += [f"{key}={cfg[key]!r} is not reproduced" for key in UNSUPPORTED_FLAGS if cfg.get(key)]
    if notes:
        warnings.warn(
            f"{where}: polymodal cannot reproduce this image processor exactly: {'; '.join(notes)}. Set the "
            f"modality's processor options (image_size, resize_size, resize_mode, ...) to choose yourself.",
            UserWarning,
            stacklevel=3,
        )
    return options


def _size_dict(size: Any, default_to_square: bool) -> dict[str, Any]:
    """transformers' get_size_dict: an int is a square (default_to_square) or a shortest edge; a pair is (h, w)."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    return {key: value for key, value in dict(size).items() if value is not None}


def _square_side(size: dict[str, Any], key: str, notes: list[str]) -> int:
    height, width = int(size.get("height") or size.get("width")), int(size.get("width") or size.get("height"))
    if height != width:
        notes.append(f"{key} {height}×{width} is not square; polymodal makes {height}×{height} images")
    return height


def read_preprocessor_config(pretrained: str) -> tuple[dict[str, Any], str]:
    """(the checkpoint's preprocessor_config.json, its path) or ({}, "") when there is none."""
    path = Path(pretrained) / "preprocessor_config.json"
    if Path(pretrained).is_dir():
        return (json.loads(path.read_text()), str(path)) if path.is_file() else ({}, "")
    try:  # a hub name: only what is already cached (HF_HUB_OFFLINE respected), never a hard failure
        from huggingface_hub import hf_hub_download

        cached = hf_hub_download(pretrained, "preprocessor_config.json")
        return json.loads(Path(cached).read_text()), cached
    except Exception:
        return {}, ""


def options_from_hf(pretrained: str) -> dict[str, Any]:
    """Image processor options from a checkpoint (local directory or cached hub name); {} when it has none."""
    data, where = read_preprocessor_config(pretrained)
    return options_from_preprocessor_config(data, where) if data else {}
