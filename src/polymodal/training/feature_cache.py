"""Feature cache: encode frozen modalities once, then train what follows the encoders from disk — a classifier's
projection → fusion → head, an aligner's projections → embeddings → objectives (LiT: a locked image tower read
from the cache while the text tower trains).

A frozen encoder with augmentation off returns the same ModalityOutput for a sample every epoch, so computing
it once is exact and saves the encoder's whole forward pass (usually most of the step). Layout::

    <root>/<modality>/<key>/index.json           fingerprints, ids, shard list, store mode, bytes (written last)
    <root>/<modality>/<key>/shard-00000.safetensors   tokens [n, N, D], mask [n, N], pooled [n, D], present [n],
                                                      labels [n, ...] (when the data has labels)

``key`` hashes the encoder fingerprint (class + modality config + weights and buffers + processor config) and the
data fingerprint (sample ids + their processed input tensors), so a change to any of them is a miss; a key
directory that exists for the modality but differs is reported "stale" with the reason and replaced.

Use::

    cache = FeatureCache(run_dir / "feature_cache")
    reports = cache.prepare(model, train_loader)          # {"image": CacheReport(status="hit", ...)}
    features = cache.load(reports)
    cached_model = CachedFeatureModel(model, features)    # forward(batch) → the model's own output type
    loader = cached_loader(features, batch_size=32, shuffle=True)   # every modality cached: no raw data at all

``recipes.train`` does this automatically for frozen encoders, for every task (see :mod:`.cached_training`).

What a model offers the cache (duck-typed, so this module imports no model): ``encoders`` / ``config.modalities``
/ ``modality_names``, ``encode_raw(batch)`` and ``forward_encoded(raw_outputs, labels)`` — or
``forward_encoded(raw_outputs, batch)`` when the model sets ``forward_encoded_reads_batch`` (the aligner: its
objectives read labels, presence and inputs) —, optionally ``cache_blockers(modality)`` (a reason the modality
must stay live: an objective re-encodes its raw inputs) and ``cache_needs_tokens()`` (what ``store: auto`` keeps).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..config import config_to_dict
from ..types import Batch, ModalityOutput

INDEX_NAME = "index.json"
POOLED_FUSIONS = {"concat", "sum", "mean", "product", "gated", "weighted", "tensor", "low_rank_tensor"}
StoreMode = Literal["auto", "tokens", "pooled"]


# ---------------------------------------------------------------------------------------------- fingerprints


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _tensor_bytes(tensor: Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    header = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
    # reshape(-1): a 0-dim tensor (BatchNorm num_batches_tracked) cannot be viewed as bytes directly
    return header + tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else header


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (every weight and buffer, by name, with dtype and shape)."""
    weights = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        weights.update(name.encode())
        weights.update(_tensor_bytes(tensor))
    return weights.hexdigest()


def encoder_fingerprint(model: nn.Module, modality: str) -> dict[str, str]:
    """Hashes of what determines one encoder's outputs: class + encoder config, weights + buffers, processor."""
    encoder = model.encoders[modality]
    mcfg = config_to_dict(model.config.modalities[modality])
    processor_cfg = mcfg.pop("processor", {})
    # Facts an encoder resolves from files beyond its config (an HF checkpoint's declared pooling): only encoders
    # that have them add the key, so other encoders keep their cache keys.
    facts = getattr(encoder, "cache_facts", None)
    if facts is not None:
        mcfg["resolved"] = facts
    return {
        "config": _sha(json.dumps({"class": type(encoder).__qualname__, **mcfg}, sort_keys=True, default=str)),
        "weights": weights_digest(encoder),
        "processor": _sha(json.dumps(processor_cfg, sort_keys=True, default=str)),
    }


def data_fingerprint(loader: DataLoader, modality: str) -> str:
    """Hash of the sample ids, this modality's processed inputs and presence flags, and labels (one data pass)."""
    digest = hashlib.sha256()
    for batch in loader:
        digest.update(json.dumps(list(batch.ids)).encode())
        for key, tensor in sorted(batch.inputs.get(modality, {}).items()):
            digest.update(key.encode())
            digest.update(_tensor_bytes(tensor))
        if modality in batch.present:
            digest.update(_tensor_bytes(batch.present[modality]))
        if batch.labels is not None:
            digest.update(_tensor_bytes(batch.labels))
    return digest.hexdigest()


def sequential_loader(loader: DataLoader) -> DataLoader:
    """The same data in a fixed order (cache building and data fingerprints must not depend on shuffling)."""
    if not isinstance(loader.sampler, RandomSampler):
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers)


# ---------------------------------------------------------------------------------------------- reports


@dataclass
class CacheReport:
    """What ``prepare`` did for one modality: hit (reused), miss (built, nothing before), stale (rebuilt)."""

    modality: str
    status: Literal["hit", "miss", "stale"]
    reason: str
    directory: str
    num_samples: int
    store: str
    disk_bytes: int
    seconds: float

    def __str__(self) -> str:
        return (f"feature cache {self.modality}: {self.status.upper()} ({self.reason}) — {self.num_samples} samples, "
                f"{self.store}, {self.disk_bytes / 2**20:.2f} MiB, {self.seconds:.2f}s")


def cacheable(model: nn.Module, modality: str, loader: DataLoader | None = None) -> tuple[bool, str]:
    """Whether a modality's encoder outputs are fixed and enough: no trainable weight, eval mode, no input
    augmentation, and nothing in the model needs that modality's raw inputs (``model.cache_blockers``)."""
    encoder = model.encoders[modality]
    blockers = getattr(model, "cache_blockers", None)
    reason = blockers(modality) if blockers is not None else None
    if reason:
        return False, reason
    if any(p.requires_grad for p in encoder.parameters()):
        return False, f"encoder {modality!r} has trainable parameters"
    if any(m.training for m in encoder.modules()) and _train_mode_changes_outputs(encoder):
        return False, f"encoder {modality!r} is in training mode (dropout/BatchNorm would vary)"
    if loader is not None and getattr(loader.dataset, "augment", False):
        return False, "input augmentation is on (each epoch sees different inputs)"
    return True, "frozen"


def _train_mode_changes_outputs(encoder: nn.Module) -> bool:
    stochastic = (nn.Dropout, nn.modules.batchnorm._BatchNorm)
    return any(m.training and isinstance(m, stochastic) and getattr(m, "p", 1.0) != 0 for m in encoder.modules())


def resolve_store(model: nn.Module, store: StoreMode) -> str:
    if store != "auto":
        return store
    needs_tokens = getattr(model, "cache_needs_tokens", None)
    if needs_tokens is not None:  # the aligner: tokens only when an objective reads them (itm, mlm)
        return "tokens" if needs_tokens() else "pooled"
    fusion_name = model.config.fusion.name
    uses_tokens = getattr(model.fusion, "uses_tokens", None)
    pooled_only = fusion_name == "late" or uses_tokens is False or (uses_tokens is None and fusion_name in POOLED_FUSIONS)
    return "pooled" if pooled_only else "tokens"


# ---------------------------------------------------------------------------------------------- cache


class FeatureCache:
    """On-disk cache of encoder outputs, keyed by sample id + encoder fingerprint + data fingerprint.

    store: "tokens" keeps everything; "pooled" keeps pooled + present only (fusions that read only pooled
    vectors); "auto" picks "pooled" for those fusions. shard_size: samples per safetensors shard.
    """

    def __init__(self, root: str | Path, store: StoreMode = "auto", shard_size: int = 2048):
        self.root = Path(root)
        self.store = store
        self.shard_size = shard_size

    def prepare(self, model: nn.Module, loader: DataLoader, modalities: list[str] | None = None,
                data_fingerprints: dict[str, str] | None = None, verbose: bool = False) -> dict[str, CacheReport]:
        """Reuse or (re)build the cache of every requested (default: every cacheable) modality.

        ``data_fingerprints`` may give a precomputed data fingerprint per modality (e.g. a manifest hash) to
        skip the hashing pass over the data.
        """
        loader = sequential_loader(loader)
        names = modalities or [m for m in model.encoders if cacheable(model, m, loader)[0]]
        reports = {}
        for name in names:
            ok, why = cacheable(model, name, loader)
            if not ok:
                raise ValueError(f"feature cache: cannot cache modality {name!r}: {why}")
            started = time.perf_counter()
            store = resolve_store(model, self.store)
            fingerprint = encoder_fingerprint(model, name)
            fingerprint["data"] = (data_fingerprints or {}).get(name) or data_fingerprint(loader, name)
            fingerprint["store"] = store
            key = _sha(json.dumps(fingerprint, sort_keys=True))[:20]
            directory = self.root / name / key
            if (directory / INDEX_NAME).exists():
                index = json.loads((directory / INDEX_NAME).read_text())
                status, reason = "hit", "encoder, data and store unchanged"
            else:
                status, reason = self._diagnose(name, fingerprint)
                for old in (self.root / name).glob("*") if (self.root / name).exists() else []:
                    shutil.rmtree(old, ignore_errors=True)
                index = self._build(model, loader, name, directory, fingerprint, store)
            reports[name] = CacheReport(name, status, reason, str(directory), len(index["ids"]), store,
                                        index["disk_bytes"], time.perf_counter() - started)
            if verbose:
                print(reports[name])
        return reports

    def _diagnose(self, name: str, fingerprint: dict[str, str]) -> tuple[str, str]:
        """Why there was no hit: nothing cached yet (miss) or which fingerprint part changed (stale)."""
        previous = sorted((self.root / name).glob(f"*/{INDEX_NAME}")) if (self.root / name).exists() else []
        if not previous:
            return "miss", "nothing cached yet"
        old = json.loads(previous[-1].read_text()).get("fingerprint", {})
        labels = {"config": "encoder config", "weights": "encoder weights", "processor": "processor config",
                  "data": "data", "store": "store mode"}
        changed = [labels[k] for k in labels if old.get(k) != fingerprint.get(k)]
        return "stale", f"{', '.join(changed) or 'fingerprint'} changed"

    @torch.no_grad()
    def _build(self, model: nn.Module, loader: DataLoader, name: str, directory: Path,
               fingerprint: dict[str, str], store: str) -> dict[str, Any]:
        from ..files import atomic_write_text

        directory.mkdir(parents=True, exist_ok=True)
        encoder = model.encoders[name]
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        ids: list[str] = []
        shards: list[dict[str, Any]] = []
        pending: list[dict[str, Tensor]] = []
        for batch in loader:
            if name not in batch.inputs:
                raise ValueError(f"feature cache: the data has no modality {name!r} (has {batch.modalities})")
            inputs = {k: v.to(device) for k, v in batch.inputs[name].items()}
            out = encoder(inputs, batch.present[name].to(device))
            part = {"pooled": out.pooled, "present": out.present}
            if store == "tokens":
                part.update(tokens=out.tokens, mask=out.mask)
            if batch.labels is not None:
                part["labels"] = batch.labels
            pending.append({k: v.detach().cpu() for k, v in part.items()})
            ids.extend(str(i) for i in batch.ids)
            if sum(p["present"].shape[0] for p in pending) >= self.shard_size:
                shards.append(self._write_shard(directory, len(shards), pending))
                pending = []
        if pending:
            shards.append(self._write_shard(directory, len(shards), pending))
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"feature cache: sample ids must be unique to key the cache; duplicated: {dupes}")
        index = {"fingerprint": fingerprint, "store": store, "ids": ids, "shards": shards,
                 "disk_bytes": sum(s["bytes"] for s in shards)}
        atomic_write_text(directory / INDEX_NAME, json.dumps(index))  # last: a crashed build is never a hit
        return index

    @staticmethod
    def _write_shard(directory: Path, number: int, parts: list[dict[str, Tensor]]) -> dict[str, Any]:
        from ..data import pad_stack
        from ..files import atomic_save_safetensors

        tensors = {}
        for key in parts[0]:
            rows = [row for part in parts for row in part[key]]
            tensors[key] = pad_stack(rows, False if key == "mask" else 0)  # pad tokens with 0, mask with False
        path = directory / f"shard-{number:05d}.safetensors"
        atomic_save_safetensors(tensors, path)
        return {"file": path.name, "count": int(tensors["present"].shape[0]), "bytes": path.stat().st_size}

    def load(self, reports: dict[str, CacheReport], device: str | torch.device = "cpu") -> dict[str, CachedFeatures]:
        return {name: CachedFeatures.load(Path(report.directory), device) for name, report in reports.items()}


# ---------------------------------------------------------------------------------------------- reading


class CachedFeatures:
    """One modality's cached outputs in memory: tokens [S, N, D], mask [S, N], pooled [S, D], present [S]."""

    def __init__(self, ids: list[str], tensors: dict[str, Tensor], store: str):
        self.ids = ids
        self.row_of = {sample_id: row for row, sample_id in enumerate(ids)}
        self.tensors = tensors
        self.store = store

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> CachedFeatures:
        from ..data import pad_stack

        index = json.loads((directory / INDEX_NAME).read_text())
        shards = [load_file(str(directory / s["file"]), device=str(device)) for s in index["shards"]]
        tensors = {}
        for key in shards[0]:
            rows = [row for shard in shards for row in shard[key]]
            tensors[key] = pad_stack(rows, False if key == "mask" else 0)
        return cls(index["ids"], tensors, index["store"])

    def rows(self, ids: list[str], modality: str) -> Tensor:
        try:
            return torch.tensor([self.row_of[str(i)] for i in ids], dtype=torch.long)
        except KeyError as err:
            raise KeyError(f"sample id {err.args[0]!r} is not in the feature cache of modality {modality!r}; "
                           "the cache was built from other data: run FeatureCache.prepare on this data") from err

    def output(self, rows: Tensor, present: Tensor | None = None) -> ModalityOutput:
        """ModalityOutput for ``rows``; ``present`` [b] (e.g. after modality dropout) further hides samples."""
        t = self.tensors
        rows = rows.to(t["pooled"].device)
        keep = t["present"][rows].to(torch.bool)
        if present is not None:
            keep = keep & present.to(device=keep.device, dtype=torch.bool)
        pooled = t["pooled"][rows] * keep.unsqueeze(1).to(t["pooled"].dtype)
        if self.store == "pooled":
            tokens, mask = pooled.unsqueeze(1), keep.unsqueeze(1)
        else:
            mask = t["mask"][rows].to(torch.bool) & keep.unsqueeze(1)
            length = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1  # trim shared trailing padding
            tokens, mask = t["tokens"][rows, :length], mask[:, :length]
        return ModalityOutput(tokens=tokens, mask=mask, pooled=pooled, present=keep)


class CachedFeatureModel(nn.Module):
    """Wraps a model (classifier or aligner): cached modalities come from ``features`` (looked up by
    ``batch.ids``), the others are encoded live (``model.encode_raw``); then ``model.forward_encoded``. The output
    is the model's own (ModelOutput, AlignmentOutput). Attribute access falls through to the model."""

    def __init__(self, model: nn.Module, features: dict[str, CachedFeatures]):
        super().__init__()
        self.model = model
        self.features = features

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def provided(self, batch: Batch) -> list[str]:
        """The model's modalities ``batch`` provides: cached ones, plus those with inputs."""
        return [name for name in self.model.modality_names if name in self.features or name in batch.inputs]

    def forward(self, batch: Batch) -> Any:
        prepare = getattr(self.model, "prepare_batch", None)
        if prepare is not None:  # draws (MLM masks) before any encoder runs, as the model's own forward does
            batch = prepare(batch)
        device = next(self.model.parameters()).device  # features live on the CPU; the model may not
        live_inputs = {name: value for name, value in batch.inputs.items() if name not in self.features}
        live = self.model.encode_raw(dataclasses.replace(batch, inputs=live_inputs)) if live_inputs else {}
        raw = {}
        for name in self.model.modality_names:
            if name in self.features:
                rows = self.features[name].rows(batch.ids, name)
                out = self.features[name].output(rows, batch.present.get(name))
                raw[name] = ModalityOutput(*(t.to(device) for t in (out.tokens, out.mask, out.pooled, out.present)))
            elif name in live:
                raw[name] = live[name]
        if getattr(self.model, "forward_encoded_reads_batch", False):
            return self.model.forward_encoded(raw, batch)
        return self.model.forward_encoded(raw, batch.labels)

    def loss_counts(self, batch: Batch) -> dict[str, float] | None:
        """The model's per-term item counts (aligner), counting cached modalities as provided; None without."""
        counter = getattr(self.model, "loss_counts", None)
        return None if counter is None else counter(batch, modalities=self.provided(batch))

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory)


class CachedFeatureDataset(Dataset):
    """Samples straight from the cache (every modality cached): no raw data is read or processed."""

    def __init__(self, features: dict[str, CachedFeatures]):
        if not features:
            raise ValueError("CachedFeatureDataset needs at least one cached modality")
        self.features = features
        first = next(iter(features.values()))
        self.ids = first.ids
        self.labels = first.tensors.get("labels")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        ids = [self.ids[i] for i in indices]
        present = {}
        for name, feats in self.features.items():
            present[name] = feats.tensors["present"][feats.rows(ids, name)].to(torch.bool)
        labels = None if self.labels is None else self.labels[torch.tensor(indices)]
        return Batch(inputs={}, present=present, labels=labels, ids=ids)


def cached_loader(features: dict[str, CachedFeatures], batch_size: int = 32, shuffle: bool = True,
                  seed: int = 0) -> DataLoader:
    dataset = CachedFeatureDataset(features)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate,
                      generator=generator)


__all__ = [
    "CacheReport",
    "CachedFeatureDataset",
    "CachedFeatureModel",
    "CachedFeatures",
    "FeatureCache",
    "cacheable",
    "cached_loader",
    "data_fingerprint",
    "encoder_fingerprint",
    "resolve_store",
    "weights_digest",
]
