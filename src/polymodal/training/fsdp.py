"""Fully sharded data parallel (``train.strategy: fsdp``): PyTorch's FSDP2 ``fully_shard`` and sharded checkpoints.

What is sharded: every parameter, its gradient and its AdamW state are split along dim 0 over the W ranks
(FSDP2 per-parameter sharding, DTensor ``Shard(0)``); each rank keeps 1/W of them at rest and all-gathers one
unit's parameters just before that unit runs (forward and backward), then frees them again. Units: each encoder
of the model (``model.encoders[name]``), a decoder / language model when there is one, then the root (projections,
fusion, head and whatever is left). Buffers (normalisation statistics) are not sharded: each rank keeps its own,
and rank 0's are the ones checkpointed. 0-d parameters (a CLIP logit scale) cannot be sharded: they stay whole
on every rank and their gradients are averaged by a hook. Gradients are averaged over ranks (reduce-scatter), as under DDP, so one
FSDP step equals one DDP step and one process on the concatenated batch (Zhao et al. 2023, "PyTorch FSDP";
https://pytorch.org/docs/stable/distributed.fsdp.fully_shard.html).

Forwards are collective: every rank must run the same units in the same order. polymodal's loaders put every
modality in every batch (absent samples are masked, not dropped), so this holds; a custom loader that leaves a
modality key out of some batches must train with ``strategy: ddp``. Validation therefore runs on every rank (each
over the whole split, with the contrastive gather off), not on rank 0 alone.

Checkpoints (``checkpoints/last/``) in the sharded format::

    sharded/             torch.distributed.checkpoint (DCP): .metadata + one __<rank>_0.distcp file per rank,
                         holding {"model": ..., "optimizer": ...} keyed by parameter name (global shapes recorded)
    extra.pt             LR scheduler / grad scaler state and rank 0's torch RNG state (torch.load weights_only)
    trainer_state.json   counters, best metric, python / numpy RNG, world_size; written last

DCP reshards on load, so a checkpoint saved on W processes loads on any other number, one plain process included
(:func:`~.checkpoint.load_checkpoint` reads either format). ``best/`` stays an ordinary model directory
(config.json + model.safetensors): the full state dict is gathered to rank 0, which writes it. Several machines
need the run directory on a shared file system: every rank writes its own shard file.

One process with ``strategy: fsdp``: there is nothing to shard; it trains as usual (plain module, the ordinary
checkpoint format) and warns once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PolymodalError
from . import distributed as dist_utils

SHARDED_DIR = "sharded"
EXTRA_FILE = "extra.pt"
STRATEGIES = ("ddp", "fsdp")
_UNIT_ATTRIBUTES = ("decoder", "language_model")  # besides each encoder: large submodules that get their own unit


class FSDPSetupError(PolymodalError):
    """FSDP cannot run here (torch without ``fully_shard``, or a model with nothing to train)."""


def fully_shard_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def wants_fsdp(train_config: Any, distributed: bool) -> bool:
    """True when the run should shard: ``train.strategy: fsdp`` on more than one process. With one process it
    warns (once per call site) and returns False: there is nothing to shard, training runs as usual."""
    strategy = getattr(train_config, "strategy", "ddp")
    if strategy != "fsdp":
        return False
    if not distributed:
        warnings.warn("train.strategy: fsdp on a single process: nothing to shard, training the plain model "
                      "(launch with torchrun --nproc_per_node=N or `polymodal train CONFIG --nproc N` to shard)",
                      stacklevel=3)
        return False
    if not fully_shard_available():
        raise FSDPSetupError(f"train.strategy: fsdp needs torch.distributed.fsdp.fully_shard (FSDP2, torch >= 2.6); "
                             f"torch {torch.__version__} lacks it: upgrade torch or use train.strategy: ddp")
    return True


def is_sharded(model: nn.Module) -> bool:
    """True for a model wrapped by :func:`shard_model` (an FSDP2 module)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that become their own FSDP unit (each all-gathered only while it runs): every encoder with
    parameters, then a decoder / language model. The root is wrapped last and takes the rest."""
    units: list[nn.Module] = []
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, nn.ModuleDict):
        units.extend(encoder for encoder in encoders.values() if any(True for _ in encoder.parameters()))
    for name in _UNIT_ATTRIBUTES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
            units.append(module)
    return units


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard ``model`` in place over the process group (each unit of :func:`shard_units`, then the root); returns
    it, now an FSDP2 module whose parameters are DTensors. Build the optimizer after this call.

    Rank 0's initial weights and buffers are broadcast first (what DDP does), so ranks that built the model from
    different seeds still train one model. Raises FSDPSetupError when no parameter is trainable.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not any(p.requires_grad for p in model.parameters()):
        raise FSDPSetupError("multi-process training: the model has no trainable parameter")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (dist_utils.world_size(),))
    # FSDP2 cannot shard 0-d parameters (a CLIP logit scale): they stay whole on every rank, and a hook averages
    # their gradient over the ranks after each synchronised backward, as the reduce-scatter does for the rest.
    scalars = {p for p in model.parameters() if p.ndim == 0}
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, ignored_params=scalars)
        unit.register_forward_hook(_own_output_storage, prepend=True)  # before FSDP's own post-forward hook
    fully_shard(model, mesh=mesh, ignored_params=scalars)
    for param in scalars:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(_average_gradient_hook(model))
    return model


def _own_output_storage(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Encoders return views (pooled = tokens[:, 0], ...). FSDP attaches its pre-backward hook (which all-gathers
    the unit again for backward) to the unit's outputs, and an in-place op on a view would silently drop it; a
    copy of each view makes the outputs safe to modify (and keeps FSDP from warning on every forward)."""
    from torch.distributed.utils import _apply_to_tensors

    return _apply_to_tensors(lambda t: t.clone() if t._is_view() and t.requires_grad else t, output)


_SYNC_ATTRIBUTE = "_polymodal_gradient_sync"  # False inside ShardedForward.no_sync()


def _average_gradient_hook(model: nn.Module):
    def average(param: torch.Tensor) -> None:
        if getattr(model, _SYNC_ATTRIBUTE, True) and param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)  # gloo has no AVG
            param.grad.div_(dist_utils.world_size())

    return average


class ShardedForward:
    """The training forward of a sharded model, with DDP's ``no_sync()`` vocabulary: inside ``no_sync()`` the
    backward accumulates local unsharded gradients and skips the reduce-scatter (gradient accumulation); the
    step's last micro-batch, outside it, reduces them all."""

    def __init__(self, model: nn.Module):
        self.module = model

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.module.set_requires_gradient_sync(False)
        setattr(self.module, _SYNC_ATTRIBUTE, False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)
            setattr(self.module, _SYNC_ATTRIBUTE, True)


# ---------------------------------------------------------------------------------------------- best model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a sharded model as ordinary CPU tensors on rank 0 (an empty dict on the others). A
    collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # The gathered tensors can be views of one all-gather buffer; safetensors refuses views that do not cover
    # their storage, so each gets its own.
    return {key: value.clone() for key, value in state.items()}


@contextlib.contextmanager
def _state_dict_replaced(model: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    # save_pretrained (and safetensors' save_model) read model.state_dict(); a sharded model would hand them
    # DTensor shards. The instance attribute shadows the method for the duration of the save only.
    model.state_dict = lambda *args, **kwargs: dict(state)
    try:
        yield
    finally:
        del model.state_dict


def save_best_model(model: nn.Module, directory: str | Path) -> None:
    """Write ``best/`` as an ordinary model directory (config.json + model.safetensors) from rank 0, whatever the
    strategy. For a sharded model the full weights are gathered first (a collective: call it on every rank)."""
    from .checkpoint import save_model_weights

    if not is_sharded(model):
        if dist_utils.is_main():
            save_model_weights(model, directory)
        return
    state = full_state_dict(model)
    if dist_utils.is_main():
        with _state_dict_replaced(model, state):
            save_model_weights(model, directory)


# ---------------------------------------------------------------------------------------------- checkpoints


def is_sharded_checkpoint(path: str | Path) -> bool:
    return (Path(path) / SHARDED_DIR / ".metadata").is_file()


def save_sharded_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
    trainer_state: dict[str, Any],
) -> Path:
    """Write a sharded checkpoint at ``path`` (layout: module docstring); a collective, call it on every rank.

    Atomic as the ordinary format: rank 0 creates the temp directory next to ``path`` and tells the others,
    every rank writes its shard into it (DCP's last step, on rank 0, writes ``.metadata`` once all shards are
    written), rank 0 adds ``extra.pt`` and ``trainer_state.json`` and swaps the directory in. Raises
    DiskFullError (rank 0) when space runs out; the previous checkpoint is then kept.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from .checkpoint import write_checkpoint_directory

    path = Path(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)

    def write_shards(tmp: Path) -> None:
        with _unwrapped_dcp_failure(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one plain process
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp / SHARDED_DIR))

    def write_main(tmp: Path) -> None:
        torch.save(_extra_state(scheduler, scaler), tmp / EXTRA_FILE)

    state = {**trainer_state, "world_size": dist_utils.world_size(), "strategy": "fsdp"}
    if dist_utils.is_main():
        with contextlib.ExitStack() as stack:
            try:
                tmp = stack.enter_context(write_checkpoint_directory(path, state))
            except BaseException:
                dist_utils.broadcast_object(None)  # the other ranks stop waiting; this rank raises the reason
                raise
            dist_utils.broadcast_object(str(tmp))
            write_shards(tmp)
            write_main(tmp)
    else:
        tmp = dist_utils.broadcast_object(None)
        if tmp is None:  # rank 0 could not even create the temp directory; it raises the reason
            raise PolymodalError(f"rank 0 could not start writing the checkpoint {path} (see rank 0's error)")
        write_shards(Path(tmp))
    return path


def _extra_state(scheduler: Any, scaler: Any) -> dict[str, Any]:
    from .checkpoint import torch_rng_state

    return {
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": torch_rng_state(),
    }


def load_sharded_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any, scaler: Any,
) -> dict[str, Any]:
    """Load a sharded checkpoint into ``model`` (sharded on any number of ranks, or a plain module in one
    process: DCP reshards) and ``optimizer``; return ``extra.pt``'s content. Raises ValueError when the
    checkpoint does not fit the model (missing or mis-shaped weights)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_state_dict

    if optimizer is not None:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        payload = {"model": model_state, "optimizer": optimizer_state}
    else:
        payload = {"model": get_model_state_dict(model)}
    try:
        with _unwrapped_dcp_failure(), warnings.catch_warnings():
            # Without a process group DCP reads every shard in this process, which is the intent here; its
            # "assuming the intent is to load in a single process" warning would only alarm the user.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(payload, checkpoint_id=str(path / SHARDED_DIR))
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{path / SHARDED_DIR} does not fit this model or optimizer: {_first_line(err)}; was it "
                         "saved from the same config (and the same frozen parameters)?") from err
    set_state_dict(model, optimizer if optimizer is not None else (),
                   model_state_dict=payload["model"], optim_state_dict=payload.get("optimizer", {}))
    extra = torch.load(path / EXTRA_FILE, map_location="cpu", weights_only=True)
    _restore_schedules(extra, scheduler, scaler)
    return extra


def load_full_checkpoint_into_sharded(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, extra: dict[str, Any],
) -> None:
    """An ordinary checkpoint (one process or DDP: model.safetensors + optimizer.pt) into a sharded model: every
    rank reads the full tensors and keeps its shard. The optimizer state's integer ids are mapped to parameter
    names by position (both optimizers list the same parameters in the same group order)."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from .checkpoint import MODEL_FILE

    options = StateDictOptions(full_state_dict=True)
    try:
        set_model_state_dict(model, load_file(str(path / MODEL_FILE)), options=options)
        if optimizer is not None:
            named = _named_optimizer_state(extra["optimizer"], model, optimizer)
            set_optimizer_state_dict(model, optimizer, named, options=options)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"{path} does not fit this model or optimizer: {_first_line(err)}") from err


def _named_optimizer_state(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    names = {id(p): name for name, p in model.named_parameters()}
    saved_groups, groups = saved["param_groups"], optimizer.param_groups
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in groups]:
        raise ValueError("the checkpoint's optimizer has other parameter groups than this model's")
    state, named_groups = {}, []
    for saved_group, group in zip(saved_groups, groups):
        fqns = [names[id(p)] for p in group["params"]]
        for index, fqn in zip(saved_group["params"], fqns):
            if index in saved["state"]:
                state[fqn] = saved["state"][index]
        named_groups.append({**saved_group, "params": fqns})
    return {"state": state, "param_groups": named_groups}


def _restore_schedules(extra: dict[str, Any], scheduler: Any, scaler: Any) -> None:
    if scheduler is not None and extra.get("scheduler") is not None:
        scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra.get("scaler") is not None:
        scaler.load_state_dict(extra["scaler"])


def warn_if_resharded(state: dict[str, Any], path: Path) -> None:
    """A checkpoint taken mid-epoch on another number of processes: the weights and optimizer load exactly, but
    the rest of that epoch is re-split over the new ranks, so it is not the uninterrupted run's data order."""
    saved = state.get("world_size")
    if saved is not None and saved != dist_utils.world_size() and state.get("batches_done"):
        warnings.warn(f"{path} was saved mid-epoch on {saved} process(es), resumed on {dist_utils.world_size()}: "
                      "the rest of that epoch is re-sharded (exact resume needs the same number of processes)",
                      stacklevel=3)


@contextlib.contextmanager
def _unwrapped_dcp_failure() -> Iterator[None]:
    """DCP reports a rank's failure as a CheckpointException, a BaseException holding every rank's error; re-raise
    the first of them (an OSError for a full disk, a RuntimeError for a shape mismatch) so the usual handlers
    (DiskFullError translation, ``except Exception``) see it."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as err:
        causes = [failure[0] for failure in err.failures.values() if isinstance(failure[0], Exception)]
        if not causes:
            raise
        raise causes[0] from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
