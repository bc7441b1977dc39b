"""CPU thread policy: fast on a quiet machine, and still fast when other processes compete for the cores.

Two parts, applied at two different moments:

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

The command line (``polymodal ...`` and ``python -m polymodal``) applies both by default
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

POLICY_ENV = "POLYMODAL_THREAD_POLICY"  # "auto" (apply), "off" (leave torch's defaults alone)

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
    """True when ``POLYMODAL_THREAD_POLICY`` is ``auto`` (the CLI sets it unless the user chose ``off``)."""
    environ = os.environ if environ is None else environ
    return environ.get(POLICY_ENV, "").strip().lower() == "auto"


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


__all__ = [
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "POLICY_ENV",
    "SMALL_MODEL_PARAMS",
    "SMALL_STEP_FLOPS",
    "apply_thread_policy",
    "choose_num_threads",
    "configure_cli_process",
    "configure_openmp_env",
    "policy_enabled",
    "torch_imported",
]
