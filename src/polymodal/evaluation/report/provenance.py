"""Provenance of a report (its ``meta`` section): versions, seeds, config hash and a fingerprint of the data.

Two reports with the same ``config_hash`` and ``data.fingerprint`` evaluated the same model config on
byte-identical inputs, so any number can be traced to the config and data that produced it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...jsonable import jsonable
from .options import ReportOptions


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(batches: list) -> str:
    """sha256 (64 hex digits) over every sample id, label and processed input tensor, in loader order.

    Two evaluations with the same fingerprint saw byte-identical model inputs (same rows, same processing).
    Batches of processed generation samples (``samples``: conversations + attachment tensors) hash their ids,
    conversations, references and attachment tensors.
    """
    digest = hashlib.sha256()
    for batch in batches:
        if hasattr(batch, "samples"):
            _digest_samples(digest, batch.samples)
            continue
        digest.update("\x1f".join(map(str, batch.ids)).encode())
        if batch.labels is not None:
            digest.update(batch.labels.detach().cpu().contiguous().numpy().tobytes())
        for name in sorted(batch.inputs):
            digest.update(name.encode())
            digest.update(batch.present[name].cpu().numpy().tobytes())
            for key in sorted(batch.inputs[name]):
                digest.update(key.encode())
                digest.update(batch.inputs[name][key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _digest_samples(digest: Any, samples: list[dict[str, Any]]) -> None:
    for sample in samples:
        text = {key: sample.get(key) for key in ("id", "messages", "prompt", "answer", "answers")}
        digest.update(json.dumps(text, sort_keys=True, default=str).encode())
        for name in sorted(sample.get("attachments") or {}):
            digest.update(name.encode())
            for item in sample["attachments"][name]:
                for key in sorted(item):
                    digest.update(key.encode())
                    digest.update(item[key].detach().cpu().contiguous().numpy().tobytes())


def _modality_kind(config: Any) -> str:
    """image | audio | text of a modality config (a generation attachment: its encoder's kind)."""
    kind = getattr(config, "kind", None) or getattr(getattr(config, "encoder", None), "kind", None)
    return kind or str(config)


def config_hash(model_dir: str | Path | None, model: Any) -> str:
    """sha256 of the saved config.json (version field left out) or, without a directory, of the model config."""
    if model_dir is not None and (Path(model_dir) / "config.json").exists():
        payload = json.loads((Path(model_dir) / "config.json").read_text())
        payload.pop("polymodal_version", None)
        return _sha256_json(payload)
    from ...config import config_to_dict

    config = getattr(model, "config", None)
    return _sha256_json(config_to_dict(config) if dataclasses.is_dataclass(config) else repr(config))


def build_meta(model: Any, batches: list, options: ReportOptions, context: dict[str, Any]) -> dict[str, Any]:
    """The ``meta`` section. ``context``: model_dir, run_dir, split, data_source, train_seed, labels."""
    from ... import __version__

    modalities = getattr(getattr(model, "config", None), "modalities", {}) or {}
    train_seed = context.get("train_seed")
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "polymodal_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": options.device,
        "torch_threads": torch.get_num_threads(),
        "seed": options.seed,
        "train_seed": train_seed,
        "architecture": type(model).__name__,
        "task": getattr(model, "task", None) or getattr(model, "task_name", None),
        "labels": [str(x) for x in (getattr(model, "labels", None) or context.get("labels") or [])],
        "modalities": {name: _modality_kind(m) for name, m in modalities.items()},
        "model_dir": None if context.get("model_dir") is None else str(context["model_dir"]),
        "run_dir": None if context.get("run_dir") is None else str(context["run_dir"]),
        "config_hash": config_hash(context.get("model_dir"), model),
        "data": {
            "source": context.get("data_source"),
            "split": context.get("split"),
            "num_samples": int(sum(len(b) for b in batches)),
            "fingerprint": data_fingerprint(batches),
        },
        "options": jsonable({**dataclasses.asdict(options), "extra": None, **options.extra}),
    }


__all__ = ["build_meta", "config_hash", "data_fingerprint"]
