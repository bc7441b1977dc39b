"""Load test of `polymodal serve`: throughput and latency at 1, 8 and 32 concurrent clients, dynamic batching
(--max-batch 16) against no batching (--max-batch 1), in one run.

    python benchmarks/serve_load.py                                   # 2,000 requests per cell → results/serve_load.md
    python benchmarks/serve_load.py --requests 100 --out /tmp/serve_load.md          # a quick check (about a minute)
    python benchmarks/serve_load.py --model runs/spoken_digits_fusion/best          # a trained model instead

Loopback only (127.0.0.1), bounded: each cell stops after ``--requests`` requests or ``--cell-seconds`` seconds,
whichever comes first, and the whole run after ``--total-seconds``; every server it starts is stopped.

Setup: the server runs in its own process (``python -m polymodal serve``); the clients are asyncio tasks sharing
one httpx.AsyncClient in this process, each sending its next request when the previous one is answered (a
closed loop, so concurrency = clients in flight). Each request is a multipart upload of a real built-in sample
(an 8×8 digit PNG + its spoken-digit WAV at 8 kHz), cycling over ``--samples`` test rows. Default model: the
architecture of configs/spoken_digits_fusion.yaml (image CNN + audio transformer + transformer fusion), at its
random initialisation (a forward pass costs the same trained or not; pass ``--model`` for a trained one).

Reported per cell: requests, errors (anything but 200, or a transport error: must be 0), throughput (requests /
wall seconds), latency p50 / p95 / p99 (client side, send to full response), mean batch size (from the server's
/metrics), and the server's resident memory (VmRSS) before the first cell and after the last. The batched /
unbatched throughput ratio is given per concurrency level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "serve_load.md"
HOST = "127.0.0.1"  # loopback only: this benchmark never sends traffic anywhere else


# --------------------------------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Cell:
    mode: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    batches: float = 0.0  # forward passes during the cell (from /metrics)
    batched_requests: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else math.nan

    @property
    def mean_batch(self) -> float:
        return self.batched_requests / self.batches if self.batches else math.nan

    def row(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {"mode": self.mode, "concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
                "throughput": self.throughput, "p50": percentile(ms, 50), "p95": percentile(ms, 95),
                "p99": percentile(ms, 99), "mean_batch": self.mean_batch, "stopped_early": self.stopped_early}


# ------------------------------------------------------------------------------------------------ model + inputs


def default_model(directory: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Export built-in test rows (PNG + WAV) and save the spoken_digits_fusion architecture, untrained."""
    import torch
    import yaml

    from polymodal.config import ModelConfig, from_dict
    from polymodal.data import export_dataset
    from polymodal.models import MultimodalModel

    manifests = export_dataset("spoken-digits", directory / "data", splits=("test",), limit=64)
    rows = [json.loads(line) for line in manifests["test"].read_text().splitlines()]
    model_section = yaml.safe_load((ROOT / "configs" / "spoken_digits_fusion.yaml").read_text())["model"]
    model_section["head"]["labels"] = sorted({row["label"] for row in rows})
    torch.manual_seed(0)
    model_dir = directory / "model"
    MultimodalModel(from_dict(ModelConfig, model_section)).save_pretrained(model_dir)
    return model_dir, rows


def load_payloads(rows: list[dict[str, Any]], data_dir: Path, count: int) -> list[dict[str, tuple[str, bytes]]]:
    payloads = []
    for row in rows[:count]:
        payloads.append({"image": (Path(row["image"]).name, (data_dir / row["image"]).read_bytes()),
                         "audio": (Path(row["audio"]).name, (data_dir / row["audio"]).read_bytes())})
    return payloads


# ------------------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc; psutil elsewhere)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class Server:
    """``python -m polymodal serve`` on loopback, stopped (SIGINT, then SIGKILL) when the block ends."""

    def __init__(self, model: Path, max_batch: int, max_wait_ms: float, log: Path):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.command = [sys.executable, "-m", "polymodal", "serve", str(model), "--host", HOST, "--port",
                        str(self.port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                        "--max-queue", "4096", "--timeout-s", "120"]
        self.log = log

    def __enter__(self) -> Server:
        import httpx

        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("POLYMODAL_API_KEY", None)
        self.handle = open(self.log, "w")
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=self.handle, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health within 120 s")
            time.sleep(0.2)

    def __exit__(self, *exc: Any) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.handle.close()

    def batch_counts(self) -> tuple[float, float]:
        """(forward passes, requests in them) so far, from /metrics."""
        import httpx

        count = total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith('polymodal_batch_size_count{op="predict"}'):
                count = float(line.split()[-1])
            elif line.startswith('polymodal_batch_size_sum{op="predict"}'):
                total = float(line.split()[-1])
        return count, total


# ------------------------------------------------------------------------------------------------------ clients


async def run_cell(url: str, payloads: list, cell: Cell, requests: int, seconds: float) -> None:
    """``cell.concurrency`` closed-loop clients until ``requests`` are answered or ``seconds`` pass."""
    import httpx

    issued = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests:
            if time.monotonic() > deadline:
                cell.stopped_early = True
                return
            index = issued
            issued += 1
            files = payloads[index % len(payloads)]
            start = time.perf_counter()
            try:
                response = await http.post(url + "/v1/predict", files=files)
                ok = response.status_code == 200 and "label" in response.json()
            except (httpx.HTTPError, ValueError):
                ok = False
            if ok:
                cell.latencies.append(time.perf_counter() - start)
            else:
                cell.errors += 1

    limits = httpx.Limits(max_connections=cell.concurrency, max_keepalive_connections=cell.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(cell.concurrency)))
        cell.seconds = time.perf_counter() - start


def measure(model: Path, mode: str, max_batch: int, args: argparse.Namespace, payloads: list, workdir: Path,
            deadline: float) -> tuple[list[Cell], float, float]:
    cells = []
    with Server(model, max_batch, args.max_wait_ms, workdir / f"server_{mode}.log") as server:
        asyncio.run(run_cell(server.url, payloads, Cell(mode, 1), args.warmup, 60))  # first-call costs out
        rss_before = rss_mib(server.proc.pid)
        for concurrency in args.concurrency:
            budget = min(args.cell_seconds, deadline - time.monotonic())
            cell = Cell(mode, concurrency)
            if budget <= 0:
                cell.stopped_early = True
                cells.append(cell)
                continue
            before = server.batch_counts()
            asyncio.run(run_cell(server.url, payloads, cell, args.requests, budget))
            after = server.batch_counts()
            cell.batches, cell.batched_requests = after[0] - before[0], after[1] - before[1]
            cells.append(cell)
            print(f"{mode:>9s}  c={concurrency:<3d} {cell.requests:5d} requests  {cell.errors} errors  "
                  f"{cell.throughput:7.1f} req/s  p50 {percentile([x * 1000 for x in cell.latencies], 50):7.1f} ms  "
                  f"mean batch {cell.mean_batch:.2f}", flush=True)
        rss_after = rss_mib(server.proc.pid)
    return cells, rss_before, rss_after


# ------------------------------------------------------------------------------------------------------- report


def format_report(cells: list[Cell], rss: dict[str, tuple[float, float]], args: argparse.Namespace,
                  command: str, model_note: str) -> str:
    import torch

    lines = [
        "# `polymodal serve` load test",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}; server and clients on the same machine over loopback. Model: {model_note}. "
        f"Each request: one multipart upload (8×8 PNG + spoken-digit WAV). Closed-loop clients; "
        f"{args.requests} requests per cell (or {args.cell_seconds:g} s), after {args.warmup} warm-up requests. "
        f"Batched: `--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}`; unbatched: `--max-batch 1`.",
        "",
        "| mode | clients | requests | errors | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells:
        r = cell.row()
        note = " (stopped at the time limit)" if r["stopped_early"] else ""
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']}{note} | {r['errors']} | "
                     f"{r['throughput']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
                     f"{r['mean_batch']:.2f} |")
    lines += ["", "Batched / unbatched throughput:", ""]
    by_key = {(c.mode, c.concurrency): c for c in cells}
    for concurrency in args.concurrency:
        batched, single = by_key.get(("batched", concurrency)), by_key.get(("unbatched", concurrency))
        if batched and single and single.throughput > 0:
            lines.append(f"- {concurrency} client{'s' if concurrency > 1 else ''}: "
                         f"{batched.throughput / single.throughput:.2f}×")
    lines += ["", "Server resident memory (VmRSS, MiB), after warm-up → after the last cell:", ""]
    for mode, (before, after) in rss.items():
        lines.append(f"- {mode}: {before:.0f} → {after:.0f} ({after - before:+.0f})")
    total_errors = sum(c.errors for c in cells)
    lines += ["", f"Errors in all cells: {total_errors}" + (" (must be 0: see the server logs)" if total_errors else ""),
              ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a saved model directory (default: see the module docstring)")
    parser.add_argument("--data", default=None, help="with --model: an exported data dir with test.jsonl "
                        "(default: export the built-in spoken-digits test rows)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell (default: %(default)s)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=16, help="batched mode's --max-batch (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="batched mode's --max-wait-ms")
    parser.add_argument("--samples", type=int, default=64, help="distinct test rows to cycle over")
    parser.add_argument("--warmup", type=int, default=20, help="requests before measuring (default: %(default)s)")
    parser.add_argument("--cell-seconds", type=float, default=300.0, help="time limit of one cell")
    parser.add_argument("--total-seconds", type=float, default=1800.0, help="time limit of the whole run")
    parser.add_argument("--out", default=str(RESULTS), help="Markdown report (default: %(default)s)")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if args.requests < 1 or not args.concurrency or min(args.concurrency) < 1 or args.max_batch < 2:
        parser.error("--requests and --concurrency must be >= 1, --max-batch >= 2 (1 is the unbatched baseline)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = "python benchmarks/serve_load.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                      else sys.argv[1:]))
    deadline = time.monotonic() + args.total_seconds
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        workdir = Path(tmp)
        if args.model is None:
            model, rows = default_model(workdir)
            data_dir = workdir / "data"
            model_note = "configs/spoken_digits_fusion.yaml architecture (image CNN + audio transformer + " \
                         "transformer fusion), untrained"
        else:
            from polymodal.data import export_dataset

            model = Path(args.model)
            data_dir = Path(args.data) if args.data else workdir / "data"
            if args.data is None:
                export_dataset("spoken-digits", data_dir, splits=("test",), limit=args.samples)
            rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
            model_note = str(model)
        payloads = load_payloads(rows, data_dir, args.samples)
        cells, rss = [], {}
        for mode, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
            mode_cells, before, after = measure(model, mode, max_batch, args, payloads, workdir, deadline)
            cells += mode_cells
            rss[mode] = (before, after)
    report = format_report(cells, rss, args, command, model_note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"\nwritten: {out}")
    return {"cells": [c.row() for c in cells], "rss": rss, "report": report}


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any(row["errors"] for row in result["cells"]) else 0)
