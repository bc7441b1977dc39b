"""One contrastive CLIP training step, side by side: polymodal native vs Hugging Face vs open_clip.

Step = forward both towers, symmetric InfoNCE loss, backward, AdamW step (same optimizer settings for all).
Architecture: OpenAI ViT-B/32 (image 224, patch 32, vision 768×12×12, text 512×12×8, context 77, vocab 49408,
embed 512), random init, fp32.

    python benchmarks/clip_train_step.py                       # batch 32, 2 warm-up + 5 timed steps
    python benchmarks/clip_train_step.py --batch 8 --steps 3   # quick check
    python benchmarks/clip_train_step.py --profile native      # torch.profiler table for one model

FLOPs are counted analytically (matmuls, attention and patch embedding of the full model as HF computes it;
training = 3 × forward), and the same count is used for every implementation, so MFU compares speed on the same
work. The fp32 peak is measured in this process (best of several large sgemm runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from polymodal.alignment.clip_native import CLIPModelNative, CLIPNativeConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ models


def build_native(config: CLIPNativeConfig):
    model = CLIPModelNative(config)

    def step_embeddings(pixels, ids, mask):
        return model(pixels, ids, mask)

    return model, step_embeddings


def build_hf(config: CLIPNativeConfig):
    from transformers import CLIPModel

    from polymodal.alignment.convert import hf_config_from_native

    model = CLIPModel(hf_config_from_native(config))  # default attention implementation (sdpa)

    def step_embeddings(pixels, ids, mask):
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        return out.image_embeds, out.text_embeds, model.logit_scale.exp()

    return model, step_embeddings


def build_open_clip(config: CLIPNativeConfig):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    c = config
    model = CLIP(embed_dim=c.embed_dim,
                 vision_cfg=CLIPVisionCfg(layers=c.vision_layers, width=c.vision_width, patch_size=c.patch_size,
                                          image_size=c.image_size, head_width=c.vision_width // c.vision_heads),
                 text_cfg=CLIPTextCfg(context_length=c.context_length, vocab_size=c.vocab_size, width=c.text_width,
                                      heads=c.text_heads, layers=c.text_layers),
                 quick_gelu=c.act == "quick_gelu")

    def step_embeddings(pixels, ids, mask):
        img, txt, scale = model(pixels, ids)[:3]
        return img, txt, scale

    return model, step_embeddings


BUILDERS = {"native": build_native, "hf": build_hf, "open_clip": build_open_clip}
LABELS = {"native": "polymodal native", "hf": "HF transformers CLIPModel", "open_clip": "open_clip CLIP"}


def open_clip_available() -> bool:
    try:
        import open_clip  # noqa: F401
    except Exception:  # ImportError, or a broken torchvision install
        return False
    return True


# ------------------------------------------------------------------------------------------ measuring


def make_batch(config: CLIPNativeConfig, batch: int, text_len: int | None, seed: int = 0):
    """pixels [B, 3, H, W]; ids [B, 77] BOS … EOT (+ zero padding when text_len is set), mask [B, 77]."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=g)
    L = config.context_length
    ids = torch.randint(1, config.vocab_size - 2, (batch, L), generator=g)
    mask = torch.ones(batch, L, dtype=torch.long)
    lengths = [L] * batch if text_len is None else torch.randint(max(2, text_len // 2), min(L, text_len * 3 // 2) + 1,
                                                                 (batch,), generator=g).tolist()
    for row, n in enumerate(lengths):
        ids[row, 0], ids[row, n - 1] = config.vocab_size - 2, config.eos_token_id  # BOS, EOT (largest id)
        ids[row, n:] = 0
        mask[row, n:] = 0
    return pixels, ids, mask


def clip_loss(img, txt, scale):
    logits = scale * img @ txt.t()
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def train_step_fn(model, step_embeddings, optimizer, batch):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = clip_loss(*step_embeddings(*batch))
        loss.backward()
        optimizer.step()
        return loss

    return step


def analytic_train_flops(c: CLIPNativeConfig, batch: int) -> float:
    """3 × forward FLOPs (2 per multiply-add) of the full model: matmuls, attention, patch conv, projections."""
    def tower(n: int, d: int, layers: int) -> float:
        mlp = round(d * c.mlp_ratio)
        per_layer = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * mlp + 2 * 2 * n * n * d
        return layers * per_layer

    patches = (c.image_size // c.patch_size) ** 2
    vision = tower(patches + 1, c.vision_width, c.vision_layers)
    vision += 2 * patches * c.num_channels * c.patch_size**2 * c.vision_width + 2 * c.vision_width * c.embed_dim
    text = tower(c.context_length, c.text_width, c.text_layers) + 2 * c.text_width * c.embed_dim
    return 3.0 * batch * (vision + text)


def measure_sgemm_peak(size: int = 2048, repeats: int = 6) -> float:
    """Best fp32 matmul throughput [GFLOP/s] over a few runs of a size×size×size sgemm."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_model(name: str, config: CLIPNativeConfig, batch, args) -> dict:
    torch.manual_seed(0)
    model, step_embeddings = BUILDERS[name](config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1,
                                  **({"fused": True} if args.optimizer == "fused" else {"foreach": True}))
    step = train_step_fn(model, step_embeddings, optimizer, batch)
    for _ in range(args.warmup):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(float(step()))
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    del model, optimizer, step
    gc.collect()
    return {"name": name, "label": LABELS[name], "params": params, "step_times_s": times,
            "median_s": statistics.median(times), "loss_first": losses[0]}


def profile_model(name: str, config: CLIPNativeConfig, batch) -> None:
    from torch.profiler import ProfilerActivity, profile

    model, step_embeddings = BUILDERS[name](config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = train_step_fn(model, step_embeddings, optimizer, batch)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# ------------------------------------------------------------------------------------------ report


def write_results(record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "clip_train_step.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# CLIP training step: polymodal native vs peers",
        "",
        f"Command: `{record['command']}`  ",
        f"torch {record['torch']}, transformers {record['transformers']}, threads {record['threads']}, "
        f"machine: {record['machine']}  ",
        f"Batch {record['batch']}, fp32, {record['warmup']} warm-up + {record['steps']} timed steps (median), "
        f"AdamW ({record['optimizer']}) for every model. Text: {record['text']}.  ",
        f"Measured fp32 sgemm peak: {record['peak_gflops']:.1f} GFLOP/s. Model FLOPs per step (analytic, "
        f"full model, 3 × forward): {record['flops_per_step'] / 1e9:.1f} GFLOP.  ",
        "The machine is shared: other load may have been present during the run.",
        "",
        "| implementation | params | step [s] (median) | samples/s | polymodal / this | MFU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        if "median_s" not in r:
            lines.append(f"| {r['label']} | – | {r['status']} | – | – | – |")
            continue
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.1f} M | {r['median_s']:.3f} | {r['samples_per_s']:.2f} "
                     f"| {r['speedup_of_native']:.2f}× | {100 * r['mfu']:.1f} % |")
    (RESULTS / "clip_train_step.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=None,
                        help="mean caption length in tokens (padded to 77); default: every caption fills 77 tokens")
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default="fused")
    parser.add_argument("--models", default="hf,native,open_clip")
    parser.add_argument("--profile", choices=list(BUILDERS), default=None)
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = CLIPNativeConfig.vit_b_32()
    batch = make_batch(config, args.batch, args.text_len)
    if args.profile:
        profile_model(args.profile, config, batch)
        return {}

    import transformers

    peak = measure_sgemm_peak()
    flops = analytic_train_flops(config, args.batch)
    print(f"fp32 sgemm peak {peak:.1f} GFLOP/s; model FLOPs/step {flops / 1e9:.1f} GFLOP", flush=True)
    results = []
    for name in args.models.split(","):
        if name == "open_clip" and not open_clip_available():
            print("open_clip: not installed")
            results.append({"name": name, "label": LABELS[name], "status": "not installed"})
            continue
        r = run_model(name, config, batch, args)
        r["samples_per_s"] = args.batch / r["median_s"]
        r["mfu"] = flops / r["median_s"] / (peak * 1e9)
        print(f"{r['label']}: median {r['median_s']:.3f} s/step, {r['samples_per_s']:.2f} samples/s, "
              f"MFU {100 * r['mfu']:.1f} %, steps {[round(t, 3) for t in r['step_times_s']]}", flush=True)
        results.append(r)
    native = next((r for r in results if r["name"] == "native" and "median_s" in r), None)
    for r in results:
        if native and "median_s" in r:
            r["speedup_of_native"] = r["median_s"] / native["median_s"]
    record = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()} ({platform.platform()})",
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "optimizer": args.optimizer,
        "text": "every caption 77 tokens" if args.text_len is None else f"captions ~{args.text_len} tokens, padded to 77",
        "peak_gflops": peak, "flops_per_step": flops, "flop_count": "analytic", "results": results,
    }
    if not args.no_write:
        write_results(record)
    return record


if __name__ == "__main__":
    main()
