"""Make docs/explain_example.png: train a small image + audio classifier on the built-in spoken-digits data,
explain one test sample with polymodal.explain.explain, and stack its pictures into one PNG.

    python scripts/explain_example.py [--out runs/explain_example] [--epochs 4] [--index 0]

CPU only, a few minutes. The full explanation (HTML page + PNGs + explanation.json) stays in OUT/explanation.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

from polymodal.config import Config, from_dict
from polymodal.data.builtin.spoken_digits import SpokenDigits
from polymodal.explain import explain
from polymodal.explain.render import atomic_write_bytes, column, png_bytes, titled
from polymodal.recipes.train import train

ROOT = Path(__file__).resolve().parents[1]


def example_config(out_dir: Path, epochs: int) -> Config:
    """The demo's spoken-digits recipe at small size, with a ViT image encoder (so rollout has something to show)."""
    return from_dict(Config, {
        "model": {
            "modalities": {
                "image": {"kind": "image", "encoder": "image_vit", "processor": {"image_size": 16, "channels": 1},
                          "options": {"dim": 32, "depth": 2, "heads": 4, "patch_size": 2}},
                "audio": {"kind": "audio", "encoder": "audio_transformer", "options": {"dim": 32, "depth": 2, "heads": 4},
                          "processor": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 40,
                                        "max_seconds": 1.0}},
            },
            "fusion": {"name": "transformer", "dim": 32, "options": {"layers": 1, "heads": 4}},
            "head": {"dropout": 0.1},
        },
        "data": {"name": "spoken-digits", "batch_size": 32},
        "train": {"epochs": epochs, "lr": 2e-3, "weight_decay": 0.01, "warmup_ratio": 0.05, "seed": 0,
                  "progress": False, "device": "cpu", "out_dir": str(out_dir / "run")},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "explain_example")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--index", type=int, default=0, help="test-split row to explain")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "explain_example.png")
    args = parser.parse_args()

    run = args.out / "run"
    if not (run / "best" / "model.safetensors").exists():
        summary = train(example_config(args.out, args.epochs), verbose=False)
        print(f"trained: test accuracy {summary['test']['accuracy']:.3f}")
    row = SpokenDigits().records("test")[args.index]
    result = explain(run, {"image": row["image"], "audio": row["audio"]}, args.out / "explanation", steps=64)
    print(f"sample {row['id']} (label {row['label']}): predicted {result['prediction']['label']}; "
          f"Shapley {result['shapley']['shapley']}")
    pictures = [("ig_image.png", f"image: integrated gradients (label {row['label']}, "
                                 f"predicted {result['prediction']['label']})"),
                ("rollout_image.png", "image: ViT attention rollout"),
                ("ig_audio.png", "audio: integrated gradients on the log-mel spectrogram")]
    panels = [titled(Image.open(io.BytesIO((args.out / "explanation" / name).read_bytes())).convert("RGB"), title)
              for name, title in pictures]
    atomic_write_bytes(args.png, png_bytes(column(panels, gap=12)))
    print(f"wrote {args.png} and {args.out / 'explanation' / 'index.html'}")


if __name__ == "__main__":
    main()
