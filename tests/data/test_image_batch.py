"""ImageProcessor.batch: threads give exactly the per-input values, in input order, with per-input errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from polymodal.config import ModalityConfig
from polymodal.data import build_processor
from polymodal.data.errors import DataError


def clip_processor(**options):
    base = {"image_size": 24, "resize_size": 28, "resample": "bicubic"}
    return build_processor(ModalityConfig(kind="image", processor={**base, **options}), "image")


def write_inputs(tmp_path):
    """JPEG / PNG files of several sizes and modes, plus a PIL image and a uint8 array."""
    rng = np.random.default_rng(0)
    inputs = []
    for i, (w, h) in enumerate([(64, 48), (48, 64), (101, 33), (30, 30), (90, 70), (33, 120)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.{'jpg' if i % 2 and i != 5 else 'png'}"
        image = Image.fromarray(pixels)
        if i == 4:
            image = image.convert("L")  # grey file: the RGB policy applies in the threads too
        if i == 5:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))  # RGBA on white
        image.save(path)
        inputs.append(path)
    inputs.append(Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)))
    inputs.append(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8))
    return inputs


@pytest.mark.parametrize("workers", [None, 1, 2, 5])
def test_batch_equals_the_processor_called_on_each_input(tmp_path, workers):
    processor = clip_processor()
    inputs = write_inputs(tmp_path)
    want = np.stack([processor(raw)["pixel_values"].numpy() for raw in inputs])
    got = processor.batch(inputs, workers=workers)["pixel_values"].numpy()
    assert got.shape == (len(inputs), 3, 24, 24)
    np.testing.assert_array_equal(got, want)  # bit-identical, in input order


def test_batch_matches_transformers_clip_processor(tmp_path):
    """The threaded path keeps parity with transformers' PIL-backend CLIPImageProcessor (the issue #17 reference)."""
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    cls(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24}).save_pretrained(str(tmp_path / "ckpt"))
    hf = cls.from_pretrained(str(tmp_path / "ckpt"))
    ours = build_processor(ModalityConfig(kind="image", pretrained=str(tmp_path / "ckpt")), "image")
    paths = [p for p in write_inputs(tmp_path) if not isinstance(p, (Image.Image, np.ndarray))]
    got = ours.batch(paths, workers=3)["pixel_values"].numpy()
    for row, path in zip(got, paths):
        with Image.open(path) as image:
            want = np.asarray(hf(images=image, return_tensors="np")["pixel_values"][0], dtype=np.float32)
        assert float(np.abs(row - want).max()) <= 1e-3, path.name


def test_batch_names_the_first_failing_input_and_refuses_an_empty_list(tmp_path):
    processor = clip_processor()
    inputs = write_inputs(tmp_path)
    missing = tmp_path / "missing.png"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="missing.png' does not exist"):
        processor.batch([*inputs[:3], missing, broken, *inputs[3:]], workers=4)
    with pytest.raises(DataError, match="broken.jpg' is not a readable image"):
        processor.batch([inputs[0], broken, missing], workers=2)
    with pytest.raises(ValueError, match="no inputs"):
        processor.batch([])


def test_pixel_cap_applies_per_input_in_threads(tmp_path):
    """The cap is thread-local: a file over it fails with polymodal's message, the others in flight are fine."""
    processor = clip_processor(max_pixels=100 * 100)
    small = tmp_path / "small.png"
    big = tmp_path / "big.png"
    Image.new("RGB", (60, 50), (10, 20, 30)).save(small)
    Image.new("RGB", (200, 120), (10, 20, 30)).save(big)
    assert processor.batch([small] * 6, workers=3)["pixel_values"].shape == (6, 3, 24, 24)
    with pytest.raises(DataError, match=r"big.png' has 200×120 = 24,000 pixels, over the cap max_pixels=10,000"):
        processor.batch([small, small, big, small], workers=4)
