"""The manifest row format of the generation data sets (captioning, VQA, transcription, chat) and the
question-only ("blind") VQA baseline. See docs/DATA.md, "Generation manifests".

One JSON object per line, every task alike:

- ``id``: unique string; ``task``: "caption" | "vqa" | "transcription" | "chat";
- attachments: ``image`` and / or ``audio``, file paths relative to the manifest's folder;
- ``messages``: the conversation, a list of ``{"role": "user" | "assistant", "content": str}``, user and
  assistant alternating; the placeholders ``<image>`` / ``<audio>`` mark where the attachments go (here
  at the start of the first user turn, image before audio); the last message is the assistant's target;
- ``answers``: every acceptable reference for the last turn (captions, VQA answers, the transcript), the
  target first; metrics score predictions against all of them;
- VQA rows add ``question`` (the text without placeholders) and ``question_type`` (for per-type results and
  the blind baseline).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError

TASKS = ("caption", "vqa", "transcription", "chat")
PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}


def chat_row(
    row_id: str,
    task: str,
    prompt: str,
    answers: Sequence[str],
    attachments: Mapping[str, Any],
    history: Sequence[tuple[str, str]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """One manifest row. ``history``: earlier (user, assistant) turns; the placeholders of
    ``attachments`` (image first, then audio) open the first user turn; the last turn is ``prompt`` →
    ``answers[0]``. ``extra`` fields are added as given (e.g. question, question_type)."""
    if task not in TASKS:
        raise ValueError(f"unknown generation task {task!r}; tasks: {TASKS}")
    if not answers:
        raise ValueError(f"row {row_id!r} needs at least one answer")
    kinds = [k for k in PLACEHOLDERS if k in attachments]
    turns = [*history, (prompt, answers[0])]
    messages = []
    for k, (user, assistant) in enumerate(turns):
        content = "\n".join([PLACEHOLDERS[kind] for kind in kinds] + [user]) if k == 0 else user
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": assistant}]
    row: dict[str, Any] = {"id": row_id, "task": task, **{k: attachments[k] for k in kinds}}
    row["messages"] = messages
    row["answers"] = list(answers)
    row.update(extra)
    return row


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON Lines (UTF-8, one object per line) → the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; raises DataError naming the file and line of a malformed row."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg}); fix or delete the line") from err
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object")
        rows.append(row)
    return rows


def _answer(text: str) -> str:
    return " ".join(str(text).lower().split())


def blind_baseline(
    train_rows: Sequence[Mapping[str, Any]], eval_rows: Sequence[Mapping[str, Any]], by: str = "question_type"
) -> dict[str, Any]:
    """Question-only baseline: answer every question with the most frequent training answer of its group.

    ``by="question_type"`` groups by the row's ``question_type``; ``by="question"`` by the exact question
    text (a stronger blind model), falling back to the type's majority for questions unseen in training.
    Scored by exact match (lower-cased, whitespace-collapsed) against each eval row's ``answers``.
    Returns {"accuracy", "per_type": {type: accuracy}, "chance": {type: 1 / #distinct train answers},
    "majority": {group: answer}, "n": #eval rows}. Raises DataError when a row lacks a needed field.
    """
    if by not in ("question_type", "question"):
        raise ValueError(f"by must be 'question_type' or 'question', got {by!r}")
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        for i, row in enumerate(rows):
            missing = [k for k in ("question_type", "question", "answers") if k not in row]
            if missing:
                raise DataError(f"blind baseline: {name} row {i} ({row.get('id', '?')}) lacks {missing}")
    if not eval_rows:
        raise DataError("blind baseline: no evaluation rows")
    counts: dict[str, Counter] = defaultdict(Counter)
    type_counts: dict[str, Counter] = defaultdict(Counter)
    for row in train_rows:
        answer = _answer(row["answers"][0])
        type_counts[row["question_type"]][answer] += 1
        counts[row[by]][answer] += 1
    majority = {key: c.most_common(1)[0][0] for key, c in counts.items()}
    type_majority = {key: c.most_common(1)[0][0] for key, c in type_counts.items()}
    correct: dict[str, list[float]] = defaultdict(list)
    for row in eval_rows:
        guess = majority.get(row[by], type_majority.get(row["question_type"], ""))
        correct[row["question_type"]].append(float(guess in {_answer(a) for a in row["answers"]}))
    total = sum(sum(v) for v in correct.values())
    return {
        "accuracy": total / len(eval_rows),
        "per_type": {t: sum(v) / len(v) for t, v in sorted(correct.items())},
        "chance": {t: 1.0 / len(c) for t, c in sorted(type_counts.items())},
        "majority": majority,
        "n": len(eval_rows),
    }
