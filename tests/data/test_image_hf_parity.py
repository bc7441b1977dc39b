"""A processor built from a checkpoint's preprocessor_config.json reproduces that checkpoint's own image processor
(transformers' PIL backend) on many aspect ratios: tall, wide, tiny, odd (issue #11)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers
from PIL import Image

from polymodal.config import ModalityConfig
from polymodal.data import build_processor
from polymodal.data.image_hf import FAMILY_DEFAULTS, options_from_preprocessor_config

TOLERANCE = 1e-3  # normalised units; observed differences are float32 rounding (~1e-6)
SIZES = [(101, 33), (33, 101), (3, 50), (50, 3), (17, 13), (13, 17), (64, 48), (48, 64), (31, 97), (7, 7), (40, 40)]


def hf_class(family: str):
    """transformers' PIL-backend processor class (v5), or the slow class (v4)."""
    return getattr(transformers, f"{family}ImageProcessorPil", None) or getattr(transformers, f"{family}ImageProcessor")


def images():
    rng = np.random.default_rng(0)
    for width, height in SIZES:
        yield Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def ours(directory):
    return build_processor(ModalityConfig(kind="image", pretrained=str(directory)), "image")


def assert_parity(hf, processor, image):
    expected = np.asarray(hf(images=image, return_tensors="np")["pixel_values"][0], dtype=np.float32)
    got = processor(image)["pixel_values"].numpy()
    assert got.shape == expected.shape, image.size
    assert float(np.abs(got - expected).max()) <= TOLERANCE, image.size


FAMILIES = {
    "clip": ("CLIP", {"size": {"shortest_edge": 24}, "crop_size": {"height": 20, "width": 20}}),
    "clip-crop-over-edge": ("CLIP", {"size": {"shortest_edge": 16}, "crop_size": {"height": 20, "width": 20}}),
    "vit": ("ViT", {"size": {"height": 24, "width": 24}}),
    "vit-bicubic-crop": ("ViT", {"size": {"shortest_edge": 28}, "do_center_crop": True,
                                 "crop_size": {"height": 24, "width": 24}, "resample": 3}),
    "convnext-crop-pct": ("ConvNext", {"size": {"shortest_edge": 28}, "crop_pct": 0.875}),
    "convnext-1.0": ("ConvNext", {"size": {"shortest_edge": 32}, "crop_pct": 1.0}),
    "convnext-384": ("ConvNext", {"size": {"shortest_edge": 384}}),
    "siglip": ("Siglip", {"size": {"height": 24, "width": 24}}),
    "blip": ("Blip", {"size": {"height": 20, "width": 20}}),
    "deit": ("DeiT", {"size": {"height": 28, "width": 28}, "crop_size": {"height": 24, "width": 24}}),
    "bit": ("Bit", {"size": {"shortest_edge": 26}, "crop_size": {"height": 24, "width": 24}}),
    "lanczos-no-normalize": ("CLIP", {"size": {"shortest_edge": 20}, "crop_size": {"height": 20, "width": 20},
                                      "resample": 1, "do_normalize": False}),
    "rescale-half": ("ViT", {"size": {"height": 16, "width": 16}, "rescale_factor": 1 / 510}),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_matches_the_checkpoints_own_processor(tmp_path, name):
    family, kwargs = FAMILIES[name]
    hf_class(family)(**kwargs).save_pretrained(str(tmp_path))
    hf = hf_class(family).from_pretrained(str(tmp_path))
    processor = ours(tmp_path)
    for image in images():
        assert_parity(hf, processor, image)


def test_minimal_config_takes_the_class_defaults(tmp_path):
    # the case's shape: a hand-written file, keys left out take CLIPImageProcessor's own defaults (bicubic,
    # center crop, CLIP mean/std) exactly as transformers fills them in
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    ))
    hf, processor = hf_class("CLIP").from_pretrained(str(tmp_path)), ours(tmp_path)
    assert (processor.config.resample, processor.image_size, processor.resize_size) == ("bicubic", 32, 32)
    for image in images():
        assert_parity(hf, processor, image)


def test_transparent_and_grey_inputs_match_do_convert_rgb(tmp_path):
    hf_class("CLIP")(size={"shortest_edge": 20}, crop_size={"height": 20, "width": 20}).save_pretrained(str(tmp_path))
    hf, processor = hf_class("CLIP").from_pretrained(str(tmp_path)), ours(tmp_path)
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (23, 37, 4), dtype=np.uint8))
    for image in (rgba, rgba.convert("LA"), rgba.convert("L"), rgba.convert("RGB").convert("P")):
        assert_parity(hf, processor, image)


@pytest.mark.parametrize("family", sorted(FAMILY_DEFAULTS))
def test_family_defaults_are_transformers_class_defaults(family):
    cls = hf_class(family)
    for key, value in FAMILY_DEFAULTS[family].items():
        theirs = getattr(cls, key, None)
        if key.endswith("size") and theirs is not None:
            theirs = dict(theirs)
        if isinstance(value, list):
            assert list(theirs) == pytest.approx(value), (family, key)
        else:
            assert theirs == value or (key == "do_center_crop" and not value and not theirs), (family, key)


def test_save_pretrained_is_read_back_by_transformers_and_by_polymodal(tmp_path):
    options = {"image_size": 20, "resize_size": 26, "resample": "bicubic", "mean": [0.1, 0.2, 0.3], "std": [0.3, 0.2, 0.1]}
    processor = build_processor(ModalityConfig(kind="image", processor=options), "image")
    processor.save_pretrained(tmp_path)
    hf, reloaded = hf_class("ViT").from_pretrained(str(tmp_path)), ours(tmp_path)
    for image in images():
        assert_parity(hf, processor, image)
        np.testing.assert_array_equal(reloaded(image)["pixel_values"].numpy(), processor(image)["pixel_values"].numpy())


def test_what_cannot_be_reproduced_is_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"ckpt/preprocessor_config\.json.*do_flip_channel_order=True"):
        options_from_preprocessor_config(
            {"image_processor_type": "MobileViTImageProcessor", "size": {"shortest_edge": 32}, "do_center_crop": True,
             "crop_size": {"height": 32, "width": 32}, "do_flip_channel_order": True}, "ckpt/preprocessor_config.json")
    with pytest.warns(UserWarning, match=r"size 24×32 is not square"):
        options_from_preprocessor_config({"size": {"height": 24, "width": 32}})


def test_legacy_int_sizes():
    # int size: a square for default_to_square families (ViT), a shortest edge for CLIP; int crop: a square
    assert options_from_preprocessor_config({"feature_extractor_type": "CLIPFeatureExtractor", "size": 24,
                                             "crop_size": 20})["resize_mode"] == "shortest_edge"
    vit = options_from_preprocessor_config({"image_processor_type": "ViTImageProcessor", "size": 24})
    assert (vit["resize_mode"], vit["resize_size"], vit["image_size"]) == ("square", 24, 24)
