"""Preprocessing throughput: polymodal's processors vs Hugging Face's and plain baselines, with output parity.

    python benchmarks/preprocessing.py                      # writes benchmarks/results/preprocessing.md
    python benchmarks/preprocessing.py --quick --out /tmp/preprocessing.md      # seconds (smoke test)

Four sections, one run:

1. Images/s, file → normalised [3, 224, 224] tensor (decode + resize + center crop + normalise), on generated
   photo-like 640×480 and 1920×1080 JPEG (quality 90) and PNG files in a temp dir. polymodal's ImageProcessor
   is configured from a CLIP checkpoint's preprocessor_config.json (shortest edge 224, center crop 224, bicubic,
   CLIP mean/std) and compared with transformers' CLIPImageProcessor (PIL backend = the "slow" processor;
   the torchvision backend = ``use_fast=True``, run where torchvision imports — the peer environment of
   ``benchmarks/peers/build_env.sh`` — and reported as skipped with the reason elsewhere) and a PIL + numpy baseline doing the same steps, plus two PIL shortcuts that may change the output
   (Pillow's ``reducing_gap``; JPEG draft decoding at a reduced DCT scale). Parity: max |Δ| of each output
   against transformers' PIL backend.
   Where polymodal's time goes: a cProfile of its image path (top functions by own time).
2. Audio clips/s, WAV file → features: polymodal's log-mel AudioProcessor (16 kHz, 80 mels) and polymodal's
   wrapper of transformers' WhisperFeatureExtractor / ASTFeatureExtractor vs the extractor used directly
   (soundfile + scipy.signal.resample_poly + extractor); parity: max |Δ| wrapper vs direct (differences come
   from the resampler only).
3. Texts/s, caption → token ids: polymodal's Hugging Face text processor vs the tokenizer called directly (per
   text, and batched), and polymodal's built-in word tokenizer; parity: identical ids.
4. DataLoader: samples/s over epochs of the built-in spoken-digits train split (image + audio + text) with
   num_workers 0, 1, 2 (first epoch: processing; later epochs: the dataset's in-memory cache where it lives).

Timing: each measurement is repeated ``--rounds`` times with the implementations interleaved (A B C, C B A, ...)
so load from other processes falls on all alike; the tables give the median. One torch thread by default (as in
a DataLoader worker, which torch sets to one thread).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RESULTS = Path(__file__).resolve().parent / "results" / "preprocessing.md"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}


# ------------------------------------------------------------------------------------------------ inputs


def photo_like(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic 'photo' [H, W, 3] uint8: smooth illumination, mid-scale texture, hard-edged objects and
    sensor grain, so that JPEG / PNG sizes and decode costs are those of real photographs, not of flat images."""
    from PIL import Image, ImageDraw, ImageFilter

    def field(scale: int) -> np.ndarray:
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        up = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        return np.asarray(up, dtype=np.float32)

    base = 0.55 * field(160) + 0.3 * field(24) + 0.15 * field(4)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(width // 20, width // 3), y0 + rng.integers(height // 20, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))  # optics: no perfectly sharp edges
    grain = rng.normal(0, 4, (height, width, 3))
    return np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)


def write_images(root: Path, count: int, seed: int) -> dict[tuple[str, str], list[Path]]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    files: dict[tuple[str, str], list[Path]] = {}
    for label, (width, height) in SIZES.items():
        for fmt in ("JPEG", "PNG"):
            files[(label, fmt)] = []
        for i in range(count):
            image = Image.fromarray(photo_like(width, height, rng))
            for fmt, ext, kwargs in (("JPEG", "jpg", {"quality": 90}), ("PNG", "png", {})):
                path = root / f"{label}_{i}.{ext}"
                image.save(path, fmt, **kwargs)
                files[(label, fmt)].append(path)
    return files


def speech_like(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced-speech-like signal: harmonics of a gliding f0 under a syllable envelope, plus breath noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(h * phase) / h for h in range(1, 12) if h * f0.max() < rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    wave = 0.3 * voice * envelope + 0.01 * rng.normal(size=t.shape)
    return (wave / max(1e-6, np.abs(wave).max()) * 0.8).astype(np.float32)


def write_audio(root: Path, count: int, seed: int) -> dict[str, list[Path]]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    files: dict[str, list[Path]] = {"1 s @ 8 kHz (FSDD-like)": [], "10 s @ 44.1 kHz": []}
    for i in range(count):
        for label, seconds, rate in (("1 s @ 8 kHz (FSDD-like)", 1.0, 8000), ("10 s @ 44.1 kHz", 10.0, 44100)):
            path = root / f"{rate}_{i}.wav"
            sf.write(path, speech_like(seconds, rate, rng), rate, subtype="PCM_16")
            files[label].append(path)
    return files


def captions(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    adjectives = "small large red blue old young happy wooden shiny dark bright quiet busy".split()
    nouns = "dog cat man woman child car bicycle tree house street table kitchen river mountain bird".split()
    verbs = "sits stands runs walks sleeps waits plays looks".split()
    places = "next to the window|in a park|on a busy street|under a tree|near the river|in a kitchen".split("|")
    out = []
    for _ in range(count):
        words = ["a", rng.choice(adjectives), rng.choice(nouns), rng.choice(verbs), rng.choice(places)]
        for _ in range(int(rng.integers(0, 4))):
            words += ["and", "a", rng.choice(adjectives), rng.choice(nouns), rng.choice(places)]
        out.append(" ".join(str(w) for w in words) + ".")
    return out


# ------------------------------------------------------------------------------------------------ timing


class Batched:
    """A pipeline that takes the whole list of items in one call and returns one output per item."""

    def __init__(self, fn: Callable[[list[Any]], Any]):
        self.fn = fn

    def __call__(self, items: list[Any]) -> Any:
        return self.fn(items)


def run_pipeline(pipeline: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if isinstance(pipeline, Batched):
        return list(pipeline(items))
    return [pipeline(item) for item in items]


def interleaved(pipelines: dict[str, Callable[[Any], Any]], items: list[Any], rounds: int
                ) -> dict[str, list[float]]:
    """items/s of each pipeline over ``items``, ``rounds`` times, order alternating per round."""
    names = list(pipelines)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # untimed warm-up: first-call costs (imports, caches, allocator) are not throughput
        run_pipeline(pipelines[name], items[:2])
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            began = time.perf_counter()
            run_pipeline(pipelines[name], items)
            rates[name].append(len(items) / (time.perf_counter() - began))
    return rates


def max_abs_diff(a: Any, b: Any) -> float:
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if a.shape != b.shape:
        return math.inf
    return float((a - b).abs().max())


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


# ------------------------------------------------------------------------------------------------ images


def clip_checkpoint_dir(root: Path) -> Path:
    """A directory holding only a CLIP checkpoint's preprocessor_config.json (transformers' CLIP defaults)."""
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers 5: the PIL backend by name
    except ImportError:
        from transformers import CLIPImageProcessor as Processor  # 4.x: the slow processor

    directory = root / "clip"
    Processor().save_pretrained(str(directory))
    return directory


def hf_image_processor(directory: Path, fast: bool) -> Any:
    """transformers' processor for ``directory``: the PIL ("slow") or the torchvision ("fast") implementation.
    transformers 5 names them backends (``backend="pil" | "torchvision"``); 4.x used ``use_fast``."""
    import transformers
    from transformers import AutoImageProcessor

    v5 = int(transformers.__version__.split(".")[0]) >= 5
    if v5:
        processor = AutoImageProcessor.from_pretrained(str(directory), backend="torchvision" if fast else "pil")
    else:
        processor = AutoImageProcessor.from_pretrained(str(directory), use_fast=fast)
    name = type(processor).__name__
    if fast and (name.endswith("Pil") if v5 else not name.endswith("Fast")):  # a silent fallback to PIL
        raise ImportError(f"transformers fell back to {name}")
    return processor


POLY = "polymodal ImageProcessor (CLIP config)"
POLY_TORCH = "polymodal ImageProcessor, resize_backend: torch"
SLOW = "transformers CLIPImageProcessor, PIL backend (slow)"
FAST = "transformers CLIPImageProcessor, torchvision backend (fast)"
DECODE_ONLY = "Pillow decode only (no resize: the one-thread ceiling of any Pillow pipeline)"
NO_PARITY = (DECODE_ONLY,)  # not a preprocessing pipeline: its output is the decoded image


def image_pipelines(clip_dir: Path, workers: int) -> tuple[dict[str, Callable[[Path], Any]], dict[str, str]]:
    from PIL import Image

    from polymodal.config import ModalityConfig
    from polymodal.data.image import ImageProcessor

    def processor(**options: Any) -> ImageProcessor:
        return ImageProcessor.from_config(ModalityConfig(kind="image", pretrained=str(clip_dir), processor=options),
                                          "image")

    polymodal, polymodal_torch = processor(), processor(resize_backend="torch")
    hf_slow = hf_image_processor(clip_dir, fast=False)
    pipelines: dict[str, Callable[[Path], Any]] = {
        POLY: lambda path: polymodal(path)["pixel_values"],
        POLY_TORCH: lambda path: polymodal_torch(path)["pixel_values"],
        SLOW: lambda path: hf_slow(images=Image.open(path), return_tensors="pt")["pixel_values"][0],
        # the same processors handed the whole list in one call: transformers' slow processor loops over it
        f"{SLOW}, one call per list":
            Batched(lambda paths: hf_slow(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]),
        f"polymodal ImageProcessor.batch, {workers} threads":
            Batched(lambda paths: polymodal.batch(paths, workers=workers)["pixel_values"]),
        f"polymodal ImageProcessor.batch, resize_backend: torch, {workers} threads":
            Batched(lambda paths: polymodal_torch.batch(paths, workers=workers)["pixel_values"]),
    }
    skipped: dict[str, str] = {}
    try:
        import torchvision  # noqa: F401

        hf_fast = hf_image_processor(clip_dir, fast=True)
        pipelines[FAST] = lambda path: hf_fast(images=Image.open(path), return_tensors="pt")["pixel_values"][0]
        pipelines[f"{FAST}, one call per list"] = Batched(
            lambda paths: hf_fast(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"])
    except Exception as err:  # ImportError, or torchvision's compiled ops failing against this torch
        skipped[FAST] = (f"torchvision cannot be imported here ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120]}); run this in benchmarks/peers/build_env.sh's environment")
    pipelines["PIL + numpy baseline (same steps)"] = lambda path: pil_baseline(path, draft=False)
    pipelines["PIL + reducing_gap=3 resize (may change output)"] = lambda path: pil_baseline(path, reducing_gap=3.0)
    pipelines["PIL + JPEG draft decode (may change output)"] = lambda path: pil_baseline(path, draft=True)
    pipelines[DECODE_ONLY] = decode_only
    return pipelines, skipped


def decode_only(path: Path) -> Any:
    """Open and decode, nothing else (these files are RGB already: no conversion): every pipeline above, except
    draft decoding, does at least this."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


def pil_baseline(path: Path, draft: bool = False, reducing_gap: float | None = None, size: int = 224
                 ) -> torch.Tensor:
    """Open → RGB → shortest edge 224 (long side truncated, bicubic) → center crop → /255 → CLIP mean/std.

    ``draft``: let libjpeg decode at a reduced scale; ``reducing_gap``: Pillow's box-reduce-then-resample
    (``Image.resize(reducing_gap=...)``). Both are faster and change the output (the table shows by how much).
    """
    from PIL import Image

    with Image.open(path) as image:
        if draft and image.format == "JPEG":
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the requested size: far less work
            scale = size / min(image.size)
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        image = image.convert("RGB")
        width, height = image.size
        new = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
        image = image.resize(new, Image.BICUBIC, reducing_gap=reducing_gap)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    return torch.from_numpy(((pixels - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).copy())


def profile_polymodal(clip_dir: Path, paths: list[Path], top: int = 8) -> list[str]:
    from polymodal.config import ModalityConfig
    from polymodal.data.image import ImageProcessor

    processor = ImageProcessor.from_config(ModalityConfig(kind="image", pretrained=str(clip_dir)), "image")
    profiler = cProfile.Profile()
    profiler.enable()
    for path in paths:
        processor(path)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    lines = []
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(f"| `{name}` ({where}) | {calls} | {100 * own / total:.1f} % | {1e3 * cumulative / len(paths):.2f} |")
    return lines


def bench_images(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    files = write_images(root, args.images, args.seed)
    clip_dir = clip_checkpoint_dir(root)
    pipelines, skipped = image_pipelines(clip_dir, args.image_workers)
    reference = SLOW
    rows = []
    for (label, fmt), paths in files.items():
        row: dict[str, Any] = {"input": f"{label} {fmt}", "parity": {}, "parity_fast": {}}
        for key, ref_name in (("parity", SLOW), ("parity_fast", FAST)):
            if ref_name not in pipelines:
                continue
            expected = run_pipeline(pipelines[ref_name], paths)
            row[key] = {name: max(max_abs_diff(got, e) for got, e in zip(run_pipeline(fn, paths), expected))
                        for name, fn in pipelines.items() if name not in NO_PARITY}
        row["rates"] = interleaved(pipelines, paths, args.rounds)
        rows.append(row)
    profile = profile_polymodal(clip_dir, files[("1920x1080", "JPEG")][: max(1, args.images)])
    return {"rows": rows, "skipped": skipped, "names": list(pipelines), "reference": reference, "profile": profile}


# ------------------------------------------------------------------------------------------------ audio


def audio_pipelines(root: Path) -> tuple[dict[str, Callable[[Path], Any]], list[tuple[str, str]],
                                         dict[str, Callable[[Path], Any]]]:
    import soundfile as sf
    from scipy.signal import resample_poly
    from transformers import ASTFeatureExtractor, WhisperFeatureExtractor

    from polymodal.data.audio import AudioProcessor, AudioProcessorConfig, HFAudioProcessor

    extractors = {"Whisper": WhisperFeatureExtractor(), "AST": ASTFeatureExtractor()}
    pipelines: dict[str, Callable[[Path], Any]] = {}
    config = AudioProcessorConfig(sample_rate=16000, max_seconds=30.0, n_mels=80)
    builtin = AudioProcessor(config)
    pipelines["polymodal AudioProcessor (log-mel, 80 mels)"] = lambda path: builtin(path)["features"]
    pairs = []
    same_wave: dict[str, Callable[[Path], Any]] = {}  # the extractor on polymodal's own resampled waveform
    for name, extractor in extractors.items():
        directory = root / name.lower()
        extractor.save_pretrained(str(directory))
        wrapped = HFAudioProcessor(str(directory), config)
        key = "input_features" if name == "Whisper" else "input_values"
        rate = int(extractor.sampling_rate)

        def direct(path: Path, extractor: Any = extractor, rate: int = rate, key: str = key) -> Any:
            wave, source_rate = sf.read(path, dtype="float32", always_2d=False)
            if source_rate != rate:
                g = math.gcd(rate, source_rate)
                wave = resample_poly(wave, rate // g, source_rate // g).astype(np.float32)
            return extractor(wave, sampling_rate=rate, return_tensors="np")[key][0]

        pipelines[f"polymodal HFAudioProcessor ({name}FeatureExtractor)"] = (
            lambda path, wrapped=wrapped, key=key: wrapped(path)[key])
        pipelines[f"{name}FeatureExtractor direct (soundfile + scipy resample_poly)"] = direct
        pairs.append((f"polymodal HFAudioProcessor ({name}FeatureExtractor)",
                      f"{name}FeatureExtractor direct (soundfile + scipy resample_poly)"))
        same_wave[pairs[-1][0]] = (
            lambda path, wrapped=wrapped, extractor=extractor, rate=rate, key=key:
            extractor(wrapped.loader.load(path).numpy(), sampling_rate=rate, return_tensors="np")[key][0])
    return pipelines, pairs, same_wave


def bench_audio(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    files = write_audio(root, args.clips, args.seed)
    pipelines, pairs, same_wave = audio_pipelines(root)
    rows = []
    for label, paths in files.items():
        parity = {a: max(max_abs_diff(pipelines[a](p), pipelines[b](p)) for p in paths) for a, b in pairs}
        exact = {a: max(max_abs_diff(pipelines[a](p), same_wave[a](p)) for p in paths) for a, _ in pairs}
        rows.append({"input": label, "rates": interleaved(pipelines, paths, args.rounds), "parity": parity,
                     "same_wave": exact})
    return {"rows": rows, "names": list(pipelines)}


# ------------------------------------------------------------------------------------------------ text


def trained_tokenizer(root: Path, corpus: list[str]) -> Path:
    """A WordPiece tokenizer (8k vocab, BERT-style normaliser and specials) trained on the captions, saved as a
    transformers tokenizer directory: offline, and as costly per call as a real checkpoint's fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=77)
    directory = root / "tokenizer"
    fast.save_pretrained(str(directory))
    return directory


def bench_text(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from polymodal.data.text import BuiltinTextProcessor, HFTextProcessor, TextProcessorConfig

    texts = captions(args.texts, args.seed)
    directory = trained_tokenizer(root, captions(5000, args.seed + 1))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    polymodal = HFTextProcessor(str(directory), TextProcessorConfig(max_length=77))
    builtin = BuiltinTextProcessor(TextProcessorConfig(max_length=77))
    per_text = {
        "polymodal HFTextProcessor (per text)": lambda text: polymodal(text)["input_ids"],
        "tokenizer called directly (per text)": lambda text: tokenizer(text, truncation=True, max_length=77)["input_ids"],
        "polymodal built-in word tokenizer (per text)": lambda text: builtin(text)["input_ids"],
    }
    key = next(iter(polymodal(texts[0])))  # the processor's ids key
    per_text["polymodal HFTextProcessor (per text)"] = lambda text: polymodal(text)[key]
    equal = all(polymodal(t)[key].tolist() == tokenizer(t, truncation=True, max_length=77)["input_ids"]
                for t in texts)
    rates = interleaved(per_text, texts, args.rounds)
    batched = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        tokenizer(texts, truncation=True, max_length=77)
        batched.append(len(texts) / (time.perf_counter() - began))
    rates["tokenizer called directly (one batch of all texts)"] = batched
    return {"rates": rates, "equal": equal, "count": len(texts)}


# ------------------------------------------------------------------------------------------------ loader


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    from polymodal.config import Config, from_dict
    from polymodal.recipes.train import prepare

    modalities = {
        "image": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 16, "channels": 1}},
        "audio": {"kind": "audio", "encoder": "audio_transformer", "processor": {"max_seconds": 1.0, "n_mels": 40}},
        "text": {"kind": "text"},
    }
    rows = []
    for workers in args.workers:
        config = from_dict(Config, {"model": {"modalities": modalities, "fusion": {"name": "concat", "dim": 64}},
                                    "data": {"name": "spoken-digits", "batch_size": 32, "num_workers": workers,
                                             "limit": args.loader_limit}})
        _, loaders, _ = prepare(config, splits=("train",))
        loader = loaders["train"]
        epochs = []
        for _ in range(args.loader_epochs):
            began = time.perf_counter()
            samples = sum(len(batch) for batch in loader)
            epochs.append(samples / (time.perf_counter() - began))
        rows.append({"workers": workers, "samples": samples, "epochs": epochs})
    return {"rows": rows}


# ------------------------------------------------------------------------------------------------ report


def clip_step_samples_per_s() -> float | None:
    """polymodal's samples/s in the committed CLIP training-step benchmark (its table's first row), if present."""
    path = RESULTS.parent / "clip_train_step.md"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("| polymodal"):
            try:
                return float(line.split("|")[4].strip())
            except (IndexError, ValueError):
                return None
    return None


def render(record: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Preprocessing throughput: polymodal vs Hugging Face and plain baselines", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch "
             f"{torch.__version__}, transformers {record['transformers']}, Pillow {record['pillow']}, "
             f"{torch.get_num_threads()} torch thread(s). Medians of {args.rounds} interleaved rounds (min–max).",
             *([f"Run in the peer environment of `benchmarks/peers/build_env.sh` (torchvision "
                f"{record['torchvision']} through `benchmarks/peers/shim.py`), so that transformers' torchvision "
                "processor runs beside the rest."] if record.get("torchvision") else []), ""]
    images = record.get("images")
    if images:
        ref = images["reference"]
        lines += [f"## Images: file → [3, 224, 224] (decode + resize + crop + normalise), {args.images} files each",
                  "", "Images/s (higher is better); parity = max |Δ| against the " + ref + ".", ""]
        with_fast = any(r["parity_fast"] for r in images["rows"])
        header = ("| pipeline | " + " | ".join(r["input"] for r in images["rows"]) + " | max \\|Δ\\| vs slow |"
                  + (" max \\|Δ\\| vs fast |" if with_fast else ""))
        lines += [header, "|---|" + "---:|" * (len(images["rows"]) + 1 + with_fast)]

        def worst(key: str, name: str) -> str:
            values = [r[key][name] for r in images["rows"] if name in r[key]]
            return f"{max(values):.2e}" if values else "–"

        for name in images["names"]:
            cells = " | ".join(spread(r["rates"][name]) for r in images["rows"])
            lines.append(f"| {name} | {cells} | {worst('parity', name)} |"
                         + (f" {worst('parity_fast', name)} |" if with_fast else ""))
        for name, reason in images["skipped"].items():
            lines.append(f"| {name} | skipped: {reason} |" + " |" * (len(images["rows"]) + with_fast))

        def rate(row: dict[str, Any], name: str) -> float:
            return statistics.median(row["rates"][name])

        workers = args.image_workers
        threaded = f"polymodal ImageProcessor.batch, {workers} threads"
        threaded_torch = f"polymodal ImageProcessor.batch, resize_backend: torch, {workers} threads"
        lines += ["", "Speed ratios (target ≥ 3× the slow processor and ≥ 1× the fast one, each at parity ≤ 1e-3 "
                  "with the one compared):", ""]
        for r in images["rows"]:
            slow = rate(r, SLOW)
            parts = [f"default (Pillow resize) {rate(r, POLY) / slow:.2f}× slow on one thread, "
                     f"{rate(r, threaded) / slow:.2f}× with `batch` on {workers} threads "
                     f"(parity vs slow {max(r['parity'][POLY], r['parity'][threaded]):.1e})"]
            torch_part = (f"resize_backend torch {rate(r, POLY_TORCH) / slow:.2f}× slow on one thread, "
                          f"{rate(r, threaded_torch) / slow:.2f}× with `batch`")
            if FAST in r["rates"]:
                fast = rate(r, FAST)
                torch_part += (f"; {rate(r, POLY_TORCH) / fast:.2f}× fast on one thread, "
                               f"{rate(r, threaded_torch) / rate(r, FAST + ', one call per list'):.2f}× with `batch` "
                               f"vs fast on the list (parity vs fast "
                               f"{max(r['parity_fast'][POLY_TORCH], r['parity_fast'][threaded_torch]):.1e})")
            parts.append(torch_part)
            parts.append(f"decode alone {rate(r, DECODE_ONLY) / slow:.2f}× slow")
            lines.append(f"- {r['input']}: " + "; ".join(parts))
        lines += ["", "Why not 3× everywhere: a pipeline that decodes with Pillow cannot run faster than Pillow's "
                  "decode alone (the `decode alone` ratio: the one-thread ceiling), and for PNG that ceiling is "
                  "below 3×. The default resizes with Pillow, exactly as the slow processor does, so on one thread "
                  "it only trims the rest (profile below); `batch` adds the cores, since Pillow releases the GIL "
                  "while it decodes and resizes. `resize_backend: torch` swaps Pillow's resize (~60 % of the time "
                  "of a 1920×1080 JPEG) for torch's uint8 antialiased kernel, as transformers' fast processor "
                  "does, with the same output as the fast processor; it differs from Pillow by one 8-bit level "
                  "(0.015 after normalisation) on ~0.3 % of pixels, so it is opt-in. Shortcuts that do less work "
                  "change the pixels beyond the 1e-3 parity with either: JPEG draft decoding and `reducing_gap` "
                  "(rows above), and cropping before resizing (`Image.resize(box=...)`: the box passes through "
                  "float32, which moves some pixels by one level)."]
        clip = clip_step_samples_per_s()
        if clip:
            slowest = min(statistics.median(r["rates"][POLY]) for r in images["rows"])
            lines += ["", f"Starvation check: the CLIP training-step benchmark consumes {clip:.2f} samples/s "
                      f"(benchmarks/results/clip_train_step.md); polymodal's slowest image path above gives "
                      f"{slowest:,.1f} images/s on one core, {slowest / clip:,.1f}× that, so one worker keeps the "
                      "model step fed."]
        lines += ["", f"Where polymodal's image time goes (cProfile over {args.images} 1920×1080 JPEGs; own time "
                  "share, cumulative ms per image):", "", "| function | calls | own time | cumulative ms/image |",
                  "|---|---:|---:|---:|", *images["profile"], ""]
    audio = record.get("audio")
    if audio:
        lines += [f"## Audio: WAV file → features, {args.clips} clips each", "",
                  "| pipeline | " + " | ".join(r["input"] for r in audio["rows"]) + " |",
                  "|---|" + "---:|" * len(audio["rows"])]
        for name in audio["names"]:
            lines.append(f"| {name} | " + " | ".join(spread(r["rates"][name]) for r in audio["rows"]) + " |")
        def cells(values: dict[str, float]) -> str:
            return ", ".join(f"{k.split('(')[1][:-1]} {v:.2e}" for k, v in values.items())

        lines += ["", "Clips/s. Parity, polymodal's wrapper vs the extractor used directly (max |Δ| of the "
                  "features), which differ only in the resampler (polymodal's windowed sinc vs scipy's polyphase "
                  "filter; at 8 kHz the 4–8 kHz band holds only each filter's leakage, which the log magnifies): "
                  + "; ".join(f"{r['input']}: {cells(r['parity'])}" for r in audio["rows"])
                  + ". Given polymodal's resampled waveform, the extractor called directly gives: "
                  + "; ".join(f"{r['input']}: {cells(r['same_wave'])}" for r in audio["rows"]) + ".", ""]
    text = record.get("text")
    if text:
        lines += [f"## Text: caption → token ids, {text['count']} captions (WordPiece, 8k vocab, max 77 tokens)", "",
                  "| pipeline | texts/s |", "|---|---:|"]
        for name, values in text["rates"].items():
            lines.append(f"| {name} | {spread(values)} |")
        lines += ["", f"Parity: polymodal's ids {'equal' if text['equal'] else 'DIFFER from'} the tokenizer's "
                  "on every caption.", ""]
    loader = record.get("loader")
    if loader:
        lines += ["## DataLoader: spoken-digits train split (image 16×16 grey + 1 s audio log-mel + text), batch 32",
                  "", "| num_workers | samples | " + " | ".join(f"epoch {i + 1} samples/s" for i in
                                                                  range(args.loader_epochs)) + " |",
                  "|---:|---:|" + "---:|" * args.loader_epochs]
        for r in loader["rows"]:
            lines.append(f"| {r['workers']} | {r['samples']} | " + " | ".join(f"{x:,.0f}" for x in r["epochs"]) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="files per size and format")
    parser.add_argument("--clips", type=int, default=16, help="audio files per kind")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--loader-epochs", type=int, default=2)
    parser.add_argument("--loader-limit", type=int, default=None, help="samples of the train split (default all)")
    parser.add_argument("--sections", default="images,audio,text,loader")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-workers", type=int, default=None,
                        help="threads of polymodal's ImageProcessor.batch row (default: the usable CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.clips, args.texts, args.rounds = 2, 2, 50, 2
        args.loader_epochs, args.loader_limit = 1, args.loader_limit or 64
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.image_workers is None:
        args.image_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    return args


def install_torchvision_shim() -> None:
    """Let torchvision import where its wheel cannot load its compiled ops (the CPU build of torch 2.13).

    In the peer environment (benchmarks/peers/build_env.sh) transformers imports torchvision as soon as it is
    installed, even for the PIL processor, so the shim goes in before transformers. A no-op without torchvision.
    The fast processor never calls the two detection operators the shim defines; its resize is pure torch.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    import shim

    shim.install()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    install_torchvision_shim()
    import PIL
    import transformers

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else argv
    record: dict[str, Any] = {"command": " ".join(["python benchmarks/preprocessing.py", *given]),
                              "transformers": transformers.__version__, "pillow": PIL.__version__}
    torchvision = sys.modules.get("torchvision")  # imported by transformers where installed (peer environment)
    if torchvision is None and importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision
        except Exception:  # its compiled ops do not load here: the fast row says why
            torchvision = None
    if torchvision is not None:
        record["torchvision"] = torchvision.__version__
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' backend / deprecation notices; the report names backends
        root = Path(tmp)
        benches = {"images": bench_images, "audio": bench_audio, "text": bench_text}
        for section in args.sections:
            started = time.perf_counter()
            if section == "loader":
                record["loader"] = bench_loader(args)
            else:
                (root / section).mkdir()
                record[section] = benches[section](args, root / section)
            print(f"[{section}: {time.perf_counter() - started:.1f} s]", file=sys.stderr, flush=True)
    text = render(record, args)
    print(text)
    out = Path(args.out)
    if not args.quick or out != RESULTS:  # a smoke run never replaces the committed results
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    record["report"] = text
    return record


if __name__ == "__main__":
    main()
