"""Generation versions of the built-in spoken-digits set: captions, VQA, transcription and a two-turn chat.

Built from the packaged spoken-digits splits (:mod:`.spoken_digits`: real 8×8 handwritten digits and real
8 kHz spoken digits, honest splits), so they stay offline and keep its split guarantees (held-out speakers,
disjoint image indices). Rows follow the generation manifest format (:mod:`.generation_format`):

| task | attachments | prompt → target (``answers``) |
|---|---|---|
| caption | image | "describe the picture." → "a handwritten seven" (+ "a handwritten 7", "the digit seven written by hand") |
| transcription | audio | "transcribe the recording." → "seven" |
| vqa | image | "what digit is this?" → "7"; "is it even?" → "no"; "what is this digit plus two?" → "9" |
| chat | image + audio | "what digit is in the picture?" → "seven", then "do the picture and the recording show the same digit?" → "yes" / "no" |

Caption rows hold each distinct image once; the other tasks have one row (VQA: three) per split row.
VQA answers are single, in the short VQA style (digits, yes / no); ``question_type`` is "digit", "parity"
or "plus_two". Chat: exactly half the rows of a split (a seeded choice) pair the image with a recording of
a different digit from the same split, so "yes" and "no" are equally frequent; ``question_type`` is
"same_digit". Digits are near-uniform per split, so the blind baselines are ~0.1 (digit, plus_two) and
~0.5 (parity, same_digit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from .generation_format import TASKS, chat_row, write_jsonl
from .spoken_digits import WORDS, SpokenDigits, _archive, _recording

SPLITS = SpokenDigits.splits
SAMPLE_RATE = SpokenDigits.sample_rate
CAPTION_PROMPT = "describe the picture."
TRANSCRIBE_PROMPT = "transcribe the recording."
VQA_QUESTIONS = {
    "digit": ("what digit is this?", lambda d: str(d)),
    "parity": ("is it even?", lambda d: "yes" if d % 2 == 0 else "no"),
    "plus_two": ("what is this digit plus two?", lambda d: str(d + 2)),
}
CHAT_FIRST = "what digit is in the picture?"
CHAT_QUESTION = "do the picture and the recording show the same digit?"


def _split_items(split: str, limit: int | None) -> list[dict[str, Any]]:
    """(image index, audio index, digit, names) of one split; ``limit`` keeps evenly spaced rows (as
    ``data.limit`` does for the classification set, so every digit stays present)."""
    if split not in SPLITS:
        raise KeyError(f"spoken-digits has no split {split!r}; splits: {', '.join(SPLITS)}")
    data = _archive()
    audio_idx, image_idx = data[f"{split}_audio_index"], data[f"{split}_image_index"]
    positions = range(len(audio_idx))
    if limit is not None and limit < len(audio_idx):
        positions = [(i * len(audio_idx)) // limit for i in range(limit)]
    items = []
    for p in positions:
        a, i = int(audio_idx[p]), int(image_idx[p])
        items.append(
            {"image_index": i, "audio_index": a, "digit": int(data["audio_digits"][a]),
             "image_name": f"img{i:04d}", "audio_name": str(data["audio_names"][a])}
        )  # fmt: skip
    return items


def _rows(split: str, task: str, items: list[dict[str, Any]], seed: int) -> list[tuple[dict, dict]]:
    """(row with attachment keys as placeholders, {"image": item, "audio": item}) pairs."""
    if task not in TASKS:
        raise KeyError(f"unknown generation task {task!r}; tasks: {', '.join(TASKS)}")
    out = []
    if task == "caption":  # one row per distinct image (an image can pair with two recordings)
        first = {}
        for it in items:
            first.setdefault(it["image_index"], it)
        for it in first.values():
            word, d = WORDS[it["digit"]], it["digit"]
            answers = [f"a handwritten {word}", f"a handwritten {d}", f"the digit {word} written by hand"]
            row = chat_row(it["image_name"], task, CAPTION_PROMPT, answers, {"image": None})
            out.append((row, {"image": it}))
    elif task == "transcription":
        for it in items:
            row = chat_row(it["audio_name"], task, TRANSCRIBE_PROMPT, [WORDS[it["digit"]]], {"audio": None})
            out.append((row, {"audio": it}))
    elif task == "vqa":
        for it in items:
            for qtype, (question, answer) in VQA_QUESTIONS.items():
                row = chat_row(f"{it['image_name']}-{it['audio_name']}-{qtype}", task, question,
                               [answer(it["digit"])], {"image": None}, question=question, question_type=qtype)  # fmt: skip
                out.append((row, {"image": it}))
    else:  # chat: half the rows (seeded) get a recording of another digit from the same split
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), 7]))
        different = np.zeros(len(items), dtype=bool)
        different[rng.permutation(len(items))[: len(items) // 2]] = True
        for k, it in enumerate(items):
            audio_item = it
            if different[k]:
                others = [o for o in items if o["digit"] != it["digit"]]
                audio_item = others[int(rng.integers(len(others)))]
            answer = "no" if different[k] else "yes"
            history = [(CHAT_FIRST, WORDS[it["digit"]])]
            row = chat_row(f"{it['image_name']}-{audio_item['audio_name']}-{k:04d}", task, CHAT_QUESTION, [answer],
                           {"image": None, "audio": None}, history=history,
                           question=CHAT_QUESTION, question_type="same_digit")  # fmt: skip
            out.append((row, {"image": it, "audio": audio_item}))
    return out


def generation_records(split: str, task: str, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of one split and task, in memory: the manifest fields with ``image`` as uint8 [8, 8] (ink is
    bright) and ``audio`` as (int16 [S], 8000). Raises KeyError for an unknown split or task."""
    rows = []
    for row, sources in _rows(split, task, _split_items(split, limit), seed):
        if "image" in sources:
            row["image"] = _archive()["images"][sources["image"]["image_index"]]
        if "audio" in sources:
            row["audio"] = (_recording(sources["audio"]["audio_index"]), SAMPLE_RATE)
        rows.append(row)
    return rows


def export_generation(
    out_dir: str | Path,
    tasks: tuple[str, ...] = TASKS,
    splits: tuple[str, ...] = SPLITS,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Path]]:
    """Write ``images/img<index>.png`` (8×8 grayscale), ``audio/<name>.wav`` (8 kHz PCM-16) and
    ``<task>_<split>.jsonl`` under ``out_dir`` (paths relative to it, the same file names as
    ``export_dataset("spoken-digits", ...)``). Returns {task: {split: path}}."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, Path]] = {}
    for split in splits:
        items = _split_items(split, limit)
        for task in tasks:
            rows = []
            for row, sources in _rows(split, task, items, seed):
                if "image" in sources:
                    row["image"] = f"images/{sources['image']['image_name']}.png"
                    if not (out / row["image"]).exists():
                        pixels = _archive()["images"][sources["image"]["image_index"]]
                        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(out / row["image"])
                if "audio" in sources:
                    row["audio"] = f"audio/{sources['audio']['audio_name']}.wav"
                    if not (out / row["audio"]).exists():
                        wave = _recording(sources["audio"]["audio_index"])
                        sf.write(out / row["audio"], wave, SAMPLE_RATE, subtype="PCM_16")
                rows.append(row)
            paths.setdefault(task, {})[split] = write_jsonl(rows, out / f"{task}_{split}.jsonl")
    return paths
