"""CPU thread policy: fast on a quiet machine, and still fast when other processes compete for the cores.

Two parts, applied at two different moments, and a third on request:

1. **OpenMP wait policy** (:func:`configure_openmp_env`), read by the OpenMP runtime once, when torch is
   first imported, so it must be set in ``os.environ`` before that. Between two parallel regions an OpenMP
   worker thread spins waiting for the next one; torch's Linux x86 wheels use GNU libgomp, whose default spin
   is 300,000 iterations of a ``pause`` loop (milliseconds: longer than most of polymodal's kernels, so the
   workers effectively never sleep). On a quiet machine that makes the many small kernels cheap to start; on
   a busy one the spinning threads steal the cores that the thread the barrier is waiting for needs, and a run
   takes several times as long (issue #17: ``demo --quick`` 20.8 s quiet → 85 s next to two busy processes).
   ``OMP_WAIT_POLICY=PASSIVE`` (no spin) avoids that but pays a futex wake-up per parallel region (+43 % on
   a quiet machine for the demo on two threads, +20 % per step for the VQA demo's model). A short spin
   (``GOMP_SPINCOUNT``; ``KMP_BLOCKTIME`` for Intel's libiomp5), what the policy sets, sits between: a wake-up
   that comes within the spin is as cheap as ACTIVE's, and a thread whose wait is longer (the machine is busy)
   sleeps instead of burning a core. References: GCC libgomp manual, sections "OMP_WAIT_POLICY" and
   "GOMP_SPINCOUNT"; Intel OpenMP "KMP_BLOCKTIME".

2. **Intra-op thread count** (:func:`apply_thread_policy`), chosen from the work when training starts (the
   model's size, then the first step's forward FLOPs): a tiny model's kernels are too short for a second thread
   to pay for its synchronisation, while larger ones scale with the cores (ViT-B/32 CLIP: one thread halves the
   speed; the demo's 0.2 M-parameter models are 15 % faster on two).

3. **Opt-in, measured thread count** (:class:`ThreadTuner`, ``POLYMODAL_THREAD_POLICY=adaptive``): steps small
   enough to suffer from a busy machine are timed on one and on all threads while training, and the faster count
   is kept and re-checked as the load changes (``demo --quick`` next to two busy processes: 16.5-22 s instead of
   40 s). Opt-in because the count, and with it the float rounding of reductions, then depends on the load.

The command line (``polymodal ...`` and ``python -m polymodal``) applies parts 1 and 2 by default
(:func:`configure_cli_process`, when the CLI module is imported by a fresh process). Library users
who want the same behaviour call :func:`configure_openmp_env` before the first ``import torch`` (or export
the variables in the shell) and set ``POLYMODAL_THREAD_POLICY=auto`` so that ``Trainer.fit`` chooses the
thread count. Nothing here overrides a value the user set: an exported ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``, ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` wins, and
``POLYMODAL_THREAD_POLICY=off`` turns the whole policy off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# "auto" (the work-based rule; the CLI's default), "adaptive" (auto, and small steps timed on both thread counts
# while training: ThreadTuner; opt-in because the thread count then depends on the machine's load, and with it
# the float rounding of reductions, so two runs of one seed are no longer bit-identical), "off" (torch's defaults)
POLICY_ENV = "POLYMODAL_THREAD_POLICY"

# libgomp spins this many `pause` iterations before sleeping on a futex (its default is 300,000 when
# OMP_WAIT_POLICY is unset). Chosen over OMP_WAIT_POLICY=PASSIVE (tried as the default for a while): on ViT-B/32 the
# two are alike (2 rounds, benchmarks/results/contention_clip.md: quiet -3.5 % vs +2.8 %, busy 1.55x vs 1.59x), and
# on smaller models PASSIVE's wake-up per parallel region costs (the VQA demo's step 112 ms vs 93 ms).
# 10,000 pauses last ~0.1-0.5 ms depending on the CPU's pause latency: longer than
# the Python/dispatch gap between two kernels of a training step (tens of µs), so a quiet machine keeps ACTIVE's
# cheap wake-ups, and short enough that a waiting thread yields a busy core. A/B on ViT-B/32's kernel shapes
# with two busy processes (benchmarks/contention.py --clip-size b32-2l, busy shared machine): 300,000 (default)
# 26.6 s/step, 100,000 13.3, 10,000 5.5, 1,000 8.0 (sleeps between kernels), PASSIVE 9.6.
GOMP_SPINCOUNT = "10000"
# Intel OpenMP (libiomp5, e.g. conda's MKL builds of torch) counts its spin in milliseconds (default 200).
KMP_BLOCKTIME = "1"

# Models with fewer parameters than this train with one intra-op thread: their kernels (matmuls of width
# <= ~256 on batches of 32) last microseconds, so a second thread mostly adds barrier waits. The demo's
# models have < 1 M parameters; ViT-B/32 CLIP has 151 M.
SMALL_MODEL_PARAMS = 5_000_000
# Forward FLOPs of one training batch below which one thread is used (torch.utils.flop_counter's count: 2 per
# multiply-add): kernels of a few microseconds, where a second thread adds a barrier per kernel and, on a busy
# machine, a partner to wait for. Above it every thread: the classification demo's models (1.7e8-5.5e8 per batch
# of 32) run demo --quick in 9.9 s on two threads with the short spin vs 11.6 s on one (4 interleaved rounds,
# quiet machine), the VQA demo's VLM (2.8e9) 93 vs 154 ms per step, ViT-B/32 CLIP (~3e11) twice as fast.
SMALL_STEP_FLOPS = 1e8

_USER_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_torch_default_threads: int | None = None  # torch's own intra-op count, before this module changed it


def policy_enabled(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when ``POLYMODAL_THREAD_POLICY`` is ``auto`` (the CLI sets it unless the user chose another value)
    or ``adaptive``."""
    environ = os.environ if environ is None else environ
    return environ.get(POLICY_ENV, "").strip().lower() in ("auto", "adaptive")


def configure_openmp_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP start-up variables of the policy in ``environ`` (default ``os.environ``).

    Must run before torch is first imported (the OpenMP runtime reads them once, when it loads); after that
    it still sets the variables (child processes inherit them) but the current process is unaffected.
    Never overrides: a variable already set is kept, and ``OMP_WAIT_POLICY`` set by the user (ACTIVE or
    PASSIVE) means the user chose the wait behaviour, so no spin count is added. With
    ``POLYMODAL_THREAD_POLICY=off`` nothing is set. Otherwise ``POLYMODAL_THREAD_POLICY`` defaults to
    ``auto``, which enables :func:`apply_thread_policy` in this process and its children.

    Returns the variables this call set, e.g. ``{"GOMP_SPINCOUNT": "10000", ...}`` (empty when none).
    """
    environ = os.environ if environ is None else environ
    if environ.get(POLICY_ENV, "").strip().lower() == "off":
        return {}
    wanted = {POLICY_ENV: "auto"}
    if "OMP_WAIT_POLICY" not in environ:
        wanted |= {"GOMP_SPINCOUNT": GOMP_SPINCOUNT, "KMP_BLOCKTIME": KMP_BLOCKTIME}
    changed = {key: value for key, value in wanted.items() if key not in environ}
    environ.update(changed)
    return changed


def torch_imported() -> bool:
    """Whether torch is already loaded in this process (then the OpenMP variables come too late here)."""
    return "torch" in sys.modules


def configure_cli_process(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The command line's start-up hook: :func:`configure_openmp_env` in a process that has not imported torch.

    A process that already imported torch and then imports the CLI module (a notebook or a test session
    calling ``polymodal.cli.main``) is a library user: its OpenMP runtime is already configured, so nothing
    is set and its thread count is left alone. Returns the variables set.
    """
    return {} if torch_imported() else configure_openmp_env(environ)


def choose_num_threads(num_params: int, available: int, step_flops: float | None = None) -> int:
    """Intra-op threads for a model of ``num_params`` parameters, given ``available`` threads (>= 1).

    With ``step_flops`` (the forward FLOPs of one training batch, counted on the first step): one thread below
    :data:`SMALL_STEP_FLOPS`, else all of them. Without it: one thread below :data:`SMALL_MODEL_PARAMS`.
    The work per step is what decides (kernel granularity); parameters are its stand-in before a batch was seen,
    and they underrate a small conv net on large images (the VQA demo's 0.2 M-parameter model does 5 GFLOP per
    step and trains 1.8x faster on two threads).
    """
    if step_flops is not None:
        return 1 if step_flops < SMALL_STEP_FLOPS else max(1, available)
    return 1 if num_params < SMALL_MODEL_PARAMS else max(1, available)


def apply_thread_policy(model, environ: MutableMapping[str, str] | None = None,
                        step_flops: float | None = None) -> int | None:
    """Set torch's intra-op thread count for training ``model`` (an ``nn.Module``); return it.

    ``step_flops``: the forward FLOPs of one batch when known (see :func:`choose_num_threads`). A no-op returning
    None unless :func:`policy_enabled`, or when the user fixed the count with ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS``. Process-wide (``torch.set_num_threads``): a later call for a large model restores
    torch's default count, which is recorded before the first change.
    """
    environ = os.environ if environ is None else environ
    if not policy_enabled(environ) or any(var in environ for var in _USER_THREAD_VARS):
        return None
    import torch  # here, not at module level: the CLI imports this module before torch on purpose

    global _torch_default_threads
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    num_params = sum(p.numel() for p in model.parameters())
    threads = choose_num_threads(num_params, _torch_default_threads, step_flops)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# Steps with at most this many forward FLOPs per batch are timed on both thread counts while they train
# (ThreadTuner): their kernels are short enough that a second thread's barrier waits dominate as soon as other
# processes take the cores (the classification demo's models, 2e8 FLOPs: 16.5 s for demo --quick on one thread
# next to 2 busy processes vs 40 s on two; 9.9 vs 11.6 s the other way round on a quiet machine). Above it
# (ViT-B/32 CLIP, ~3e11) all threads win even on a busy machine (8.7 vs ~12 s/step), and a probe step on one
# thread would cost seconds.
TUNE_MAX_STEP_FLOPS = 2e10


def tuning_candidates(threads: int, available: int, step_flops: float) -> tuple[int, int] | None:
    """The two thread counts a :class:`ThreadTuner` compares (the chosen one first), or None to keep ``threads``.

    None above :data:`TUNE_MAX_STEP_FLOPS` or with one usable thread.
    """
    if available <= 1 or step_flops > TUNE_MAX_STEP_FLOPS:
        return None
    return (threads, 1) if threads > 1 else (1, available)


def tuner_for(threads: int | None, step_flops: float) -> ThreadTuner | None:
    """A :class:`ThreadTuner` for a training loop whose thread count :func:`apply_thread_policy` just set to
    ``threads`` (None: the policy is off or the user fixed the count), with ``POLYMODAL_THREAD_POLICY=adaptive``
    only; None otherwise or when not worth it (:func:`tuning_candidates`)."""
    if threads is None or _torch_default_threads is None:
        return None
    if os.environ.get(POLICY_ENV, "").strip().lower() != "adaptive":
        return None
    candidates = tuning_candidates(threads, _torch_default_threads, step_flops)
    return ThreadTuner(candidates) if candidates else None


class ThreadTuner:
    """Choose the intra-op thread count of a training loop by timing its steps, and re-check as the load changes.

    On with ``POLYMODAL_THREAD_POLICY=adaptive`` (opt-in: the count, hence the float rounding of reductions,
    then depends on the load, so two runs of one seed can differ in the last bits and drift apart from there).
    Why measured and not predicted: whether a second thread helps depends on what else runs on the machine
    (a barrier waits for a partner thread that another process may have descheduled), which no model-size rule
    sees. The loop calls :meth:`start` where steps begin (each epoch: the time in between, validation and
    checkpoints, is no step) and :meth:`step_done` after every optimizer step; the tuner sets the thread count
    for the next step. Plan: one untimed step, then ``rounds`` × (``probe_steps`` steps on each candidate,
    alternating); the candidate with the lower median step time wins, the first one (the work-based choice)
    unless the other is faster by more than ``margin``. Every ``reprobe_seconds`` it times ``probe_steps`` steps
    on the other count, then as many on the current one, and decides again. On a quiet machine the probes cost
    a few steps at the slower count per ``reprobe_seconds`` (< 1 % for steps under ~0.2 s).

    ``set_threads`` (default ``torch.set_num_threads``) and ``clock`` (seconds) are injectable for tests.
    ``history`` records each decision as (seconds since the first step, threads, {threads: median s/step}).
    """

    def __init__(self, candidates: tuple[int, int], *, probe_steps: int = 3, rounds: int = 2,
                 reprobe_seconds: float = 20.0, margin: float = 0.1, set_threads=None, clock=None):
        import time

        if probe_steps < 1 or rounds < 1:
            raise ValueError(f"ThreadTuner: probe_steps and rounds must be >= 1, got {probe_steps}, {rounds}")
        self.candidates = candidates
        self.current = candidates[0]
        self.probe_steps, self.reprobe_seconds, self.margin = probe_steps, reprobe_seconds, margin
        self._set_threads = set_threads or _set_torch_threads
        self._clock = clock or time.perf_counter
        first, other = candidates
        block = [first] * probe_steps + [other] * probe_steps
        self._plan: list[int] = [first] + block * rounds  # thread count of each planned step, the running one first
        self._warmup = True  # the first step is not timed (allocator, first-call dispatch, the FLOP count)
        self._samples: dict[int, list[float]] = {c: [] for c in candidates}
        self._last: float | None = None
        self._origin: float | None = None
        self._next_probe = float("inf")
        self.history: list[tuple[float, int, dict[int, float]]] = []
        self._set_threads(self._plan[0])

    def start(self) -> None:
        """Steps (re)start now: the time since the last step was something else and is not timed."""
        self._last = None

    def step_done(self) -> None:
        """One optimizer step ended: record its time, set the thread count for the next one."""
        now = self._clock()
        if self._origin is None:
            self._origin = now
        if self._plan:
            threads = self._plan.pop(0)
            if not self._warmup and self._last is not None:
                self._samples[threads].append(now - self._last)
            self._warmup = False
            if not self._plan:
                self._decide(now)
        elif now >= self._next_probe:
            other = next(c for c in self.candidates if c != self.current)
            self._plan = [other] * self.probe_steps + [self.current] * self.probe_steps
            self._samples = {c: [] for c in self.candidates}
        self._last = now
        self._set_threads(self._plan[0] if self._plan else self.current)

    def _decide(self, now: float) -> None:
        import statistics

        medians = {c: statistics.median(v) for c, v in self._samples.items() if v}
        if len(medians) == len(self.candidates):
            keep = self.current if self.current in medians else self.candidates[0]
            challenger = next(c for c in self.candidates if c != keep)
            if medians[challenger] < medians[keep] * (1 - self.margin):
                keep = challenger
            self.current = keep
            self.history.append((now - (self._origin or now), keep, medians))
        # a probe without samples on both (steps interrupted by epoch ends) keeps the current count
        self._next_probe = now + self.reprobe_seconds


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


__all__ = [
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "POLICY_ENV",
    "SMALL_MODEL_PARAMS",
    "SMALL_STEP_FLOPS",
    "TUNE_MAX_STEP_FLOPS",
    "ThreadTuner",
    "apply_thread_policy",
    "choose_num_threads",
    "configure_cli_process",
    "configure_openmp_env",
    "policy_enabled",
    "torch_imported",
    "tuner_for",
    "tuning_candidates",
]
