"""`polymodal demo --task caption | vqa | chat`: a vision/audio-language model trained from scratch on a CPU, next
to the baselines that say whether it looks at its attachments.

- ``vqa``: the procedural scenes set (coloured shapes; questions about colour, shape, count, left / right, nearest
  with balanced answers). Baselines: the question-only ("blind") model — the most frequent training answer per
  question type and per exact question text — and chance. The model must beat the blind baseline by more than the
  width of its bootstrap CI to have learned to read the picture. Its training split mixes in captions of other
  scenes (``data.builtin.scenes.vqa_training_rows``).
- ``caption``: the scenes set's captions (objects left to right). Baseline: a constant caption (the most frequent
  training reference), scored with the same COCO metrics.
- ``chat``: spoken digits, a two-turn conversation about a handwritten digit and a recording ("what digit is in
  the picture?" then "do the picture and the recording show the same digit?"). Baselines: chance (0.5 on the
  yes / no turn) and the majority answer.

Every model: a small CNN per attachment (trained, not frozen: from scratch there is nothing to freeze; the
scenes' image CNN with 2-D positions on an 8 × 8 token grid) → MLP connector → a tiny Llama decoder with a byte-level BPE tokenizer trained on the training texts. Results go to
out/results.json and out/results.md; the run directory (best/ usable with ``polymodal generate``) to out/run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ...config import RunConfig, from_dict
from ...files import atomic_write_text
from ...jsonable import jsonable

TASKS = {"caption": "captioning", "vqa": "vqa", "chat": "chat"}
# The 8 kHz recordings as log-mels at their own rate (no resampling), as the other spoken-digits demos do.
AUDIO_PROCESSOR = {"sample_rate": 8000, "n_fft": 200, "hop_length": 80, "max_seconds": 1.0, "n_mels": 32}


def _scene_image(quick: bool) -> dict[str, Any]:
    # The full 64 px canvas (at 32 px a 10 px circle, square and triangle blur into the same blob), three stride-2
    # stages: 8 × 8 = 64 tokens, each seeing an 8 × 8 px cell, so that two objects rarely share a token. Positions
    # (ImageCNN positions=True) give every token its place in the grid: the decoder reads the tokens as a
    # sequence, and a conv net's features alone do not say where they are. Measured on the VQA demo (exact match,
    # 300 test questions): 4 × 4 tokens without positions 0.44, with positions 0.47, 8 × 8 with positions 0.51.
    # --quick: 32 px, the same 8 × 8 grid from two stride-2 stages.
    if quick:
        return {"encoder": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 32},
                            "options": {"channels": [16, 32, 32], "positions": True}},
                "connector": "mlp", "freeze_encoder": False}
    return {"encoder": {"kind": "image", "encoder": "image_cnn", "processor": {"image_size": 64},
                        "options": {"channels": [16, 32, 64, 64], "positions": True}},
            "connector": "mlp", "freeze_encoder": False}


# Epochs and peak learning rates per demo (full, --quick). 3e-3, the rate of the first version, trained the
# answer prior and nothing visual (val loss flat at the question-only level for 10 epochs); 1e-3 and 5e-4 learn to
# read the picture, 5e-4 best (the VQA model overfits the 6,000 scenes' rows from the 5th epoch at 1e-3).
SCHEDULES = {"vqa": ((3, 5e-4), (3, 1e-3)), "caption": ((6, 5e-4), (4, 1e-3)), "chat": ((10, 3e-3), (6, 1e-3))}
# Rows (scenes; chat: conversations) per split of the --quick runs, each well under a minute on 2 cores (the full
# runs use the sets' own sizes): vqa ~25 s (at about chance), caption ~27 s (CIDEr-D 1.69 vs 1.12 for the constant
# caption), chat ~17 s (answers, at chance).
QUICK_ROWS = {"vqa": 800, "caption": 2000, "chat": 500}


def demo_config(task: str, out_dir: str, *, quick: bool = False, epochs: int | None = None,
                seed: int = 0) -> RunConfig:
    """The demo recipe of ``task`` (caption / vqa / chat) as a run config."""
    name = TASKS[task]
    schedule = SCHEDULES[task][1 if quick else 0]
    if task == "chat":
        modalities = {
            "image": {"encoder": {"kind": "image", "encoder": "image_cnn",
                                  "processor": {"image_size": 16, "channels": 1},
                                  "options": {"channels": [32, 64, 64]}},
                      "connector": "mlp", "freeze_encoder": False},
            "audio": {"encoder": {"kind": "audio", "encoder": "audio_cnn", "processor": AUDIO_PROCESSOR},
                      "connector": "resampler", "connector_options": {"num_tokens": 8, "depth": 1},
                      "freeze_encoder": False},
        }
        data = {"name": "spoken-digits", "limit": QUICK_ROWS[task] if quick else None}
    else:
        modalities = {"image": _scene_image(quick)}
        data = {"name": "scenes", "limit": QUICK_ROWS[task] if quick else None}
    hidden = 64 if quick else 128
    return from_dict(RunConfig, {
        "task": name,
        "model": {
            "modalities": modalities,
            "decoder": {"preset": "tiny-llama", "options": {"hidden_size": hidden, "intermediate_size": 2 * hidden,
                                                            "num_hidden_layers": 2, "num_attention_heads": 4,
                                                            "num_key_value_heads": 2}},
            "tokenizer": {"vocab_size": 400},
        },
        "data": {**data, "batch_size": 32, "eval_batch_size": 100},
        # best/ is the epoch of the lowest val loss (the quick metric on 300 val rows plateaus at the blind
        # answers for several epochs, and a strict "max" would then keep the first epoch)
        "train": {"epochs": epochs or schedule[0], "lr": schedule[1], "weight_decay": 0.01, "warmup_ratio": 0.05,
                  "seed": seed, "progress": False, "out_dir": out_dir, "log_every": 0},
        "generate": {"max_new_tokens": 8 if task != "caption" else 40, "validate_samples": 0 if quick else 100,
                     "bootstrap": 1000},
    })


def constant_caption_baseline(train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most frequent training caption (first reference), said for every test image, scored with the COCO
    caption metrics: what a model earns without looking."""
    from ...metrics.generation import caption_metrics

    caption = Counter(row["answers"][0] for row in train_rows).most_common(1)[0][0]
    results = caption_metrics([caption] * len(test_rows), [row["answers"] for row in test_rows])
    return {"caption": caption, "metrics": {name: float(r.value) for name, r in results.items()}}


def majority_answer_baseline(train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most frequent training answer for every test row (exact match)."""
    from ...metrics.generation import exact_match

    answer = Counter(row["answers"][0] for row in train_rows).most_common(1)[0][0]
    return {"answer": answer,
            "exact_match": float(exact_match([answer] * len(test_rows), [r["answers"] for r in test_rows]).value)}


def _fmt(entry: dict[str, float]) -> str:
    if "ci_low" in entry:
        return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
    return f"{entry['value']:.3f}"


def run_generation_demo(task: str, out: str | Path, *, quick: bool = False, epochs: int | None = None,
                        seed: int = 0, verbose: bool = True) -> dict[str, Any]:
    """Train, evaluate, compare with the baselines; print and write the table. Returns the results dict."""
    from ...tasks.generation import load_rows
    from ..train import train

    if task not in TASKS:
        raise ValueError(f"unknown generation demo {task!r}; choose one of {sorted(TASKS)}")
    out = Path(out)
    config = demo_config(task, str(out / "run"), quick=quick, epochs=epochs, seed=seed)
    summary = train(config, run_dir=out / "run", verbose=verbose)
    test = summary["test"]
    train_rows, test_rows = load_rows(config, "train")[0], load_rows(config, "test")[0]
    rows: list[tuple[str, str, str]] = []  # (metric, model, baseline)
    captions = 0
    results: dict[str, Any] = {"task": config.task, "test": test, "train_seconds": summary["train_seconds"],
                               "config": summary["config"]}
    if task == "vqa":
        blind = test["blind_baseline"]
        captions = sum("question_type" not in r for r in train_rows)  # the caption rows mixed into the training split
        train_rows = [r for r in train_rows if "question_type" in r]
        chance = sum(1.0 / len(set(r["answers"][0] for r in train_rows if r["question_type"] == t)) *
                     sum(r["question_type"] == t for r in test_rows) for t in {r["question_type"] for r in test_rows})
        chance /= len(test_rows)
        model_em = test["metrics"]["exact_match"]
        results["baselines"] = {"blind_by_type": blind["question_type"]["accuracy"],
                                "blind_by_question": blind["question"]["accuracy"], "chance": chance}
        best_blind = max(blind["question_type"]["accuracy"], blind["question"]["accuracy"])
        results["beats_blind_outside_ci"] = bool(model_em.get("ci_low", model_em["value"]) > best_blind)
        rows.append(("exact match (overall)", _fmt(model_em),
                     f"blind {best_blind:.3f}, chance {chance:.3f}"))
        for qtype, entry in test["per_type"].items():
            rows.append((f"  {qtype} (n={entry['n']})", f"{entry['exact_match']:.3f}",
                         f"blind {blind['question']['per_type'].get(qtype, float('nan')):.3f}, chance "
                         f"{blind['question']['chance'].get(qtype, float('nan')):.3f}"))
    elif task == "caption":
        constant = constant_caption_baseline(train_rows, test_rows)
        results["baselines"] = {"constant_caption": constant}
        for name in ("cider_d", "bleu_4", "bleu_1", "rouge_l_coco", "meteor"):
            if name in test["metrics"]:
                rows.append((name, _fmt(test["metrics"][name]),
                             f"constant {constant['metrics'].get(name, float('nan')):.3f}"))
    else:
        majority = majority_answer_baseline(train_rows, test_rows)
        results["baselines"] = {"majority": majority, "chance": 0.5}
        rows.append(("exact match (same digit? yes / no)", _fmt(test["metrics"]["exact_match"]),
                     f"majority {majority['exact_match']:.3f}, chance 0.500"))
    lines = [f"# polymodal demo --task {task}{' --quick' if quick else ''}", "",
             f"{config.task} on {config.data.name}: {len(train_rows)} train"
             f"{f' questions + {captions} captions' if task == 'vqa' else ' rows'} / {test['n']} test rows, "
             f"{summary['train_seconds']:.0f} s of training; 95% bootstrap CIs in brackets", "",
             "| metric | model | baselines |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    examples = test.get("examples") or []
    if examples:
        lines += ["", "examples (prediction → references):"]
        lines += [f"- {e.get('question', '')} {e['prediction']!r} → {e['references']}" for e in examples[:5]]
    eff = test.get("efficiency") or {}
    if eff:
        lines += ["", f"generation: {eff.get('tokens_per_second', 0):.0f} tokens/s, time to first token "
                  f"{eff.get('time_to_first_token_ms', 0):.1f} ms (this machine, batch {config.data.eval_batch_size})"]
    text = "\n".join(lines)
    if verbose:
        print(text)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.md", text + "\n")
    atomic_write_text(out / "results.json", json.dumps(jsonable(results), indent=2, allow_nan=False))
    return results
