"""Token pooling as sentence-transformers defines it, and the ``modules.json`` layout that declares it.

A sentence-transformers checkpoint (e.g. ``sentence-transformers/all-MiniLM-L6-v2``) is a plain Hugging Face
model plus ``modules.json`` listing its modules: ``Transformer`` (the model itself), ``Pooling`` (its
``1_Pooling/config.json`` names the pooling modes) and optionally ``Normalize`` (L2 normalisation). Those
checkpoints were trained with that pooling only; BERT's ``pooler_output`` (tanh over [CLS]) is untrained in
them, so reading the layout is what makes their embeddings meaningful.

Pooling modes (tokens [B, N, D], mask [B, N] bool → [B, D]; several modes concatenate → [B, k·D]), following
``sentence_transformers.sentence_transformer.modules.Pooling`` (v6):

- ``cls``: the first real token;
- ``mean``: Σ_mask tokens / Σ mask;
- ``max``: max over real tokens (a row with no real token gives zeros, not -inf);
- ``mean_sqrt_len``: Σ_mask tokens / sqrt(Σ mask) (sentence-transformers' ``mean_sqrt_len_tokens``);
- ``weightedmean``: positions weighted 1, 2, … from the first real token (SGPT, Muennighoff 2022);
- ``lasttoken``: the last real token (causal-LM embedders).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
# sentence-transformers' legacy boolean keys, in its concatenation order, and its mode names.
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_NAMES = {"mean_sqrt_len_tokens": "mean_sqrt_len"}
_OUR_TO_ST = {ours: st for st, ours in _ST_NAMES.items()}
MODULES_FILE = "modules.json"


@dataclass(frozen=True)
class SentenceTransformersLayout:
    """What a checkpoint's ``modules.json`` declares: pooling modes, a final L2 normalisation, unused modules."""

    modes: tuple[str, ...]
    normalize: bool = False
    ignored: tuple[str, ...] = field(default_factory=tuple)  # module types polymodal does not apply (e.g. Dense)


def pool_tokens(tokens: Tensor, mask: Tensor, modes: tuple[str, ...] | list[str]) -> Tensor:
    """tokens [B, N, D], mask [B, N] (bool or 0/1) → [B, len(modes)·D], each mode as sentence-transformers does."""
    mask = mask.to(torch.bool)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    count = weights.sum(1)
    has_token = mask.any(1, keepdim=True)
    outputs = []
    for mode in modes:
        if mode == "cls":  # first real token (argmax of the mask; position 0 for right padding)
            first = mask.to(torch.int).argmax(1)
            outputs.append(tokens[torch.arange(tokens.shape[0], device=tokens.device), first])
        elif mode == "mean":
            outputs.append((tokens * weights).sum(1) / count.clamp_min(1e-9))
        elif mode == "mean_sqrt_len":
            outputs.append((tokens * weights).sum(1) / count.clamp_min(1e-9).sqrt())
        elif mode == "max":
            maxed = tokens.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
            # An absent sample (no real token) would be -inf, and -inf * 0 (the present mask) is NaN.
            outputs.append(torch.where(has_token, maxed, torch.zeros_like(maxed)))
        elif mode == "weightedmean":
            positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype)
            start = mask.to(torch.int).argmax(1, keepdim=True).to(tokens.dtype)  # left padding shifts the weights
            position_weights = (positions[None, :] - start).unsqueeze(-1) * weights
            outputs.append((tokens * position_weights).sum(1) / position_weights.sum(1).clamp_min(1e-9))
        elif mode == "lasttoken":
            length = tokens.shape[1]
            values, from_end = mask.to(torch.int).flip(1).max(1)
            last = torch.where(values == 0, torch.full_like(from_end, length - 1), length - 1 - from_end)
            picked = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
            outputs.append(picked * has_token.to(tokens.dtype))
        else:
            raise ValueError(f"unknown pooling mode {mode!r}; expected one of {list(POOLING_MODES)}")
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)


def parse_pooling_config(data: dict, source: str) -> tuple[str, ...]:
    """Modes of a ``1_Pooling/config.json``: the ``pooling_mode`` key (v5+), else the legacy boolean keys
    (none true means mean, as in sentence-transformers)."""
    mode = data.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
        modes = tuple(_ST_NAMES.get(m, m) for m in modes)
    else:
        modes = tuple(ours for key, ours in _LEGACY_KEYS.items() if data.get(key))
        modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ValueError(f"{source}: pooling modes {unknown} are not supported; polymodal knows {list(POOLING_MODES)}")
    return modes


def _locate(pretrained: str, filename: str, revision: str | None) -> Path | None:
    """Path of ``filename`` in a local checkpoint directory or in the hub cache (downloaded if reachable)."""
    local = Path(pretrained)
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(
            pretrained, filename, revision=revision, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except Exception:  # offline with no cached copy, an invalid repo name...: no layout to honour
        return None
    return Path(found) if found else None


def read_sentence_transformers(pretrained: str, revision: str | None = None) -> SentenceTransformersLayout | None:
    """The pooling a sentence-transformers checkpoint declares, or None when it has no ``modules.json`` with a
    Pooling module. Only JSON is read: the module ``type`` strings are matched by name, never imported."""
    modules_path = _locate(pretrained, MODULES_FILE, revision)
    if modules_path is None:
        return None
    try:
        modules = json.loads(modules_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{modules_path}: not a readable sentence-transformers modules.json ({err})") from err
    modes: tuple[str, ...] | None = None
    normalize = False
    ignored = []
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            folder = str(module.get("path", "")).strip("/")
            config_name = f"{folder}/config.json" if folder else "config.json"
            config_path = _locate(pretrained, config_name, revision)
            if config_path is None:
                raise ValueError(f"{modules_path} lists a Pooling module but {config_name} is missing")
            modes = parse_pooling_config(json.loads(config_path.read_text()), str(config_path))
        elif kind == "Normalize":
            normalize = True
        elif kind not in ("Transformer", "Pooling"):
            ignored.append(kind)
    if modes is None:
        return None
    if ignored:
        warnings.warn(
            f"{modules_path}: modules {ignored} are not applied by polymodal (it uses the transformer, its pooling"
            f"{' and normalisation' if normalize else ''}); embeddings differ from sentence-transformers' encode",
            stacklevel=3,
        )
    return SentenceTransformersLayout(modes=modes, normalize=normalize, ignored=tuple(ignored))


def write_sentence_transformers(directory: str | Path, modes: tuple[str, ...], normalize: bool, width: int) -> None:
    """Write ``modules.json`` + ``1_Pooling/config.json`` (+ ``2_Normalize/``) so that ``directory`` declares
    ``modes`` / ``normalize`` to polymodal and to sentence-transformers alike."""
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(parents=True, exist_ok=True)
    pooling: dict = {"word_embedding_dimension": width}
    pooling.update({key: ours in modes for key, ours in _LEGACY_KEYS.items()})
    if tuple(modes) != tuple(m for m in _LEGACY_KEYS.values() if m in modes):
        # The booleans fix the concatenation order; only a different order needs the v5+ key (older
        # sentence-transformers releases reject a list there, so it is written only when needed).
        pooling["pooling_mode"] = [_OUR_TO_ST.get(m, m) for m in modes]
    (directory / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (directory / MODULES_FILE).write_text(json.dumps(modules, indent=2))
