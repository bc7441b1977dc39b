"""Feature cache of the generation tasks: encode every attachment of the train and val splits once with its frozen
encoder, keep the encoder outputs on disk (safetensors), and train the connectors (stage 1; + the decoder in stage
2) from them.

LLaVA's stage 1 (Liu et al., 2023, arXiv:2304.08485 §4.2) trains only the projector on top of a frozen vision tower;
with augmentation off the tower returns the same tokens for an image every epoch, so computing them once is exact
and saves the encoder's forward pass and the decoding / resizing of every attachment in every later epoch.
Layout::

    <root>/<split>/<modality>/<key>/index.json      fingerprint, attachments per sample, shard list (written last)
    <root>/<split>/<modality>/<key>/shard-00000.safetensors   tokens [n, N, D], mask [n, N] bool, length [n] long

``key`` hashes the encoder fingerprint (class + encoder config, weights + buffers, processor class + options) and
the data fingerprint (sample ids and order, attachments per sample, every processed attachment tensor), so a
change of data, encoder weights or processor options is a miss; an older key of the modality is reported "stale"
with what changed, and replaced. A build is written into a temporary directory that is renamed to its key once
``index.json`` is in it: a crashed build is never a hit.

Attachment k of dataset row i is cache row ``sum(counts[:i]) + k``, stored trimmed to its real tokens (the last
True of the encoder's mask). Training batches pad again with a False mask; connectors and placeholder expansion
ignore masked tokens, so the losses equal the uncached run's to float rounding. A cached sample is an ordinary
sample whose attachment inputs are ``{"encoded_tokens": [N, D], "encoded_mask": [N]}``, which the model reads
instead of running the encoder (``VisionLanguageModel.encode_attachments``), so the Trainer, validation (loss and
generation) and the saved model need nothing else: the model saved from a cached run is the full model and
works on raw images and audio; the test split is always evaluated on raw inputs.

The cached features live in memory (like the classification cache): fine for the tiny and small data sets this
library trains on; a LLaVA-scale pretraining set would need memory-mapped shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..config import ConfigError, config_to_dict
from ..config.finetune import parse_finetune_config
from ..data.errors import DataError
from ..generation.collate import stack_attachments
from ..generation.data import GenerationDataset
from ..generation.model import ENCODED_MASK, ENCODED_TOKENS
from .feature_cache import _sha, _tensor_bytes, sequential_loader, weights_digest

CACHED_SPLITS = ("train", "val")  # test is evaluated by the saved model on raw inputs
INDEX_NAME = "index.json"
CACHE_FORMAT = "generation-attachments-1"  # bump when the layout changes: old caches then miss


# ---------------------------------------------------------------------------------------------- fingerprints


def attachment_fingerprint(model: nn.Module, modality: str, processor: Any = None) -> dict[str, str]:
    """Hashes of what fixes one attachment encoder's outputs: its class + encoder config (the connector and the
    placeholder do not matter), its weights + buffers, and the processor (class + options; ``processor`` is the
    one the data goes through, else the options of the model's config)."""
    encoder = model.encoders[modality]
    attachment = model.config.modalities[modality]
    encoder_cfg = config_to_dict(attachment.encoder) if attachment.encoder is not None else {}
    processor_cfg: Any = encoder_cfg.pop("processor", {})
    options = getattr(processor, "config", None)
    if processor is not None:
        processor_cfg = {"class": type(processor).__qualname__,
                         "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else processor_cfg}
    facts = getattr(encoder, "cache_facts", None)  # what an HF encoder resolved from its checkpoint files
    if facts is not None:
        encoder_cfg["resolved"] = facts
    return {
        "format": CACHE_FORMAT,
        "config": _sha(json.dumps({"class": type(encoder).__qualname__, **encoder_cfg}, sort_keys=True, default=str)),
        "weights": weights_digest(encoder),
        "processor": _sha(json.dumps(processor_cfg, sort_keys=True, default=str)),
    }


# ---------------------------------------------------------------------------------------------- building


class _ShardWriter:
    """One modality's attachments being encoded into a temporary directory, ``shard_size`` rows per shard."""

    def __init__(self, directory: Path, shard_size: int):
        self.directory = directory
        self.shard_size = shard_size
        self.pending: list[tuple[Tensor, Tensor]] = []
        self.shards: list[dict[str, Any]] = []
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, tokens: Tensor, mask: Tensor | None) -> None:
        """tokens [K, N, D], mask [K, N] | None: each attachment trimmed to its real tokens."""
        tokens = tokens.detach().cpu()
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool) if mask is None else mask.detach().cpu().bool()
        for row_tokens, row_mask in zip(tokens, mask):
            real = row_mask.nonzero()
            length = int(real.max()) + 1 if len(real) else 0
            self.pending.append((row_tokens[:length].clone(), row_mask[:length].clone()))
            if len(self.pending) >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        from ..files import atomic_save_safetensors

        if not self.pending:
            return
        width = self.pending[0][0].shape[-1]
        longest = max(1, *(t.shape[0] for t, _ in self.pending))  # ≥ 1 so an all-empty shard keeps its rank
        tokens = torch.zeros(len(self.pending), longest, width, dtype=self.pending[0][0].dtype)
        mask = torch.zeros(len(self.pending), longest, dtype=torch.bool)
        for row, (row_tokens, row_mask) in enumerate(self.pending):
            tokens[row, : len(row_tokens)] = row_tokens
            mask[row, : len(row_mask)] = row_mask
        length = torch.tensor([len(m) for _, m in self.pending], dtype=torch.long)
        path = self.directory / f"shard-{len(self.shards):05d}.safetensors"
        atomic_save_safetensors({"tokens": tokens, "mask": mask, "length": length}, path)
        self.shards.append({"file": path.name, "count": len(self.pending), "bytes": path.stat().st_size})
        self.pending = []

    def finish(self, fingerprint: dict[str, str], counts: list[int], ids: list[str]) -> dict[str, Any]:
        from ..files import atomic_write_text

        self.flush()
        index = {"fingerprint": fingerprint, "counts": counts, "ids": ids, "shards": self.shards,
                 "disk_bytes": sum(s["bytes"] for s in self.shards)}
        atomic_write_text(self.directory / INDEX_NAME, json.dumps(index))  # last: a crashed build is never a hit
        return index


def _batch_attachments(samples: list[dict[str, Any]], modality: str) -> list[dict[str, Tensor]]:
    return [item for sample in samples for item in (sample.get("attachments") or {}).get(modality) or []]


@torch.no_grad()
def _scan(model: nn.Module, loader: DataLoader, hashed: list[str], writers: dict[str, _ShardWriter],
          device: torch.device) -> tuple[dict[str, str], list[str], dict[str, list[int]]]:
    """One pass over the data (fixed order): the data fingerprint of each ``hashed`` modality, and the encoder
    outputs of each modality with a writer. Returns (fingerprints, sample ids, attachments per sample)."""
    digests = {name: hashlib.sha256() for name in hashed}
    ids: list[str] = []
    counts: dict[str, list[int]] = {name: [] for name in {*hashed, *writers}}
    for batch in loader:
        samples = batch.samples
        for sample in samples:
            ids.append(str(sample.get("id")))
            attachments = sample.get("attachments") or {}
            for name in counts:
                counts[name].append(len(attachments.get(name) or []))
            for name, digest in digests.items():
                items = attachments.get(name) or []
                digest.update(json.dumps([ids[-1], len(items)]).encode())
                for item in items:
                    for key, tensor in sorted(item.items()):
                        digest.update(key.encode())
                        digest.update(_tensor_bytes(tensor))
        for name, writer in writers.items():
            items = _batch_attachments(samples, name)
            if items:
                inputs = {key: value.to(device) for key, value in stack_attachments(items, name).items()}
                writer.add(*model.encoder_outputs(name, inputs))
    return {name: digest.hexdigest() for name, digest in digests.items()}, ids, counts


class AttachmentCache:
    """The on-disk cache of one split: ``prepare`` reuses or (re)builds each modality's encoder outputs."""

    def __init__(self, root: str | Path, shard_size: int = 2048):
        self.root = Path(root)
        self.shard_size = shard_size

    def prepare(self, model: nn.Module, loader: DataLoader, modalities: list[str],
                device: str | torch.device = "cpu") -> dict[str, dict[str, Any]]:
        """Per modality: {status: hit | miss | stale, reason, directory, num_samples, num_attachments, disk_bytes,
        seconds}. Modalities with no earlier cache are encoded in the same data pass that fingerprints them."""
        started = time.perf_counter()
        device = torch.device(device)
        loader = sequential_loader(loader)
        dataset = loader.dataset
        fingerprints = {name: attachment_fingerprint(model, name, getattr(dataset, "processors", {}).get(name))
                        for name in modalities}
        fresh = [name for name in modalities if not self._indexes(name)]  # nothing to reuse: build in pass one
        writers = {name: _ShardWriter(self._temp_dir(name), self.shard_size) for name in fresh}
        with _encoders_on(model, list(writers), device):
            data, ids, counts = _scan(model, loader, modalities, writers, device)
        reports, stale = {}, {}
        for name in modalities:
            fingerprint = {**fingerprints[name], "data": data[name]}
            key = _sha(json.dumps(fingerprint, sort_keys=True))[:20]
            directory = self.root / name / key
            if name in writers:
                index = writers[name].finish(fingerprint, counts[name], ids)
                self._install(writers[name].directory, directory)
                reports[name] = ("miss", "nothing cached yet", directory, index)
            elif (directory / INDEX_NAME).exists():
                index = json.loads((directory / INDEX_NAME).read_text())
                reports[name] = ("hit", "encoder, processor and data unchanged", directory, index)
            else:
                stale[name] = (fingerprint, directory, self._diagnose(name, fingerprint))
        if stale:  # a second pass encodes what changed
            writers = {name: _ShardWriter(self._temp_dir(name), self.shard_size) for name in stale}
            with _encoders_on(model, list(writers), device):
                _scan(model, loader, [], writers, device)
            for name, (fingerprint, directory, reason) in stale.items():
                index = writers[name].finish(fingerprint, counts[name], ids)
                self._install(writers[name].directory, directory)
                reports[name] = ("stale", reason, directory, index)
        seconds = time.perf_counter() - started
        return {name: {"modality": name, "status": status, "reason": reason, "directory": str(directory),
                       "num_samples": len(index["counts"]), "num_attachments": sum(index["counts"]),
                       "disk_bytes": index["disk_bytes"], "seconds": seconds}
                for name, (status, reason, directory, index) in reports.items()}

    def _indexes(self, name: str) -> list[Path]:
        folder = self.root / name
        found = sorted(folder.glob(f"*/{INDEX_NAME}")) if folder.exists() else []
        return [path for path in found if not path.parent.name.startswith(".building-")]  # a build cut short

    def _temp_dir(self, name: str) -> Path:
        return self.root / name / f".building-{os.getpid()}-{time.monotonic_ns()}"

    def _diagnose(self, name: str, fingerprint: dict[str, str]) -> str:
        previous = self._indexes(name)
        old = json.loads(previous[-1].read_text()).get("fingerprint", {}) if previous else {}
        labels = {"format": "cache format", "config": "encoder config", "weights": "encoder weights",
                  "processor": "processor options", "data": "data"}
        changed = [label for key, label in labels.items() if old.get(key) != fingerprint.get(key)]
        return f"{', '.join(changed) or 'fingerprint'} changed"

    def _install(self, built: Path, directory: Path) -> None:
        """Move a finished build to its key; every other key of the modality (stale) is removed."""
        for old in directory.parent.iterdir():
            if old != built and old.is_dir() and not old.name.startswith(".building-"):
                shutil.rmtree(old, ignore_errors=True)
        os.replace(built, directory)


class _encoders_on:
    """Context: the listed encoders on ``device`` while the cache encodes, back where they were afterwards."""

    def __init__(self, model: nn.Module, names: list[str], device: torch.device):
        self.encoders = [model.encoders[name] for name in names]
        self.device = device
        self.homes: list[torch.device] = []

    def __enter__(self) -> None:
        for encoder in self.encoders:
            self.homes.append(next((p.device for p in encoder.parameters()), torch.device("cpu")))
            encoder.to(self.device)

    def __exit__(self, *exc: Any) -> None:
        for encoder, home in zip(self.encoders, self.homes):
            encoder.to(home)


# ---------------------------------------------------------------------------------------------- reading


class CachedAttachments:
    """One split's cached outputs of one modality, in memory: tokens [A, N, D], mask [A, N], length [A]; counts[i]
    attachments for dataset row i."""

    def __init__(self, counts: list[int], ids: list[str], tensors: dict[str, Tensor], modality: str):
        self.counts = counts
        self.ids = ids
        self.starts = [0]
        for count in counts[:-1]:
            self.starts.append(self.starts[-1] + count)
        self.tensors = tensors
        self.modality = modality

    @classmethod
    def load(cls, directory: str | Path, modality: str) -> CachedAttachments:
        from ..data import pad_stack

        directory = Path(directory)
        index = json.loads((directory / INDEX_NAME).read_text())
        shards = [load_file(str(directory / s["file"])) for s in index["shards"]]
        tensors = {}
        for key in ("tokens", "mask", "length"):
            rows = [row for shard in shards for row in shard[key]]
            tensors[key] = pad_stack(rows, False if key == "mask" else 0) if rows else torch.zeros(0)
        return cls(index["counts"], index["ids"], tensors, modality)

    def items(self, row: int, sample_id: str, expected: int) -> list[dict[str, Tensor]]:
        """The cached inputs of dataset row ``row``'s ``expected`` attachments; DataError when the cache was built
        from other data (the row's id or attachment count differs)."""
        if row >= len(self.counts) or self.ids[row] != sample_id or self.counts[row] != expected:
            raise DataError(f"feature cache ({self.modality}): row {row} (id {sample_id!r}, {expected} attachment(s)) "
                            "is not the row the cache was built from; delete the cache directory or set "
                            "finetune.cache_features: off")
        out = []
        for k in range(expected):
            at = self.starts[row] + k
            length = int(self.tensors["length"][at])
            out.append({ENCODED_TOKENS: self.tensors["tokens"][at, :length].clone(),
                        ENCODED_MASK: self.tensors["mask"][at, :length].clone()})
        return out


class CachedAttachmentDataset(Dataset):
    """A GenerationDataset whose cached modalities come from the cache (no decoding, no processing, no encoder):
    the same samples (messages, answers, id, extra fields) in the same order, attachment inputs replaced by
    ``{"encoded_tokens": [N, D], "encoded_mask": [N]}``; other modalities are processed as usual."""

    def __init__(self, dataset: GenerationDataset, features: dict[str, CachedAttachments]):
        self.dataset = dataset
        self.features = features
        self.rows = dataset.rows
        self.skipped = dataset.skipped

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.dataset
        row = base.rows[index]
        sample = {key: value for key, value in row.items()
                  if key != "_raw_attachments" and key not in base.columns.values()}
        attachments = {}
        for name, items in row["_raw_attachments"].items():
            if name in self.features:
                attachments[name] = self.features[name].items(index, str(sample["id"]), len(items))
            else:
                attachments[name] = [base.processors[name](raw) for raw in items]
        sample["attachments"] = attachments
        return sample

    collate = staticmethod(GenerationDataset.collate)


def _cached_loader(loader: DataLoader, dataset: CachedAttachmentDataset) -> DataLoader:
    """``loader`` over the cached dataset: same batch size, order (shuffle, generator), workers and collate."""
    workers = loader.num_workers
    return DataLoader(dataset, batch_size=loader.batch_size, shuffle=isinstance(loader.sampler, RandomSampler),
                      generator=loader.generator, num_workers=workers, collate_fn=loader.collate_fn,
                      persistent_workers=workers > 0 and loader.persistent_workers, drop_last=loader.drop_last)


# ---------------------------------------------------------------------------------------------- the recipe hook


def cache_blockers(model: nn.Module, modality: str, config: Any, loader: DataLoader | None) -> str | None:
    """Why ``modality``'s attachments cannot be trained from the cache (None: they can)."""
    why = model.cache_blockers(modality)
    if why:
        return why
    if bool(getattr(config.data, "augment", False)) or getattr(getattr(loader, "dataset", None), "augment", False):
        return "input augmentation is on (data.augment): each epoch sees different inputs"
    if loader is not None and not isinstance(loader.dataset, GenerationDataset):
        return f"the train data is a {type(loader.dataset).__name__}, not a GenerationDataset"
    return None


def generation_cache_setup(model: nn.Module, loaders: dict[str, DataLoader | None], config: Any,
                           run_dir: str | Path, verbose: bool = False
                           ) -> tuple[nn.Module, dict[str, DataLoader | None], dict[str, Any] | None]:
    """``(model, loaders, report)`` for the Trainer: the model unchanged, the train / val loaders reading the
    attachments of every cacheable modality from ``<finetune.cache_dir or run_dir/feature_cache>/<split>/``.

    ``finetune.cache_features``: ``auto`` caches every attachment modality whose encoder is frozen (model.stage 1,
    or freeze_encoder), locked in eval mode, with augmentation off; ``on`` also raises ConfigError, naming each
    modality and why, when any attachment cannot be cached (an encoder that trains, ...); ``off`` never caches.
    ``report`` (metrics.json ``feature_cache``): directory, cached modalities, skipped ones with their reason,
    and per split and modality hit / miss / stale, samples, attachments, bytes and seconds; None when nothing is
    cached and no frozen encoder was left live.
    """
    cfg = parse_finetune_config(getattr(config, "finetune", None))
    if cfg.cache_features == "off":
        return model, loaders, None
    train = loaders.get("train")
    cached, skipped, training = [], {}, {}
    for name in model.config.modalities:
        why = cache_blockers(model, name, config, train)
        if why is None:
            cached.append(name)
        elif name in model.encoders and any(p.requires_grad for p in model.encoders[name].parameters()):
            training[name] = why  # a training encoder: nothing to cache, reported only when cache_features is on
        else:
            skipped[name] = why
    if cfg.cache_features == "on" and (skipped or training or not cached):
        reasons = "; ".join(f"{n}: {w}" for n, w in {**training, **skipped}.items()) or "no attachment modality"
        raise ConfigError(f"finetune.cache_features=on but the attachment features cannot be cached ({reasons}); "
                          "freeze the encoders (model.stage: 1 or model.modalities.<name>.freeze_encoder: true), or "
                          "set finetune.cache_features to auto (cache what qualifies) or off")
    if not cached:
        report = {"directory": None, "modalities": [], "skipped": skipped, "all_cached": False, "splits": {}}
        return model, loaders, report if skipped else None

    from .distributed import device_for_rank
    from .trainer import resolve_device

    device = device_for_rank(resolve_device(config.train.device))
    root = Path(cfg.cache_dir) if cfg.cache_dir else Path(run_dir) / "feature_cache"
    new_loaders, reports = dict(loaders), {}
    for split in CACHED_SPLITS:
        loader = loaders.get(split)
        if loader is None or not isinstance(loader.dataset, GenerationDataset):  # a custom val set stays raw
            continue
        # Iterating a DataLoader draws its base seed from the global RNG: restore it, so that dropout masks and
        # the rest of training are exactly those of the uncached run.
        with torch.random.fork_rng(devices=[]):
            split_reports = AttachmentCache(root / split).prepare(model, loader, cached, device)
        features = {name: CachedAttachments.load(r["directory"], name) for name, r in split_reports.items()}
        new_loaders[split] = _cached_loader(loader, CachedAttachmentDataset(loader.dataset, features))
        reports[split] = split_reports
        if verbose:
            for r in split_reports.values():
                print(f"feature cache {split}/{r['modality']}: {r['status'].upper()} ({r['reason']}) — "
                      f"{r['num_attachments']} attachments of {r['num_samples']} samples, "
                      f"{r['disk_bytes'] / 2**20:.2f} MiB, {r['seconds']:.2f}s")
    report = {"directory": str(root), "modalities": cached, "skipped": skipped,
              "all_cached": len(cached) == len(model.config.modalities), "splits": reports}
    return model, new_loaders, report


__all__ = ["AttachmentCache", "CachedAttachmentDataset", "CachedAttachments", "attachment_fingerprint",
           "cache_blockers", "generation_cache_setup"]
