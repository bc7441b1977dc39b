"""Retrieval at scale: exact brute force vs approximate backends (faiss IVF / HNSW, usearch HNSW), one run.

    python benchmarks/retrieval_scale.py                    # 1,000,000 × 512; writes benchmarks/results/retrieval_scale.md
    python benchmarks/retrieval_scale.py --n 50000 --out /tmp/retrieval_scale.md    # development size
    python benchmarks/retrieval_scale.py --quick --out /tmp/r.md                   # seconds (smoke test)

Everything goes through the library's API (``EmbeddingIndex(..., backend=...)``), so the numbers include what a
user pays: query normalisation, the backend's search, and the exact rescoring of its candidates.

Gallery (synthetic, clustered like real embedding sets rather than uniform on the sphere): ``--clusters``
centres (default N / 1000, so 1,000 clusters of ~1,000 items at full size) drawn uniformly on the unit sphere;
each item = normalise(centre + s_c · g / √D) with g ~ N(0, I) and a per-cluster spread s_c uniform in
[0.5, 1.5] × ``--spread`` (cosine to its centre ≈ 0.7–0.95 at the default 0.7). Queries are drawn near gallery
items: normalise(item + ``--query-noise`` · s_c · g / √D), so a query's true top 10 are its source item and
nine cluster mates whose scores differ by ~1e-3: a hard case for approximate search.

Method:
- ground truth = the exact backend's top-k on the same index (``search(..., exact=True)``);
- each approximate backend is built once (build time; memory: the size of its structure, which holds its own
  copy of the vectors, and the process RSS growth over the build);
- its search-time parameter (faiss IVF ``nprobe``, faiss HNSW ``ef_search``, usearch ``expansion_search``) is
  swept on a *tuning* query set; the smallest value reaching ``--target-recall`` is then measured on a separate
  *evaluation* set: Recall@k, latency p50 / p99 at batch 1 (one query per call) and batch 256, queries/s;
- speed-ups are queries/s over the exact backend's at the same batch size, same threads.
Target (issue #17): Recall@10 ≥ 0.95 at ≥ 20× the exact backend's queries/s.
Memory at full size: the gallery is 2 GiB (float32); one approximate structure at a time adds ≤ ~2.3 GiB
(peak RSS 1.5 GB in a 200k development run with a 0.4 GB gallery; at 1M expect ~6 GB: libraries ~0.5,
gallery 2, one structure ≤ 2.3, temporaries ~1). Time: dominated by the two HNSW builds;
expect 10–15 minutes on 2 quiet cores (``--backends faiss-ivf`` alone: a few minutes).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from polymodal.inference.retrieval import EmbeddingIndex  # noqa: E402
from polymodal.inference.retrieval.backends import BackendNotInstalledError, parse_option_strings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval_scale.md"


@dataclass
class Candidate:
    """One approximate configuration: backend + build options + the search-time option swept."""

    name: str
    backend: str
    options: dict[str, Any]
    sweep_key: str
    sweep: list[int]


CANDIDATES = {
    "faiss-ivf": Candidate("faiss-ivf", "faiss", {"index": "ivf"}, "nprobe", [2, 4, 8, 16, 32, 64, 128]),
    "faiss-hnsw": Candidate("faiss-hnsw", "faiss", {"index": "hnsw"}, "ef_search", [16, 32, 64, 128, 256, 512]),
    "usearch": Candidate("usearch", "usearch", {}, "expansion_search", [16, 32, 64, 128, 256, 512]),
}


@dataclass
class Timing:
    latencies_s: list[float] = field(default_factory=list)
    queries: int = 0

    @property
    def total_s(self) -> float:
        return sum(self.latencies_s)

    @property
    def qps(self) -> float:
        return self.queries / self.total_s if self.total_s > 0 else math.inf

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.array(self.latencies_s), q)) * 1e3


def rss_bytes() -> int | None:
    """Resident set size now (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def make_gallery(n: int, dim: int, clusters: int, spread: float, seed: int, chunk: int = 65536
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ gallery [N, D] unit rows, cluster of each row [N], spread of each cluster [C]; built in chunks so the
    only full-size allocation is the gallery itself."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=gen), dim=-1)
    spreads = spread * (0.5 + torch.rand(clusters, generator=gen))
    assign = torch.randint(0, clusters, (n,), generator=gen)
    gallery = torch.empty(n, dim)
    for start in range(0, n, chunk):
        rows = assign[start : start + chunk]
        noise = torch.randn(len(rows), dim, generator=gen) * (spreads[rows, None] / math.sqrt(dim))
        gallery[start : start + chunk] = F.normalize(centres[rows] + noise, dim=-1)
    return gallery, assign, spreads


def make_queries(gallery: torch.Tensor, assign: torch.Tensor, spreads: torch.Tensor, count: int, noise: float,
                 seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    source = torch.randint(0, gallery.shape[0], (count,), generator=gen)
    scale = noise * spreads[assign[source], None] / math.sqrt(gallery.shape[1])
    return F.normalize(gallery[source] + scale * torch.randn(count, gallery.shape[1], generator=gen), dim=-1)


def timed_search(index: EmbeddingIndex, queries: torch.Tensor, k: int, batch: int, exact: bool = False,
                 limit: int | None = None) -> tuple[Timing, torch.Tensor]:
    """Search in batches of ``batch``, timing each call → (timing, rows [Q', k]); ``limit`` caps the queries."""
    queries = queries[:limit] if limit is not None else queries
    timing, found = Timing(), []
    for start in range(0, queries.shape[0], batch):
        block = queries[start : start + batch]
        began = time.perf_counter()
        _, rows = index.search(block, k=k, exact=exact)
        timing.latencies_s.append(time.perf_counter() - began)
        timing.queries += int(block.shape[0])
        found.append(rows)
    return timing, torch.cat(found)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over queries of |found ∩ true top-k| / k (the usual ANN Recall@k, e.g. ann-benchmarks)."""
    hits = (found[:, :, None] == truth[:, None, :]).any(dim=2).sum()
    return float(hits) / truth.numel()


def log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


def run_candidate(cand: Candidate, gallery: torch.Tensor, tune: torch.Tensor, tune_truth: torch.Tensor,
                  evaluation: torch.Tensor, eval_truth: torch.Tensor, args: argparse.Namespace, started: float
                  ) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_bytes()
    began = time.perf_counter()
    index = EmbeddingIndex(gallery, already_normalized=True, backend=cand.backend,
                           backend_options=cand.options).build()
    build_s = time.perf_counter() - began
    rss_after = rss_bytes()
    log(f"{cand.name}: built in {build_s:.1f} s", started)
    sweep = []
    for value in cand.sweep:
        index.set_search_options(**{cand.sweep_key: value})
        timing, found = timed_search(index, tune, args.k, args.batch)
        sweep.append({"value": value, "recall": recall(found, tune_truth), "qps": timing.qps})
        log(f"{cand.name}: {cand.sweep_key}={value} recall {sweep[-1]['recall']:.4f} {timing.qps:,.0f} q/s", started)
        if timing.total_s > args.sweep_cap_s:  # larger values only get slower: keep the run bounded
            break
    reaching = [s for s in sweep if s["recall"] >= args.target_recall]
    chosen = reaching[0]["value"] if reaching else sweep[-1]["value"]
    index.set_search_options(**{cand.sweep_key: chosen})
    batch_timing, found = timed_search(index, evaluation, args.k, args.batch)
    single_timing, _ = timed_search(index, evaluation, args.k, 1, limit=args.single)
    result = {
        "name": cand.name, "backend": cand.backend, "options": index.backend_options.to_dict(),
        "sweep_key": cand.sweep_key, "chosen": chosen, "sweep": sweep, "build_s": build_s,
        "structure_bytes": index.backend_nbytes(),
        "rss_delta_bytes": None if rss_before is None or rss_after is None else rss_after - rss_before,
        "recall": recall(found, eval_truth), "batch": batch_timing, "single": single_timing,
    }
    log(f"{cand.name}: {cand.sweep_key}={chosen} eval recall {result['recall']:.4f}", started)
    del index
    gc.collect()
    return result


def describe(timing: Timing) -> str:
    return f"{timing.percentile_ms(50):.2f} / {timing.percentile_ms(99):.2f}"


def render(record: dict[str, Any], args: argparse.Namespace) -> str:
    exact = record["exact"]
    n, dim = args.n, args.dim
    lines = [
        "# Retrieval at scale: exact vs approximate backends",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads for every backend; faiss {record['versions']['faiss']}, "
        f"usearch {record['versions']['usearch']}.",
        "",
        f"Gallery: {n:,} × {dim} float32 unit vectors ({n * dim * 4 / 2**30:.2f} GiB), {args.clusters:,} Gaussian "
        f"clusters (spread {args.spread} × U[0.5, 1.5]); queries near gallery items (noise {args.query_noise} × "
        f"the cluster's spread): {args.tune_queries} to tune each backend's search parameter, {args.eval_queries} "
        f"to evaluate. Recall@{args.k} against the exact backend on the evaluation queries. Latency: "
        f"{math.ceil(args.eval_queries / args.batch)} calls of batch {args.batch}; {args.single} calls of batch 1 "
        f"({args.single_exact} for exact). Generated in {record['generate_s']:.1f} s.",
        "",
        f"| backend | search parameter | build s | structure MiB | RSS Δ at build MiB | Recall@{args.k} | batch 1 "
        f"p50 / p99 ms | batch 1 q/s | batch {args.batch} p50 / p99 ms | batch {args.batch} q/s | speed-up b1 / "
        f"b{args.batch} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| exact (torch brute force) | – | 0 | {n * dim * 4 / 2**20:,.0f} (the gallery) | – | 1.0000 | "
        f"{describe(exact['single'])} | {exact['single'].qps:,.1f} | {describe(exact['batch'])} | "
        f"{exact['batch'].qps:,.1f} | 1× / 1× |",
    ]
    verdicts = []
    for r in record["results"]:
        s1 = r["single"].qps / exact["single"].qps
        sb = r["batch"].qps / exact["batch"].qps
        rss = "–" if r["rss_delta_bytes"] is None else f"{r['rss_delta_bytes'] / 2**20:,.0f}"
        lines.append(
            f"| {r['name']} | {r['sweep_key']}={r['chosen']} | {r['build_s']:.1f} | "
            f"{r['structure_bytes'] / 2**20:,.0f} | {rss} | {r['recall']:.4f} | {describe(r['single'])} | "
            f"{r['single'].qps:,.1f} | {describe(r['batch'])} | {r['batch'].qps:,.1f} | {s1:,.1f}× / {sb:,.1f}× |")
        met = r["recall"] >= args.target_recall and min(s1, sb) >= args.target_speedup
        verdicts.append(
            f"- {r['name']}: Recall@{args.k} {r['recall']:.4f} at {s1:,.1f}× (batch 1) and {sb:,.1f}× (batch "
            f"{args.batch}) the exact backend's queries/s: target {'**met**' if met else '**not met**'}.")
    for name, reason in record["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | | | | |")
    lines += ["", f"Target: Recall@{args.k} ≥ {args.target_recall} at ≥ {args.target_speedup:g}× the exact "
              "backend's queries/s, at both batch sizes.", "", *verdicts, ""]
    lines += ["Build options (as saved with the index):", ""]
    for r in record["results"]:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items() if v is not None)
        lines.append(f"- {r['name']}: {options}")
    lines += ["", f"Search-parameter sweep on the tuning queries (batch {args.batch}); the smallest value reaching "
              f"Recall@{args.k} ≥ {args.target_recall} is the one measured above:", ""]
    for r in record["results"]:
        cells = "; ".join(f"{s['value']}: {s['recall']:.4f} @ {s['qps']:,.0f} q/s" for s in r["sweep"])
        lines.append(f"- {r['name']} ({r['sweep_key']}: recall @ queries/s): {cells}")
    lines += ["", "Structure MiB: the approximate backend's own structure (its copy of the vectors included; "
              "usearch stores f16 by default); the index also keeps the float32 gallery to rescore candidates "
              "exactly, so a saved approximate index holds both. RSS Δ: process growth while building (it includes "
              "the build's temporary memory, and can be below the structure's size where the allocator reuses "
              "freed pages).", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=None, help="default: n // 1000 (≥ 1)")
    parser.add_argument("--spread", type=float, default=0.7)
    parser.add_argument("--query-noise", type=float, default=0.3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tune-queries", type=int, default=512)
    parser.add_argument("--eval-queries", type=int, default=2048)
    parser.add_argument("--single", type=int, default=200, help="batch-1 calls per approximate backend")
    parser.add_argument("--single-exact", type=int, default=30, help="batch-1 calls of the exact backend")
    parser.add_argument("--backends", default=",".join(CANDIDATES), help="comma-separated: %(default)s")
    parser.add_argument("--option", action="append", default=[], metavar="NAME:KEY=VALUE",
                        help="build option for one configuration, e.g. faiss-ivf:nlist=2000 (repeatable)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--target-speedup", type=float, default=20.0)
    parser.add_argument("--sweep-cap-s", type=float, default=60.0,
                        help="stop a sweep once one value takes longer than this (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch / faiss / usearch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.dim = min(args.n, 5000), min(args.dim, 32)
        args.tune_queries, args.eval_queries = min(args.tune_queries, 128), min(args.eval_queries, 256)
        args.single, args.single_exact, args.batch = min(args.single, 20), min(args.single_exact, 10), 64
    args.clusters = args.clusters or max(1, args.n // 1000)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    names = [x.strip() for x in args.backends.split(",") if x.strip()]
    unknown = [x for x in names if x not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown --backends {unknown}; choose from {', '.join(CANDIDATES)}")
    candidates = {name: Candidate(**{**CANDIDATES[name].__dict__, "options": dict(CANDIDATES[name].options)})
                  for name in names}
    for item in args.option:
        name, _, pair = item.partition(":")
        if name not in candidates:
            raise SystemExit(f"--option {item!r}: {name!r} is not one of the benchmarked {', '.join(candidates)}")
        candidates[name].options.update(parse_option_strings([pair]))

    began = time.perf_counter()
    gallery, assign, spreads = make_gallery(args.n, args.dim, args.clusters, args.spread, args.seed)
    tune = make_queries(gallery, assign, spreads, args.tune_queries, args.query_noise, args.seed + 1)
    evaluation = make_queries(gallery, assign, spreads, args.eval_queries, args.query_noise, args.seed + 2)
    generate_s = time.perf_counter() - began
    del assign
    log(f"gallery {args.n:,} × {args.dim} generated in {generate_s:.1f} s", started)

    exact_index = EmbeddingIndex(gallery, already_normalized=True)  # shares the gallery's memory
    _, tune_truth = timed_search(exact_index, tune, args.k, args.batch, exact=True)
    exact_batch, eval_truth = timed_search(exact_index, evaluation, args.k, args.batch, exact=True)
    exact_single, _ = timed_search(exact_index, evaluation, args.k, 1, exact=True, limit=args.single_exact)
    del exact_index
    log(f"exact: {exact_batch.qps:,.1f} q/s at batch {args.batch}, {exact_single.qps:,.1f} q/s at batch 1", started)

    versions: dict[str, str] = {}
    for module, label in (("faiss", "faiss"), ("usearch", "usearch")):
        try:
            versions[label] = __import__(module).__version__
        except ImportError:
            versions[label] = "not installed"
    results, skipped = [], {}
    for cand in candidates.values():
        try:
            results.append(run_candidate(cand, gallery, tune, tune_truth, evaluation, eval_truth, args, started))
        except BackendNotInstalledError as err:
            skipped[cand.name] = str(err)
            log(f"{cand.name}: skipped ({err})", started)

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/retrieval_scale.py", *given])
    record = {"command": command, "versions": versions, "generate_s": generate_s,
              "exact": {"batch": exact_batch, "single": exact_single}, "results": results, "skipped": skipped}
    text = render(record, args)
    print(text)
    out = Path(args.out)
    if not args.quick or out != RESULTS:  # a smoke run never replaces the committed results
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"written to {out}", started)
    record["report"] = text
    return record


if __name__ == "__main__":
    main()
