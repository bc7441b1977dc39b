"""Train what follows frozen encoders from the feature cache: the glue between :mod:`.feature_cache` and the
Trainer, for every task (a classifier's fusion + head; an aligner's projections + objectives, e.g. LiT's
trained text tower against a locked, cached image tower).

``recipes.train`` calls :func:`cached_training_setup` after ``apply_finetune``. Every modality whose encoder is
frozen (no trainable weight, locked in eval mode), whose input augmentation is off and whose raw inputs no
objective re-encodes (MLM re-encodes masked text) is encoded once per split into
``<cache_dir>/<split>/<modality>/<key>/`` (key: encoder fingerprint + data fingerprint, see FeatureCache); the
Trainer then trains a :class:`CachedFeatureModel` that reads those outputs by sample id. When every modality is
cached, the train loader reads the cache alone (no raw data is touched), and so does the val loader unless the
model's validation reads processed inputs (``model.validates_on_inputs``: the aligner's instance-level
retrieval groups identical inputs) — its raw batches then still skip the cached encoders.

A vision-language model (``caches_attachments``: the generation tasks) has its own, per-attachment cache
(:mod:`.generation_cache`): its samples carry the cached encoder outputs and the model is not wrapped.

The wrapped model is the real model: ``save_pretrained`` (the Trainer's best model) writes the full model,
encoders included, which loads and predicts on raw inputs like any other.

``finetune.cache_features``: ``auto`` caches whatever qualifies; ``on`` also raises (ConfigError naming
``finetune.cache_features`` and each reason) when a frozen encoder cannot be cached (augmentation on, an
objective needs its raw inputs) or nothing qualifies; ``off`` never caches. The report (metrics.json
``feature_cache``) lists the cached modalities, the skipped frozen ones with their reason, and per split and
modality hit / miss / stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..config.finetune import parse_finetune_config
from .feature_cache import CachedFeatureDataset, CachedFeatureModel, FeatureCache, cacheable, cached_loader

CACHED_SPLITS = ("train", "val")  # test is evaluated by the saved model on raw inputs


def _frozen(encoder: nn.Module) -> bool:
    return not any(p.requires_grad for p in encoder.parameters())


def cached_training_setup(
    model: nn.Module,
    loaders: dict[str, DataLoader | None],
    config: Any,
    run_dir: str | Path,
    verbose: bool = False,
) -> tuple[nn.Module, dict[str, DataLoader | None], dict[str, Any] | None]:
    """What to hand the Trainer: ``(model_to_train, loaders, report)``.

    Without a cacheable modality this returns ``(model, loaders, report)`` unchanged, the report (or None when
    no encoder is frozen) naming each frozen modality left live and why. Otherwise the model is a
    CachedFeatureModel over ``model``, the train/val loaders read the cache when every modality is cached, and
    ``report`` (for metrics.json) says per split and modality: hit / miss / stale, why, samples, bytes, seconds.
    """
    if getattr(model, "caches_attachments", False):  # a vision-language model: its cache is per attachment
        from .generation_cache import generation_cache_setup

        return generation_cache_setup(model, loaders, config, run_dir, verbose)
    if not getattr(model, "supports_feature_cache", True):  # a model that declines any cache
        return model, loaders, None
    cfg = parse_finetune_config(getattr(config, "finetune", None))
    if cfg.cache_features == "off":
        return model, loaders, None
    augment = bool(getattr(config.data, "augment", False))
    cached, skipped = [], {}
    for name, encoder in model.encoders.items():
        if not _frozen(encoder):
            continue  # a training encoder: nothing to cache, and not worth reporting
        ok, why = cacheable(model, name, loaders.get("train"))
        if ok and augment:
            ok, why = False, "input augmentation is on (data.augment)"
        if ok:
            cached.append(name)
        else:
            skipped[name] = why
    if cfg.cache_features == "on" and (skipped or not cached):
        reasons = "; ".join(f"{n}: {w}" for n, w in skipped.items()) or "no encoder is frozen"
        raise ConfigError(f"finetune.cache_features=on but the features cannot be cached ({reasons}); "
                          "set finetune.cache_features to auto (cache what qualifies) or off")
    if not cached:  # a report only when a frozen encoder was left live: it says why
        report = {"directory": None, "modalities": [], "skipped": skipped, "all_cached": False, "splits": {}}
        return model, loaders, report if skipped else None

    root = Path(cfg.cache_dir) if cfg.cache_dir else Path(run_dir) / "feature_cache"
    features, reports = {}, {}
    for split in CACHED_SPLITS:
        loader = loaders.get(split)
        if loader is None:
            continue
        cache = FeatureCache(root / split)
        # Iterating a DataLoader draws its base seed from the global RNG; restore it so that caching leaves
        # dropout masks and the rest of training exactly as they would be without the cache.
        with torch.random.fork_rng(devices=[]):
            split_reports = cache.prepare(model, loader, modalities=cached, verbose=verbose)
        features[split] = cache.load(split_reports)
        reports[split] = {name: vars(report) for name, report in split_reports.items()}

    all_cached = len(cached) == len(model.encoders)
    new_loaders = dict(loaders)
    if all_cached:
        # No encoder runs at all: batches come straight from the cache (ids, presence, labels).
        train = loaders["train"]
        seed = int(getattr(config.train, "seed", 0))
        new_loaders["train"] = cached_loader(features["train"], batch_size=train.batch_size, shuffle=True, seed=seed)
        if "val" in features and not getattr(model, "validates_on_inputs", False):
            val = loaders["val"]
            dataset = CachedFeatureDataset(features["val"])
            # Same generator as the raw loader: each validation pass then draws from the global RNG (or not)
            # exactly as the raw loader would.
            new_loaders["val"] = DataLoader(dataset, batch_size=val.batch_size, shuffle=False,
                                            collate_fn=dataset.collate, generator=val.generator)
    # One wrapper serves train and val: the two splits have disjoint sample ids, so their features merge.
    merged = {name: _merge([features[s][name] for s in features]) for name in cached}
    report = {"directory": str(root), "modalities": cached, "skipped": skipped, "all_cached": all_cached,
              "splits": reports}
    return CachedFeatureModel(model, merged), new_loaders, report


def _merge(parts: list[Any]) -> Any:
    """One CachedFeatures over several splits' caches (rows concatenated, padded to a common token length)."""
    from ..data import pad_stack
    from .feature_cache import CachedFeatures

    if len(parts) == 1:
        return parts[0]
    ids = [i for part in parts for i in part.ids]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"feature cache: train and val share sample ids {dupes}; ids must be unique across splits")
    keys = set.intersection(*(set(p.tensors) for p in parts))
    tensors = {}
    for key in keys:
        rows = [row for part in parts for row in part.tensors[key]]
        tensors[key] = pad_stack(rows, False if key == "mask" else 0)
    return CachedFeatures(ids, tensors, parts[0].store)


__all__ = ["cached_training_setup"]
