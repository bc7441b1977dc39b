"""Efficiency: parameters, FLOPs, latency, throughput, peak memory and size on disk of any Batch model.

Inputs of the wanted sizes are built from one example Batch by repeating / slicing its samples, so the
numbers describe the real input shapes (image size, sequence length, audio frames) of your data.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..types import Batch


def resize_batch(batch: Batch, size: int) -> Batch:
    """A Batch of ``size`` samples taken cyclically from ``batch`` (slices when smaller, repeats when larger)."""
    n = len(batch)
    if n == 0 or size < 1:
        raise ValueError(f"cannot build a batch of {size} samples from a batch of {n}")
    index = torch.arange(size) % n
    take = lambda t: t.index_select(0, index.to(t.device))  # noqa: E731
    return Batch(
        inputs={m: {k: take(v) for k, v in d.items()} for m, d in batch.inputs.items()},
        present={m: take(v) for m, v in batch.present.items()},
        labels=None if batch.labels is None else take(batch.labels),
        ids=[batch.ids[i] for i in index.tolist()] if batch.ids else [],
    )


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


@torch.no_grad()
def count_flops(model: nn.Module, batch: Batch) -> int:
    """FLOPs of one forward pass on ``batch`` (torch.utils.flop_counter: matmuls, convs, attention; a
    multiply-add counts 2). Elementwise ops (activations, norms) are not counted, as in fvcore / PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(batch)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _timings_ms(model: nn.Module, batch: Batch, warmup: int, repeats: int, device: torch.device) -> np.ndarray:
    for _ in range(warmup):
        model(batch)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return np.asarray(times)


def _max_rss_mb() -> float | None:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if platform.system() == "Darwin" else peak / 1024.0


def model_size_on_disk(model: nn.Module) -> dict[str, Any]:
    """Bytes written by ``model.save_pretrained`` (all files) or, without it, by safetensors of the state dict."""
    with tempfile.TemporaryDirectory() as tmp:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp)
            how = "save_pretrained"
        else:
            from safetensors.torch import save_file

            state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
            save_file(state, os.path.join(tmp, "model.safetensors"))
            how = "state_dict"
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return {"bytes": int(size), "mb": size / 1e6, "method": how}


def measure_efficiency(
    model: nn.Module,
    example_batch: Batch,
    batch_sizes: tuple[int, ...] = (1, 32),
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device = "cpu",
    disk_size: bool = True,
) -> dict[str, Any]:
    """Measure a model's cost on inputs shaped like ``example_batch``.

    Returns a JSON-ready dict: params (total / trainable), flops_per_sample (FlopCounterMode on the
    batch-1 input), latency_ms (p50 / p95 / mean over ``repeats`` batch-1 forwards, after ``warmup``),
    throughput (samples/s at the largest batch size, and per batch size), peak memory (CUDA:
    max_memory_allocated during the measurement; CPU: the process's peak RSS and how much it grew during
    the measurement — 0 when an earlier peak was higher, so read it as a lower bound), torch threads,
    device, and model size on disk. All forwards run in eval mode under no_grad.
    """
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    sizes = sorted({int(s) for s in batch_sizes})
    batches = {s: resize_batch(example_batch, s).to(device) for s in sizes}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _max_rss_mb()
    flops_one = count_flops(model, batches[sizes[0]]) / sizes[0]
    latency = _timings_ms(model, batches[sizes[0]], warmup, repeats, device)
    throughput = {}
    for size in sizes:
        times = latency if size == sizes[0] else _timings_ms(model, batches[size], warmup, repeats, device)
        throughput[str(size)] = size / (times.mean() / 1000.0)
    rss_after = _max_rss_mb()
    memory: dict[str, Any]
    if device.type == "cuda":
        memory = {"peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 1e6, "source": "cuda"}
    else:
        memory = {
            "peak_rss_mb": rss_after,
            "peak_rss_increase_mb": None if rss_after is None else max(0.0, rss_after - rss_before),
            "source": "ru_maxrss",
        }
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    result = {
        "params": count_parameters(model),
        "param_memory_mb": param_bytes / 1e6,
        "flops_per_sample": int(flops_one),
        "latency_ms": {
            "batch_size": sizes[0],
            "p50": float(np.percentile(latency, 50)),
            "p95": float(np.percentile(latency, 95)),
            "mean": float(latency.mean()),
            "repeats": int(repeats),
        },
        "throughput_samples_per_s": float(throughput[str(sizes[-1])]),
        "throughput_batch_size": sizes[-1],
        "throughput_by_batch_size": throughput,
        "memory": memory,
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_version": torch.__version__,
        "disk": model_size_on_disk(model) if disk_size else None,
    }
    model.train(was_training)
    return result


__all__ = ["measure_efficiency", "resize_batch", "count_parameters", "count_flops", "model_size_on_disk"]
