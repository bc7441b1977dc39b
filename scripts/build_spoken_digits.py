"""Build the packaged "spoken digits" data set (src/polymodal/data/builtin/spoken_digits.npz + .json).

Sources (both real, both public):
- images: scikit-learn's bundled handwritten digits (1,797 8×8 scans, UCI "Optical Recognition of Handwritten
  Digits"), read with ``sklearn.datasets.load_digits`` — scikit-learn is needed only by this script;
- audio: the Free Spoken Digit Dataset (3,000 8 kHz WAVs ``{digit}_{speaker}_{take}.wav``, CC BY-SA 4.0).

Splits (seeded, reproducible):
- audio by speaker: test = theo, val = nicolas, train = george, jackson, lucas, yweweler (no speaker shared);
- images: disjoint indices per split, stratified by digit, in the same 4:1:1 proportion as the audio;
- one sample per recording: it is paired with an image of the same digit from its split (images cycle, each
  used 1-2 times) and a short text drawn from varied templates.

Usage: python scripts/build_spoken_digits.py [--fsdd /work/shared/data/fsdd/recordings] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "data" / "builtin"
SPEAKER_SPLITS = {
    "train": ["george", "jackson", "lucas", "yweweler"],
    "val": ["nicolas"],
    "test": ["theo"],
}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a handwritten {word}",
    "the digit {digit} written by hand",
    "someone says {word}",
    "a spoken {word}",
    "the number {word}",
    "a scanned image of a {digit}",
    "a recording of a person saying {word}",
    "the digit {word}",
    "a small picture of the number {digit}",
    "{word}, written and spoken",
    "a pen-drawn {word}",
    "the numeral {digit}",
]


def parse_name(path: Path) -> tuple[int, str, int]:
    digit, speaker, take = path.stem.split("_")
    return int(digit), speaker, int(take)


def split_images(digits: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint image indices per split, stratified by digit, proportional to the audio (4:1:1)."""
    weights = {split: len(speakers) for split, speakers in SPEAKER_SPLITS.items()}
    total = sum(weights.values())
    parts: dict[str, list[int]] = {split: [] for split in SPEAKER_SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(digits == digit))
        n_val = round(len(idx) * weights["val"] / total)
        n_test = round(len(idx) * weights["test"] / total)
        parts["test"] += idx[:n_test].tolist()
        parts["val"] += idx[n_test : n_test + n_val].tolist()
        parts["train"] += idx[n_test + n_val :].tolist()
    return {split: np.array(sorted(v), dtype=np.int16) for split, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd", default="/work/shared/data/fsdd/recordings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT_DIR))
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    # 0..16 ink levels → uint8 0..255 (white ink on black, as scanned).
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    image_digits = digits.target.astype(np.int8)

    paths = sorted(Path(args.fsdd).glob("*.wav"), key=lambda p: parse_name(p))
    if len(paths) != 3000:
        raise SystemExit(f"expected 3000 FSDD recordings in {args.fsdd}, found {len(paths)}")
    blobs, offsets, names, audio_digits, speakers = [], [0], [], [], []
    for path in paths:
        wave, rate = sf.read(path, dtype="int16")
        assert rate == 8000 and wave.ndim == 1, path
        buffer = io.BytesIO()
        sf.write(buffer, wave, rate, format="FLAC", subtype="PCM_16")  # lossless: decodes to the same int16
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        offsets.append(offsets[-1] + len(blobs[-1]))
        digit, speaker, _ = parse_name(path)
        names.append(path.stem)
        audio_digits.append(digit)
        speakers.append(speaker)
    audio_digits_arr, speakers_arr = np.array(audio_digits, dtype=np.int8), np.array(speakers)

    image_splits = split_images(image_digits, rng)
    arrays: dict[str, np.ndarray] = {
        "images": images,
        "image_digits": image_digits,
        "audio_flac": np.concatenate(blobs),
        "audio_offsets": np.array(offsets, dtype=np.int64),
        "audio_names": np.array(names),
        "audio_digits": audio_digits_arr,
        "audio_speakers": speakers_arr,
    }
    sizes = {}
    for split, split_speakers in SPEAKER_SPLITS.items():
        audio_idx = np.flatnonzero(np.isin(speakers_arr, split_speakers))
        audio_idx = rng.permutation(audio_idx)
        pool = {d: rng.permutation(image_splits[split][image_digits[image_splits[split]] == d]).tolist() for d in range(10)}
        cursor = dict.fromkeys(range(10), 0)
        image_idx, texts = [], []
        for a in audio_idx:
            digit = int(audio_digits_arr[a])
            image_idx.append(pool[digit][cursor[digit] % len(pool[digit])])  # cycle: every image used evenly
            cursor[digit] += 1
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            texts.append(template.format(word=WORDS[digit], digit=digit))
        order = np.argsort(audio_idx, kind="stable")  # store rows in recording order: easy to read
        arrays[f"{split}_audio_index"] = audio_idx[order].astype(np.int16)
        arrays[f"{split}_image_index"] = np.array(image_idx, dtype=np.int16)[order]
        arrays[f"{split}_text"] = np.array(texts)[order]
        sizes[split] = len(audio_idx)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "spoken_digits.npz", **arrays)
    meta = {
        "name": "spoken-digits",
        "version": 1,
        "seed": args.seed,
        "sizes": sizes,
        "speakers": SPEAKER_SPLITS,
        "image_counts": {split: int(len(v)) for split, v in image_splits.items()},
        "templates": TEMPLATES,
        "labels": [str(d) for d in range(10)],
        "sample_rate": 8000,
        "image_shape": [8, 8],
    }
    (out / "spoken_digits.json").write_text(json.dumps(meta, indent=2))
    size_mb = (out / "spoken_digits.npz").stat().st_size / 1e6
    print(f"wrote {out / 'spoken_digits.npz'} ({size_mb:.1f} MB): {sizes}, images {meta['image_counts']}")


if __name__ == "__main__":
    main()
