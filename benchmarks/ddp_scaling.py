"""Data-parallel scaling: training samples/s on 1 vs 2 processes (DDP, 1 thread each), as polymodal trains.

Two workloads, each a full optimizer step (zero grads, forward, loss, backward with DDP's gradient all-reduce,
AdamW):
- ``demo``: the spoken-digits fusion classifier of configs/spoken_digits_fusion.yaml (image CNN + audio
  transformer → transformer fusion → head) on real batches of the built-in data;
- ``clip``: the OpenAI ViT-B/32 CLIP (polymodal's CLIPModelNative, fp32, 77-token captions) with polymodal's
  clip_loss, which gathers every rank's embeddings (the global batch's negatives) with gradients.

Weak scaling, as torchrun users train: the batch is PER PROCESS (``--batch``), so 2 processes push twice the
samples per step. Reported: samples/s = world × batch × steps / wall time of the slowest rank (median of
``--reps`` timed blocks), and the scaling efficiency samples/s(2) / (2 × samples/s(1)). On a CPU machine with
fewer free cores than processes × threads the efficiency measures contention, not polymodal: read it with the
machine's load (the script prints the CPU count and load average). With CUDA and ≥ 2 GPUs it runs nccl, one
process per GPU.

    python benchmarks/ddp_scaling.py                      # both workloads, writes benchmarks/results/ddp_scaling.md
    python benchmarks/ddp_scaling.py --workloads demo     # one workload
    python benchmarks/ddp_scaling.py --quick              # tiny models, seconds: a smoke test (writes nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ workloads


def demo_workload(quick: bool, batch: int, device: torch.device):
    """(model, step inputs): the fusion demo model and one real batch of `batch` samples."""
    from polymodal.config import load_config
    from polymodal.models import MultimodalModel
    from polymodal.recipes.train import prepare
    from polymodal.tasks import get_task

    overrides = [f"data.batch_size={batch}", f"data.limit={max(4 * batch, 64)}", "data.num_workers=0"]
    if quick:
        overrides += ["model.modalities.audio.options.dim=16", "model.modalities.audio.options.depth=1",
                      "model.fusion.dim=16"]
    config = load_config(REPO / "configs" / "spoken_digits_fusion.yaml", overrides)
    _, loaders, _ = prepare(config, splits=("train",))
    torch.manual_seed(0)
    model = MultimodalModel(config.model).to(device)
    task = get_task("classification")
    data = next(iter(loaders["train"])).to(device)

    def loss(module):
        return task.training_output(model, module(data), data).loss  # the classification task's loss

    return model, loss


def clip_workload(quick: bool, batch: int, device: torch.device):
    """(model, step inputs): ViT-B/32 CLIP (tiny with --quick) and a synthetic batch of full 77-token captions."""
    from polymodal.encoders.clip_towers import CLIPModelNative, CLIPNativeConfig
    from polymodal.objectives import clip_loss

    config = CLIPNativeConfig.tiny() if quick else CLIPNativeConfig.vit_b_32()
    torch.manual_seed(0)
    model = CLIPModelNative(config).to(device)
    g = torch.Generator().manual_seed(dist.get_rank() if dist.is_initialized() else 0)
    pixels = torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=g)
    ids = torch.randint(1, config.vocab_size - 2, (batch, config.context_length), generator=g)
    ids[:, 0], ids[:, -1] = config.vocab_size - 2, config.eos_token_id
    mask = torch.ones_like(ids)
    pixels, ids, mask = pixels.to(device), ids.to(device), mask.to(device)

    def loss(module):
        image, text, scale = module(pixels, ids, mask)
        return clip_loss(image, text, scale)

    return model, loss


WORKLOADS = {"demo": demo_workload, "clip": clip_workload}


# ------------------------------------------------------------------------------------------ one world size


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world: int, port: int, args, workload: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(args.threads))
    torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        model, loss_fn = WORKLOADS[workload](args.quick, args.batch, device)
        ddp = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[rank] if use_cuda else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(ddp).backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.reps):
            if use_cuda:
                torch.cuda.synchronize()
            dist.barrier()
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            if use_cuda:
                torch.cuda.synchronize()
            elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step is as slow as its slowest rank
            times.append(float(elapsed))
        if rank == 0:
            Path(out).write_text(json.dumps({"times": times, "device": str(device),
                                             "backend": dist.get_backend()}))
    finally:
        dist.destroy_process_group()


def measure(args, workload: str, world: int) -> dict:
    out = RESULTS / f".ddp_scaling_{workload}_{world}.json"
    mp.start_processes(_worker, args=(world, _free_port(), args, workload, str(out)), nprocs=world,
                       start_method="spawn")
    record = json.loads(out.read_text())
    out.unlink()
    block = statistics.median(record["times"])
    samples = world * args.batch * args.steps
    return {"workload": workload, "processes": world, "batch_per_process": args.batch, "steps": args.steps,
            "block_seconds": record["times"], "samples_per_s": samples / block, "device": record["device"],
            "backend": record["backend"]}


# ------------------------------------------------------------------------------------------ report


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} (1 min) at the start, torch {torch.__version__}")


def markdown(rows: list[dict], args, facts: str) -> str:
    lines = ["# DDP scaling: samples/s on 1 vs 2 processes", "",
             f"Machine: {facts}. Threads per process: {args.threads}. Each row: the median of its timed blocks "
             f"(steps per block and blocks in the table) after {args.warmup} warm-up step(s).",
             "", "| workload | processes | backend | batch / process | steps × blocks | samples/s | scaling efficiency |",
             "|---|---|---|---|---|---|---|"]
    base = {row["workload"]: row["samples_per_s"] for row in rows if row["processes"] == 1}
    for row in rows:
        efficiency = row["samples_per_s"] / (row["processes"] * base[row["workload"]])
        lines.append(f"| {row['workload']} | {row['processes']} | {row['backend']} | {row['batch_per_process']} | "
                     f"{row['steps']} × {len(row['block_seconds'])} | {row['samples_per_s']:.1f} | {efficiency:.2f} |")
    lines += ["", "Scaling efficiency = samples/s(N) / (N × samples/s(1)); 1.00 is perfect weak scaling. On a CPU "
              "machine whose free cores are fewer than processes × threads the processes time-share cores and the "
              "efficiency measures that contention.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="demo,clip", help="comma-separated: demo, clip")
    parser.add_argument("--processes", default="1,2", help="world sizes to measure (default 1,2)")
    parser.add_argument("--batch", type=int, default=None, help="per process (default 32 demo / 16 clip; 4 --quick)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed block (default 5; 2 --quick)")
    parser.add_argument("--reps", type=int, default=None, help="timed blocks (default 3; 1 --quick)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke test, writes nothing")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default results/ddp_scaling.md)")
    args = parser.parse_args(argv)
    facts = machine()
    rows = []
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}; choose from {sorted(WORKLOADS)}")
        run_args = argparse.Namespace(**vars(args))
        run_args.batch = args.batch or (4 if args.quick else (32 if workload == "demo" else 16))
        run_args.steps = args.steps or (2 if args.quick else 5)
        run_args.reps = args.reps or (1 if args.quick else 3)
        for world in [int(w) for w in args.processes.split(",")]:
            row = measure(run_args, workload, world)
            rows.append(row)
            print(f"{workload}: {world} process(es) [{row['backend']}]: {row['samples_per_s']:.1f} samples/s",
                  flush=True)
    text = markdown(rows, args, facts)
    print(text)
    if not args.quick or args.out:
        out = args.out or RESULTS / "ddp_scaling.md"
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
