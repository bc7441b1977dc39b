"""Every fusion (and "late") inside MultimodalModel with tiny preset encoders and synthetic Batch inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polymodal.fusion  # noqa: F401  (registers the fusions)
from polymodal.registry import FUSIONS
from polymodal.types import Batch

try:  # encoders and data are written in parallel; the lead unskips this once they import
    from polymodal.config import FusionConfig, HeadConfig, ModalityConfig, ModelConfig
    from polymodal.data import build_processor
    from polymodal.encoders import build_encoder  # noqa: F401
    from polymodal.models import MultimodalModel
    from polymodal.tasks import task_loss
except ImportError as err:  # pragma: no cover - depends on the state of the tree
    pytest.skip(f"polymodal.encoders / polymodal.data not importable yet ({err})", allow_module_level=True)

LABELS = ["zero", "one", "two"]
# Tiny processors: 16×16 grayscale, 0.25 s of 8 kHz audio with 16 mel bins, 8-token text.
MODALITIES = {
    "image": ModalityConfig(kind="image", processor={"image_size": 16, "channels": 1}),
    "audio": ModalityConfig(kind="audio", processor={"sample_rate": 8000, "max_seconds": 0.25, "n_mels": 16}),
    "text": ModalityConfig(kind="text", processor={"max_length": 8, "vocab_size": 256}),
}
PRESENT = {  # sample 0 has everything, 1 lacks audio, 2 has only audio, 3 has nothing
    "image": [True, True, False, False],
    "audio": [True, False, True, False],
    "text": [True, True, False, False],
}


def raw_sample(kind: str, rng: np.random.Generator):
    if kind == "image":
        return rng.integers(0, 256, size=(12, 12), dtype=np.uint8)
    if kind == "audio":
        return rng.standard_normal(2000).astype(np.float32) * 0.1
    return "a handwritten " + rng.choice(["zero", "one", "two"])


def synthetic_batch(processors: dict, names: list[str]) -> Batch:
    rng = np.random.default_rng(0)
    inputs, present = {}, {}
    for name in names:
        processor = processors[name]
        flags = PRESENT[name]
        samples = [processor(raw_sample(MODALITIES[name].kind, rng)) if f else processor.empty() for f in flags]
        inputs[name] = processor.collate(samples)
        present[name] = torch.tensor(flags)
    return Batch(inputs=inputs, present=present, labels=torch.tensor([0, 1, 2, 1]), ids=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def processors():
    return {name: build_processor(cfg, name) for name, cfg in MODALITIES.items()}


@pytest.mark.parametrize("fusion", [*FUSIONS.names(), "late"])
def test_model_forward_backward_and_reload(fusion, processors, tmp_path):
    config = ModelConfig(
        modalities=dict(MODALITIES), fusion=FusionConfig(name=fusion, dim=16), head=HeadConfig(labels=LABELS)
    )
    torch.manual_seed(0)
    model = MultimodalModel(config)
    batch = synthetic_batch(processors, list(MODALITIES))
    out = model(batch)
    assert out.logits.shape == (4, len(LABELS))
    loss = task_loss(model, batch)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss) and torch.isfinite(loss)
    out.loss.backward()
    for name in MODALITIES:  # every encoder learns through the fusion
        grads = [p.grad for p in model.encoders[name].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{fusion}: no gradient reaches the {name} encoder"
        assert all(torch.isfinite(g).all() for g in grads)

    # A batch that does not carry one modality at all still runs.
    partial = synthetic_batch(processors, ["image", "audio"])
    assert torch.isfinite(model(partial).logits).all()

    model.eval()
    with torch.no_grad():
        expected = model(batch).logits
    model.save_pretrained(tmp_path)
    reloaded = MultimodalModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch).logits, expected, atol=1e-5, rtol=1e-5)
