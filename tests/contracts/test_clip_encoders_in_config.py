"""``encoder: clip_vision`` / ``clip_text`` in a YAML config build, run and reload like any other encoder.

Before, nothing imported the module that registers them, so such a config died with a KeyError.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from polymodal.config import load_config
from polymodal.encoders.clip import CLIPTextEncoder, CLIPVisionEncoder
from polymodal.models import MultimodalModel
from polymodal.types import Batch

CONFIG = """
model:
  modalities:
    image: {kind: image, encoder: clip_vision, options: {preset: tiny}, processor: {image_size: 32, channels: 3}}
    caption: {kind: text, encoder: clip_text, options: {preset: tiny}, processor: {max_length: 16, vocab_size: 99}}
  fusion: {name: concat, dim: 16}
  head: {labels: [cat, dog, bird]}
"""


def batch_for(model: MultimodalModel) -> Batch:
    rng = np.random.default_rng(0)
    raws = {"image": [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(3)],
            "caption": ["a small cat", None, "two dogs in the park"]}
    inputs, present = {}, {}
    for name, processor in model.processors.items():
        items = [processor.empty() if raw is None else processor(raw) for raw in raws[name]]
        inputs[name] = processor.collate(items)
        present[name] = torch.tensor([raw is not None for raw in raws[name]])
    return Batch(inputs=inputs, present=present, ids=["a", "b", "c"])


def test_a_config_naming_the_clip_encoders_builds_runs_and_reloads(tmp_path):
    path = tmp_path / "clip.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    torch.manual_seed(0)
    model = MultimodalModel(config.model).eval()
    assert isinstance(model.encoders["image"], CLIPVisionEncoder)
    assert isinstance(model.encoders["caption"], CLIPTextEncoder)
    assert model.encoders["image"].config.vision_width == 64  # the tiny preset, read from presets/clip/tiny.yaml
    batch = batch_for(model)
    with torch.no_grad():
        logits = model(batch).logits
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    model.save_pretrained(tmp_path / "model")
    reloaded = MultimodalModel.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch_for(reloaded)).logits, logits, atol=1e-6, rtol=0)


def test_the_config_builds_in_a_fresh_interpreter_that_imported_nothing_else(tmp_path):
    """No test-collection side effects: load_config + MultimodalModel alone must find the CLIP encoders."""
    path = tmp_path / "clip.yaml"
    path.write_text(CONFIG)
    code = ("import sys\nfrom polymodal.config import load_config\nfrom polymodal.models import MultimodalModel\n"
            "model = MultimodalModel(load_config(sys.argv[1]).model)\n"
            "print(type(model.encoders['image']).__name__, type(model.encoders['caption']).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["CLIPVisionEncoder", "CLIPTextEncoder"]
