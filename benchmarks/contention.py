"""Thread policies on a quiet and on a busy machine: the same work, each policy, with and without CPU load.

Work (each run is a fresh subprocess, so OpenMP reads each policy's environment at start-up):
- ``demo``: ``python -m polymodal demo --quick`` (the CLI path users take);
- ``clip``: a few training steps of polymodal's native CLIP ViT-B/32 (batch 32, every caption filling the
  context), with the CLI's thread policy applied the way ``polymodal`` + ``Trainer.fit`` apply it.

Load: N synthetic busy processes (a pure-Python spin loop each), started just before the work and stopped
right after it; each also exits by itself at a deadline, so nothing outlives the benchmark even if it is
killed. Policies (``--policies``, comma-separated):
- ``default``  today's behaviour before issue #17: torch/OpenMP defaults (policy off);
- ``passive``  ``OMP_WAIT_POLICY=PASSIVE``;
- ``1thread``  ``OMP_NUM_THREADS=1``;  ``1thread+passive`` both;
- ``polymodal`` the default of the CLI (``polymodal.threads``: short OpenMP spin GOMP_SPINCOUNT=10000 + threads by the work);
- ``adaptive`` the same with ``POLYMODAL_THREAD_POLICY=adaptive``: small steps timed on both thread counts while
  training (``threads.ThreadTuner``);
- ``spin:N``   the policy with ``GOMP_SPINCOUNT=N`` instead of the built-in value (for tuning).

    python benchmarks/contention.py                        # full run → benchmarks/results/contention.md
    python benchmarks/contention.py --quick                # seconds-scale smoke run (tiny work), no file
    python benchmarks/contention.py --work demo --load 2 --reps 2 --policies default,polymodal

Rounds are interleaved (every policy once, then again in reverse order, ...), so slow drift of the machine
falls on every policy alike. Reported: median wall seconds per cell and the child's CPU seconds (how much
CPU a policy burns for the same work), the busy-vs-default speed-up and the quiet cost vs default.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "results" / "contention.md"
# Variables a policy controls; removed from the inherited environment first so every policy starts clean.
POLICY_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
               "POLYMODAL_THREAD_POLICY")
DEFAULT_POLICIES = "default,passive,1thread,1thread+passive,polymodal"
POLICY_TEXT = {
    "default": "torch/OpenMP defaults, the behaviour before issue #17 (POLYMODAL_THREAD_POLICY=off)",
    "passive": "OMP_WAIT_POLICY=PASSIVE",
    "1thread": "OMP_NUM_THREADS=1",
    "1thread+passive": "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE",
    "polymodal": "the CLI's default (polymodal.threads: short OpenMP spin GOMP_SPINCOUNT=10000, threads chosen "
                 "from the work)",
    "adaptive": "the CLI's policy with POLYMODAL_THREAD_POLICY=adaptive (opt-in: steps of <= 2e10 FLOPs timed on "
                "1 and on all threads while training, the faster kept, re-checked every 20 s)",
    "spin": "the polymodal policy with GOMP_SPINCOUNT=N",
}
# CLIP sizes: b32 = ViT-B/32; b32-2l = ViT-B/32's kernel shapes with 2 blocks per tower (same granularity,
# ~1/6 of the step: a proxy when a full step is too slow to repeat); tiny = smoke test.
CLIP_SIZES = {
    "b32": lambda cls: cls.vit_b_32(),
    "b32-2l": lambda cls: cls.vit_b_32(vision_layers=2, text_layers=2),
    "tiny": lambda cls: cls.tiny(),
}


def policy_env(policy: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one policy: the inherited one without POLICY_VARS, plus the policy's own."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in POLICY_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    off = {"POLYMODAL_THREAD_POLICY": "off"}
    if policy == "default":
        env |= off
    elif policy == "passive":
        env |= off | {"OMP_WAIT_POLICY": "PASSIVE"}
    elif policy == "1thread":
        env |= off | {"OMP_NUM_THREADS": "1"}
    elif policy == "1thread+passive":
        env |= off | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    elif policy == "polymodal":
        pass  # nothing set: the CLI (or the clip worker, like the CLI) applies polymodal.threads
    elif policy == "adaptive":
        env["POLYMODAL_THREAD_POLICY"] = "adaptive"
    elif policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = str(int(policy.split(":", 1)[1]))
    else:
        raise SystemExit(f"unknown policy {policy!r}; known: {DEFAULT_POLICIES}, adaptive, spin:N")
    return env


# ------------------------------------------------------------------------------------------ load


BUSY_LOOP = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def start_load(processes: int, deadline_s: float) -> list[subprocess.Popen]:
    """N busy processes that spin until they are stopped or ``deadline_s`` passes, whichever is first."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(deadline_s)]) for _ in range(processes)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


# ------------------------------------------------------------------------------------------ work


def work_command(work: str, args, out_dir: str) -> list[str]:
    if work == "demo":
        cmd = [sys.executable, "-m", "polymodal", "demo", "--quick", "--out", out_dir]
        return cmd + (["--epochs", "1"] if args.quick else [])
    size = "tiny" if args.quick else args.clip_size
    return [sys.executable, str(Path(__file__).resolve()), "--clip-worker", "--clip-size", size,
            "--steps", str(args.steps)]


def time_once(work: str, cmd: list[str], env: dict[str, str], load: int, deadline_s: float) -> tuple[float, float]:
    """(seconds, CPU seconds of the work process) of one run of ``cmd`` with ``load`` busy processes beside it.

    seconds: the run's wall time (demo), or the worker's own seconds per timed step (clip: start-up and model
    building excluded). CPU comes from ``wait4`` on the work process, so the load's CPU is not in it.
    """
    procs = start_load(load, deadline_s) if load else []
    try:
        with tempfile.TemporaryFile() as log:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            watchdog = threading.Timer(deadline_s, proc.kill)  # the work gets the same deadline as the load
            watchdog.start()
            _, status, usage = os.wait4(proc.pid, 0)
            watchdog.cancel()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.seek(0)
            output = log.read().decode(errors="replace")
    finally:
        stop_load(procs)
    if proc.returncode != 0:
        why = f"killed at the {deadline_s:.0f} s deadline (--deadline)" if wall >= deadline_s else "failed"
        raise SystemExit(f"work {why} (rc {proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    seconds = float(output.strip().splitlines()[-1]) if work == "clip" else wall
    return seconds, usage.ru_utime + usage.ru_stime


def clip_worker(size: str, steps: int) -> None:
    """A few CLIP training steps under the current environment; prints seconds per step (after a warm-up)."""
    sys.path.insert(0, str(ROOT / "src"))
    from polymodal import threads

    threads.configure_openmp_env()  # before torch, exactly as the CLI does (a no-op when the policy is off)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from clip_train_step import CLIPModelNative, CLIPNativeConfig, make_batch, make_optimizer, train_step_fn

    config = CLIP_SIZES[size](CLIPNativeConfig)
    model = CLIPModelNative(config)
    threads.apply_thread_policy(model)  # what Trainer.fit does
    step = train_step_fn(model, make_optimizer(model, "fused"), make_batch(config, 32, None))  # as clip_train_step
    step()  # warm-up: allocator, first-call dispatch
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(f"{(time.perf_counter() - start) / steps:.4f}")


# ------------------------------------------------------------------------------------------ report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _cell(values: list[float]) -> str:
    """median (min–max), 3 significant digits; – when the condition was not run."""
    if not values:
        return "–"
    return f"{_num(statistics.median(values))} ({_num(min(values))}–{_num(max(values))})"


def fair_share_note(by_policy: dict, load: int, cores: int) -> list[str]:
    """The most any policy using every core can gain over the default next to ``load`` busy processes.

    Linux's CFS shares the CPU among runnable threads: a process of ``cores`` threads next to ``load`` busy
    single-thread processes gets ``cores / (cores + load)`` of the machine, so its busy time is at least its
    quiet time × (cores + load) / cores, whatever its wait policy (taking more means more threads than cores,
    which costs on a quiet machine). Default's busy time ÷ that floor is the ceiling of the speed-up.
    """
    quiet = [_median(cells["quiet"]["wall"]) for cells in by_policy.values()]
    quiet = [q for q in quiet if q]
    base = by_policy.get("default")
    default_busy = _median(base["busy"]["wall"]) if base else None
    if not quiet or not default_busy or not load:
        return []
    floor = min(quiet) * (cores + load) / cores
    return [f"Fair-share floor: {cores} threads next to {load} busy processes get {cores}/{cores + load} of the "
            f"CPU, so the best quiet time here ({min(quiet):.3g} s) becomes ≥ {floor:.3g} s busy; the default's "
            f"busy {default_busy:.3g} s leaves at most **{default_busy / floor:.2f}×** for any policy that uses "
            f"every core (a one-thread process gets {min(1.0, cores / (1 + load)):.2g} of a core instead)."]


def write_markdown(path: Path, args, rows: dict, meta: dict) -> str:
    conds = ["quiet", f"busy ({args.load} procs)"]
    lines = [
        "# Thread policies on a quiet and a busy machine",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- Machine: {meta['machine']}; torch {meta['torch']}; run at {meta['when']}.",
        f"- {args.reps} interleaved round(s) per cell"
        + (f" ({args.quiet_reps} for the quiet cells)" if getattr(args, "quiet_reps", None) not in (None, args.reps)
           else "")
        + f"; busy = {args.load} synthetic busy processes running for "
        "the whole run (self-stopping). Seconds: median (min–max) of the wall time of a demo run, of the time "
        "per step for CLIP. CPU: the work process's own CPU seconds for the whole run (median): what the "
        "policy burns for the same work.",
        "- Speed-up busy = default's busy time ÷ this policy's busy time (target ≥ 2× for `polymodal`); "
        "quiet cost = this policy's quiet time ÷ default's − 1 (target ≤ 3 %).",
        "- Policies: " + "; ".join(f"`{p}` {POLICY_TEXT.get(p.split(':')[0], p)}" for p in meta["policies"]) + ".",
        "",
    ]
    for work, by_policy in rows.items():
        lines += [f"## {meta['works'][work]}", "",
                  f"| policy | {conds[0]} [s] | {conds[1]} [s] | CPU quiet / busy [s] | speed-up busy | quiet cost |",
                  "|---|---:|---:|---:|---:|---:|"]
        base = by_policy.get("default")
        for policy, cells in by_policy.items():
            q, b = (_median(cells[c]["wall"]) for c in ("quiet", "busy"))
            cq, cb = (_median(cells[c]["cpu"]) for c in ("quiet", "busy"))
            bq, bb = (_median(base[c]["wall"]) if base else None for c in ("quiet", "busy"))
            speed = f"{bb / b:.2f}×" if bb and b else "–"
            cost = f"{100 * (q / bq - 1):+.1f} %" if bq and q else "–"
            lines.append(f"| {policy} | {_cell(cells['quiet']['wall'])} | {_cell(cells['busy']['wall'])} | "
                         f"{_num(cq)} / {_num(cb)} | {speed} | {cost} |")
        lines += ["", *fair_share_note(by_policy, args.load, meta.get("cores") or os.cpu_count() or 1), ""]
    text = "\n".join(lines)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="demo,clip", help="comma-separated: demo, clip (default: both)")
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--load", type=int, default=2, help="busy processes in the busy condition")
    parser.add_argument("--reps", type=int, default=2, help="interleaved rounds per cell")
    parser.add_argument("--quiet-reps", type=int, default=None,
                        help="rounds for the quiet cells (default --reps): cheap, and a 3 %% cost needs several")
    parser.add_argument("--conditions", default="quiet,busy", help="quiet and/or busy (default both)")
    parser.add_argument("--steps", type=int, default=3, help="timed CLIP steps per run (after 1 warm-up)")
    parser.add_argument("--clip-size", choices=sorted(CLIP_SIZES), default="b32")
    parser.add_argument("--quick", action="store_true", help="tiny work (demo 1 epoch, tiny CLIP), 1 round")
    parser.add_argument("--deadline", type=float, default=1800.0,
                        help="seconds after which the load stops itself and a run still going is killed")
    parser.add_argument("--out", default=None, help=f"results file (default {RESULTS_MD.relative_to(ROOT)}; "
                        "none with --quick)")
    parser.add_argument("--clip-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clip_worker:
        clip_worker(args.clip_size, args.steps)
        return 0
    if args.quick:
        args.reps = 1
        args.quiet_reps = 1
    if args.quiet_reps is None:
        args.quiet_reps = args.reps
    works = [w for w in args.work.split(",") if w]
    conditions = [c for c in args.conditions.split(",") if c]
    if not set(conditions) <= {"quiet", "busy"}:
        parser.error(f"--conditions: quiet and/or busy, got {args.conditions!r}")
    policies = [p for p in args.policies.split(",") if p]
    envs = {p: policy_env(p) for p in policies}  # validates the names before any work starts
    rows = {w: {p: {c: {"wall": [], "cpu": []} for c in ("quiet", "busy")} for p in policies} for w in works}
    with tempfile.TemporaryDirectory(prefix="contention_") as tmp:
        for rnd in range(max(args.reps, args.quiet_reps)):
            order = policies if rnd % 2 == 0 else policies[::-1]
            for work in works:
                for cond, load in (("quiet", 0), ("busy", args.load)):
                    if cond not in conditions or rnd >= (args.quiet_reps if cond == "quiet" else args.reps):
                        continue
                    for policy in order:
                        cmd = work_command(work, args, str(Path(tmp) / f"{work}_{policy}"))
                        wall, cpu = time_once(work, cmd, envs[policy], load, args.deadline)
                        rows[work][policy][cond]["wall"].append(wall)
                        rows[work][policy][cond]["cpu"].append(cpu)
                        print(f"round {rnd + 1} {work:5s} {cond:5s} {policy:16s} {wall:8.2f} s  cpu {cpu:7.1f} s",
                              flush=True)
    import torch

    meta = {
        "command": "python benchmarks/contention.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                   f"{platform.platform()}",
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "policies": policies,
        "works": {"demo": "`polymodal demo --quick`" + (" --epochs 1" if args.quick else ""),
                  "clip": f"CLIP training step ({'tiny' if args.quick else args.clip_size}, batch 32, "
                          f"{args.steps} timed steps after 1 warm-up per run; seconds per step, CPU per whole run)"},
    }
    out = None if args.quick and args.out is None else Path(args.out or RESULTS_MD)
    print(write_markdown(out, args, rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
