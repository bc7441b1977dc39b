"""`polymodal demo --task tune`: a small study on the built-in spoken-digits data (image + audio).

Searches the learning rate (log scale) and the fusion (concat / gated) of the classification demo's recipe,
prunes poor trials on validation accuracy, and evaluates the best model on the held-out test split once.
``--quick``: 4 trials of 3 epochs on 300 rows per split (a couple of minutes on a laptop CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ...config import save_config

SPACE = {
    "metric": "val_accuracy",
    "direction": "maximize",
    "params": {
        "train.lr": {"type": "log_float", "low": 1.0e-4, "high": 3.0e-2},
        "model.fusion.name": {"type": "categorical", "choices": ["concat", "gated"]},
    },
}


def run_tune_demo(out: str | Path, quick: bool = False, epochs: int | None = None, seed: int = 0) -> dict[str, Any]:
    from ...tune.report import format_summary
    from ..tune import TuneOptions, run_study
    from .classify import spoken_digits_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (3 if quick else 6)  # pruning starts after the first epoch
    trials = 4 if quick else 12
    config = spoken_digits_config(["image", "audio"], "concat", epochs, seed, str(out / "runs"),
                                  limit=300 if quick else None)
    save_config(config, out / "config.yaml")
    (out / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    print(f"polymodal demo: tune on spoken digits (image + audio), {trials} trials of {epochs} epochs; "
          f"config {out / 'config.yaml'}, space {out / 'space.yaml'}")
    summary = run_study(out / "config.yaml", out / "space.yaml", TuneOptions(trials=trials, study_dir=out / "study",
                                                                            seed=seed))
    print(format_summary(summary))
    return summary
