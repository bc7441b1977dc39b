"""Tiny real-preset models and batches shared by the fine-tuning, feature-cache and modality-dropout tests."""

from __future__ import annotations

import torch

from polymodal.config import FusionConfig, HeadConfig, ModalityConfig, ModelConfig
from polymodal.models import MultimodalModel
from polymodal.tasks import task_loss
from polymodal.types import Batch

LABELS = ["zero", "one", "two"]
VOCAB = 40


def tiny_config(image_encoder: str = "image_cnn", fusion: str = "concat") -> ModelConfig:
    """image (CNN with BatchNorm, or ViT) + text (transformer); widths of 8-16 so tests run in milliseconds."""
    image_options = (
        {"channels": [4, 8], "dropout": 0.0}
        if image_encoder == "image_cnn"
        else {"image_size": 8, "patch_size": 4, "dim": 16, "depth": 1, "heads": 2}
    )
    text_options = {"vocab_size": VOCAB, "dim": 16, "depth": 1, "heads": 2, "max_positions": 16, "dropout": 0.0}
    return ModelConfig(
        modalities={
            "image": ModalityConfig(kind="image", encoder=image_encoder, options=image_options),
            "text": ModalityConfig(kind="text", encoder="text_transformer", options=text_options),
        },
        fusion=FusionConfig(name=fusion, dim=8),
        head=HeadConfig(labels=list(LABELS), dropout=0.0),
    )


def tiny_model(image_encoder: str = "image_cnn", fusion: str = "concat", seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return MultimodalModel(tiny_config(image_encoder, fusion))


def tiny_batch(size: int = 6, seed: int = 1, start: int = 0) -> Batch:
    """Random images [B, 3, 8, 8], token ids [B, 6] with some padding, labels; sample ids s<start+i>."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (size, 6), generator=gen)
    attention = torch.ones(size, 6, dtype=torch.long)
    attention[::2, 4:] = 0  # every other sample is shorter
    ids = ids * attention
    present_text = torch.ones(size, dtype=torch.bool)
    present_text[-1] = False  # one sample lacks text
    return Batch(
        inputs={
            "image": {"pixel_values": torch.randn(size, 3, 8, 8, generator=gen)},
            "text": {"input_ids": ids, "attention_mask": attention},
        },
        present={"image": torch.ones(size, dtype=torch.bool), "text": present_text},
        labels=torch.randint(0, len(LABELS), (size,), generator=gen),
        ids=[f"s{start + i}" for i in range(size)],
    )


def train_steps(model, steps: int = 3, lr: float = 1e-2, batch: Batch | None = None) -> None:
    """A few AdamW steps over the trainable parameters, as the Trainer does (model.train() each step)."""
    batch = batch or tiny_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    for _ in range(steps):
        model.train()
        optimizer.zero_grad()
        task_loss(model, batch).backward()
        optimizer.step()
    model.eval()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm running stats too), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
