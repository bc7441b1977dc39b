"""`polymodal demo --task finetune`: the fine-tuning trade-off on spoken digits, in one table.

1. Pretrain an audio encoder (``audio_transformer``) with the classification recipe (a short full run), or start
   from a given Hugging Face checkpoint (``hf_checkpoint``: the audio modality then uses encoder ``hf``).
2. From those encoder weights (``finetune.init_from``; projection and head start fresh each time), train the
   same recipe under each strategy: full, frozen (+ feature cache), linear probe, LoRA, prompt tuning.
3. Report per strategy: test accuracy / macro-F1 (held-out speaker), trainable parameters and their share,
   wall time (cache building included) and fit time, and peak memory.

Peak memory is the peak of the C heap in use (glibc ``mallinfo2``: ``uordblks + hblkhd``, where torch's CPU
tensors live) above its level when the strategy's run starts, sampled every 10 ms from a thread — the memory
the run itself needs (activations, gradients, optimizer state, cached features). Where ``mallinfo2`` is
unavailable it falls back to the resident set size (RSS) and says so.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from pathlib import Path
from typing import Any

from ...config import Config, from_dict
from ...files import atomic_write_text
from ...presets import load_preset

AUDIO = load_preset("encoders", "finetune-demo-audio")  # polymodal/presets/encoders/finetune-demo-audio.yaml
LORA_TARGETS = ["qkv", "proj", "mlp.0", "mlp.3"]
STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("full", {"default": "full"}),
    ("frozen + cache", {"default": "frozen"}),
    ("linear probe", {"default": "linear_probe"}),
    ("lora r=8", {"default": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": LORA_TARGETS}}),
    ("prompt 8 tokens", {"default": "prompt", "prompt": {"num_tokens": 8}}),
]


def demo_config(out_dir: str, epochs: int, seed: int, limit: int | None, lr: float,
                finetune: dict[str, Any] | None = None, hf_checkpoint: str | None = None) -> Config:
    audio = dict(AUDIO)
    if hf_checkpoint:
        audio = {"kind": "audio", "encoder": "hf", "pretrained": hf_checkpoint}
    data: dict[str, Any] = {
        "model": {"modalities": {"audio": audio}, "fusion": {"name": "concat", "dim": 64}, "head": {"dropout": 0.1}},
        "data": {"name": "spoken-digits", "batch_size": 32, "limit": limit},
        "train": {"epochs": epochs, "lr": lr, "weight_decay": 0.01, "warmup_ratio": 0.05, "seed": seed,
                  "progress": False, "log_every": 0, "out_dir": out_dir},
    }
    if finetune is not None:
        data["finetune"] = finetune
    return from_dict(Config, data)


# ---------------------------------------------------------------------------------------------- memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_reader():
    """(reader returning bytes in use, what it measures)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2

        def heap() -> int:
            info = libc.mallinfo2()
            return int(info.uordblks + info.hblkhd)

        heap()
        return heap, "C heap in use (glibc mallinfo2)"
    except (OSError, AttributeError):
        import os

        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * page

        return rss, "resident set size (RSS)"


class PeakMemory:
    """Peak of a memory reading above its starting level, sampled from a background thread."""

    def __init__(self, interval: float = 0.01):
        self.read, self.kind = _heap_reader()
        self.interval = interval
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        self.start = self.read()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.read())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.start) / 2**20


# ---------------------------------------------------------------------------------------------- demo


def _any_architecture(spec: dict[str, Any]) -> dict[str, Any]:
    if "lora" not in spec:
        return spec
    return {**spec, "lora": {**spec["lora"], "target_modules": []}}


def run_finetune_demo(out: str | Path, quick: bool = False, epochs: int | None = None, seed: int = 0,
                      hf_checkpoint: str | None = None, limit: int | None = None,
                      strategies: list[str] | None = None) -> dict[str, Any]:
    """Pretrain, then compare fine-tuning strategies; write ``out/results.json`` + ``out/results.md``.

    ``limit`` caps each split's samples (default: 200 in quick mode, all otherwise); ``strategies`` picks rows
    of STRATEGIES by name (default: all).
    """
    from ..train import prepare, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (2 if quick else 6)
    pretrain_epochs = epochs if quick else 4
    limit = limit if limit is not None else (200 if quick else None)
    lr = 2e-3
    plan = [(name, spec) for name, spec in STRATEGIES if strategies is None or name in strategies]
    if hf_checkpoint:  # layer names differ per architecture: LoRA on every Linear/Conv layer of the checkpoint
        plan = [(name, _any_architecture(spec)) for name, spec in plan]
    started = time.perf_counter()
    print(f"polymodal demo (finetune): spoken digits audio, {len(plan)} strategies, {epochs} epochs each")
    base_config = demo_config(str(out / "pretrain"), pretrain_epochs, seed, limit, lr, hf_checkpoint=hf_checkpoint)
    prepared = prepare(base_config)

    init_from = None
    pretrain: dict[str, Any] = {}
    if hf_checkpoint is None:
        summary = train(base_config, prepared=prepared, verbose=False)
        init_from = summary["model_dir"]
        pretrain = {"epochs": pretrain_epochs, "test_accuracy": summary["test"]["accuracy"],
                    "train_seconds": summary["train_seconds"], "model_dir": init_from}
        print(f"  pretrained audio encoder ({pretrain_epochs} epochs, full): test acc "
              f"{pretrain['test_accuracy']:.3f} in {pretrain['train_seconds']:.1f}s → {init_from}")
    else:
        pretrain = {"hf_checkpoint": hf_checkpoint}

    rows, details, memory_kind = [], {}, None
    for title, spec in plan:
        finetune = dict(spec, init_from=init_from, cache_dir=str(out / "feature_cache"))
        run_dir = out / "runs" / title.split()[0].replace("+", "")
        config = demo_config(str(run_dir), epochs, seed, limit, lr, finetune, hf_checkpoint)
        wall_started = time.perf_counter()
        try:
            with PeakMemory() as memory:
                summary = train(config, prepared=prepared, verbose=False)
        except ValueError as err:  # a strategy the encoder cannot take (e.g. prompt tuning without a transformer)
            if not str(err).startswith("finetune"):
                raise
            rows.append({"strategy": title, "skipped": str(err)})
            print(f"  {title:16s} skipped: {err}")
            continue
        wall = time.perf_counter() - wall_started
        memory_kind = memory.kind
        counts, cache = summary["finetune"], summary.get("feature_cache")
        statuses = sorted({r["status"] for split in (cache or {}).get("splits", {}).values() for r in split.values()})
        row = {
            "strategy": title,
            "test_accuracy": summary["test"]["accuracy"],
            "test_macro_f1": summary["test"]["macro_f1"],
            "trainable_params": counts["trainable"],
            "total_params": counts["total"],
            "trainable_share": counts["trainable_share"],
            "fit_seconds": summary["train_seconds"],
            "wall_seconds": wall,
            "peak_memory_mib": memory.peak_mib,
            "feature_cache": "/".join(statuses) if cache else "-",
        }
        rows.append(row)
        details[title] = {"run_dir": str(run_dir), "finetune": counts, "feature_cache": cache,
                          "fit": summary["fit"]}
        print(f"  {title:16s} acc {row['test_accuracy']:.3f}  trainable {row['trainable_params']:>8,} "
              f"({row['trainable_share']:.1%})  fit {row['fit_seconds']:.1f}s  peak {row['peak_memory_mib']:.0f} MiB")

    total = time.perf_counter() - started
    table = format_table(rows)
    note = (f"Peak memory: {memory_kind}, peak above the level at the start of each run, sampled every 10 ms. "
            "Wall time includes building the feature cache and the test evaluation; fit time is the training "
            "loop alone.")
    source = (f"audio_transformer pretrained by a {pretrain_epochs}-epoch full classification run on the same "
              "train split (test acc {:.3f})".format(pretrain["test_accuracy"]) if hf_checkpoint is None
              else f"Hugging Face checkpoint {hf_checkpoint}")
    print()
    print(table)
    print()
    print(note)
    print(f"wall time {total:.0f}s; results in {out}/results.json and results.md")
    result = {"task": "finetune", "quick": quick, "epochs": epochs, "seed": seed, "limit": limit, "lr": lr,
              "encoder_source": source, "pretrain": pretrain, "memory_measure": memory_kind, "rows": rows,
              "runs": details, "wall_seconds": total}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(
        out / "results.md",
        f"# polymodal demo: fine-tuning strategies on spoken digits (audio)\n\nEncoder: {source}. Each strategy: "
        f"{epochs} epochs, lr {lr}, seed {seed}, fresh projection + head; test split = held-out speaker"
        f"{f', {limit} samples per split' if limit else ''}.\n\n{table}\n\n{note}\n\nTotal wall time: {total:.0f} s.\n",
    )
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("| strategy | test accuracy | macro-F1 | trainable params | share | fit time (s) | wall time (s) "
              "| peak memory (MiB) | feature cache |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['strategy']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['strategy']} | {r['test_accuracy']:.3f} | {r['test_macro_f1']:.3f} | {r['trainable_params']:,} "
            f"| {r['trainable_share']:.1%} | {r['fit_seconds']:.1f} | {r['wall_seconds']:.1f} "
            f"| {r['peak_memory_mib']:.1f} | {r['feature_cache']} |"
        )
    return "\n".join(lines)


__all__ = ["PeakMemory", "STRATEGIES", "format_table", "run_finetune_demo"]
