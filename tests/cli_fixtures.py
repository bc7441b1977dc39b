"""The tiny image + audio recipe that the CLI end-to-end tests train (60 spoken-digits rows, 2 epochs)."""

from __future__ import annotations


def tiny_recipe(seed: int | None = None) -> str:
    """The recipe YAML; ``seed`` sets train.seed (default: the config's own)."""
    seed_entry = f", seed: {seed}" if seed is not None else ""
    return f"""
model:
  modalities:
    image: {{kind: image, encoder: image_cnn, options: {{channels: [8, 16]}}, processor: {{image_size: 16, channels: 1}}}}
    audio:
      kind: audio
      encoder: audio_cnn
      options: {{channels: [8, 16]}}
      processor: {{sample_rate: 8000, n_fft: 256, hop_length: 80, n_mels: 20, max_seconds: 1.0}}
  fusion: {{name: gated, dim: 16}}
data: {{name: spoken-digits, limit: 60, batch_size: 16}}
train: {{epochs: 2, lr: 0.003, progress: false, log_every: 1{seed_entry}}}
"""
