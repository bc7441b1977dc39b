"""``resize_backend: torch``: transformers' torchvision ("fast") image processors' numbers, one 8-bit level from
Pillow's, and every other path of the processor unchanged (issue #17, preprocessing throughput)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from polymodal.config import ModalityConfig
from polymodal.data import build_processor, image_resize
from polymodal.data.errors import DataError
from polymodal.data.image import ImageProcessor, ImageProcessorConfig

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "fast_processor.safetensors"
# the generator of the fixture (run in the peer environment) defines the cases and the deterministic images
_spec = importlib.util.spec_from_file_location("make_fast_processor_fixture", FIXTURES / "make_fast_processor_fixture.py")
_generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_generator)
CASES, image, inputs = _generator.CASES, _generator.image, _generator.inputs
ONE_LEVEL = 1 / 255  # in [0, 1] units, before mean / std


def fixture() -> dict[str, torch.Tensor]:
    with safe_open(str(FIXTURE), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


EXPECTED = fixture()


def processor_for(case: str, tmp_path: Path, backend: str = "torch") -> ImageProcessor:
    directory = tmp_path / case
    directory.mkdir(parents=True, exist_ok=True)
    config = bytes(EXPECTED[f"{case}/config"].tolist()).decode()
    (directory / "preprocessor_config.json").write_text(config)
    return build_processor(ModalityConfig(kind="image", pretrained=str(directory),
                                          processor={"resize_backend": backend}), "image")


@pytest.mark.parametrize("case", list(CASES))
def test_torch_backend_matches_transformers_fast_processor(case, tmp_path):
    processor = processor_for(case, tmp_path)
    for name, array in inputs().items():
        got = processor(array)["pixel_values"]
        expected = EXPECTED[f"{case}/{name}"]
        assert got.shape == expected.shape, (case, name)
        # identical uint8 resize and crop; normalisation fused differently ((x - 255 mean) / (255 std)): ~1e-7
        assert float((got - expected).abs().max()) <= 1e-5, (case, name)


@pytest.mark.parametrize("case", ["clip-bicubic", "clip-bilinear", "vit-square"])
def test_torch_backend_is_within_one_level_of_pillow(case, tmp_path):
    fast, exact = processor_for(case, tmp_path, "torch"), processor_for(case, tmp_path / "pil", "pil")
    std = float(exact.std.min())
    arrays = {**inputs(), "photo-640x480": image(640, 480)}
    differing = total = 0
    for name, array in arrays.items():
        a, b = fast(array)["pixel_values"], exact(array)["pixel_values"]
        diff = (a - b).abs()
        assert float(diff.max()) <= ONE_LEVEL / std + 1e-5, (case, name)
        differing += int((diff > 1e-5).sum())
        total += diff.numel()
    assert differing / total < 0.05, differing / total  # a few pixels, not a different filter


def test_float_path_for_cpus_without_the_native_uint8_bilinear_kernel(monkeypatch):
    config = ImageProcessorConfig(image_size=32, resize_size=40, resample="bilinear", resize_backend="torch")
    processor, array = ImageProcessor(config), image(160, 120)
    native = processor(array)["pixel_values"]
    monkeypatch.setattr(image_resize, "native_uint8", lambda mode: False)
    via_float = processor(array)["pixel_values"]
    assert float((native - via_float).abs().max()) <= ONE_LEVEL / float(processor.std.min()) + 1e-5


def test_crop_larger_than_the_resized_image_pads_centred():
    pixels = torch.full((1, 3, 4, 6), 200, dtype=torch.uint8)
    out = image_resize.center_crop_uint8(pixels, 8)
    assert out.shape == (1, 3, 8, 8)
    # torchvision: pad left/top (8-6)//2=1 / (8-4)//2=2 and right/bottom the rest, then crop at offset 0
    assert out[0, 0, 2:6, 1:7].eq(200).all() and int(out.sum()) == 200 * 3 * 4 * 6


def test_bad_backend_and_resample_are_refused_by_name():
    with pytest.raises(DataError, match="resize_backend 'gpu' is not one of"):
        ImageProcessor(ImageProcessorConfig(resize_backend="gpu"))
    with pytest.raises(DataError, match="resize_backend 'torch' resizes with .* not resample 'lanczos'"):
        ImageProcessor(ImageProcessorConfig(resize_backend="torch", resample="lanczos"))


def test_deep_images_and_augmentation_keep_the_pillow_path():
    torch_cfg = ImageProcessorConfig(image_size=24, resize_size=28, resample="bicubic", resize_backend="torch")
    pil_cfg = ImageProcessorConfig(image_size=24, resize_size=28, resample="bicubic")
    deep = (image(50, 40).astype(np.uint16) * 257)  # 16-bit: float bands, which the uint8 kernel cannot take
    assert torch.equal(ImageProcessor(torch_cfg)(deep)["pixel_values"], ImageProcessor(pil_cfg)(deep)["pixel_values"])
    torch.manual_seed(0)
    augmented = ImageProcessor(torch_cfg)(image(50, 40), augment=True)["pixel_values"]
    torch.manual_seed(0)
    assert torch.equal(augmented, ImageProcessor(pil_cfg)(image(50, 40), augment=True)["pixel_values"])


def test_batch_and_files_equal_single_calls(tmp_path):
    processor = ImageProcessor(ImageProcessorConfig(image_size=32, resize_size=36, resample="bicubic",
                                                    resize_backend="torch", channels=1))
    paths = []
    for i, (w, h) in enumerate([(90, 60), (60, 90), (33, 33)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image(w, h)).save(paths[-1])
    batch = processor.batch(paths, workers=2)["pixel_values"]
    assert batch.shape == (3, 1, 32, 32)
    for row, path in zip(batch, paths):
        assert torch.equal(row, processor(path)["pixel_values"])


def test_option_reads_from_a_config_file_section():
    config = ModalityConfig(kind="image", processor={"resize_backend": "torch", "image_size": 16})
    processor = build_processor(config, "image")
    assert processor.config.resize_backend == "torch"
    assert json.loads(json.dumps(processor.config.__dict__))["resize_backend"] == "torch"
