"""Generation versions of spoken-digits: captions, VQA, transcription and the same-digit chat, in memory and
exported as files + JSONL manifests."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from polymodal.data.builtin.generation_format import TASKS, blind_baseline, chat_row, read_jsonl, write_jsonl
from polymodal.data.builtin.spoken_digits import WORDS
from polymodal.data.builtin.spoken_digits_generation import (
    CHAT_QUESTION,
    export_generation,
    generation_records,
)
from polymodal.data.errors import DataError

LIMIT = 20


def _digit_of_audio(name: str) -> int:
    return int(name.split("/")[-1].split("_")[0])  # FSDD names: <digit>_<speaker>_<take>


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_generation")
    return out, export_generation(out, limit=LIMIT)


def test_caption_and_transcription_rows():
    captions = generation_records("test", "caption", limit=LIMIT)
    assert 0 < len(captions) <= LIMIT and len({r["id"] for r in captions}) == len(captions)
    for row in captions:
        assert row["image"].shape == (8, 8) and row["image"].dtype == np.uint8
        word = row["answers"][0].removeprefix("a handwritten ")
        assert word in WORDS and row["answers"][1] == f"a handwritten {WORDS.index(word)}"
        assert row["messages"][0]["content"] == "<image>\ndescribe the picture."
    transcripts = generation_records("test", "transcription", limit=LIMIT)
    assert len(transcripts) == LIMIT
    for row in transcripts:
        wave, rate = row["audio"]
        assert rate == 8000 and wave.dtype == np.int16 and wave.size > 0
        assert row["answers"] == [WORDS[_digit_of_audio(row["id"])]]
        assert "theo" in row["id"]  # the test split keeps its held-out speaker
    assert {r["answers"][0] for r in transcripts} == set(WORDS)  # evenly spaced rows cover every digit


def test_vqa_answers_follow_the_digit():
    rows = generation_records("val", "vqa", limit=LIMIT)
    assert len(rows) == 3 * LIMIT
    for row in rows:
        digit = _digit_of_audio(row["id"].split("-")[1])  # the image shows the recording's digit
        expected = {"digit": str(digit), "parity": "no" if digit % 2 else "yes", "plus_two": str(digit + 2)}
        assert row["answers"] == [expected[row["question_type"]]]
        assert row["messages"][-1] == {"role": "assistant", "content": row["answers"][0]}


def test_chat_is_balanced_and_pairs_the_right_digits():
    rows = generation_records("train", "chat", limit=LIMIT)
    answers = [r["answers"][0] for r in rows]
    assert answers.count("yes") == answers.count("no") == LIMIT // 2
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
        assert row["messages"][0]["content"].startswith("<image>\n<audio>\n")
        assert row["messages"][2]["content"] == CHAT_QUESTION
        image_digit = WORDS.index(row["messages"][1]["content"])
        audio_digit = _digit_of_audio(row["id"].split("-")[1])
        assert (image_digit == audio_digit) == (row["answers"][0] == "yes")
    assert len({r["id"] for r in rows}) == len(rows)


def test_export_round_trips_to_the_in_memory_rows(exported):
    out, paths = exported
    assert set(paths) == set(TASKS) and all(set(p) == {"train", "val", "test"} for p in paths.values())
    for task in TASKS:
        in_memory = generation_records("val", task, limit=LIMIT)
        rows = read_jsonl(paths[task]["val"])
        assert [r["id"] for r in rows] == [r["id"] for r in in_memory]
        for row, mem in zip(rows, in_memory):
            assert row["messages"] == mem["messages"] and row["answers"] == mem["answers"]
            if "image" in row:  # lossless PNG: the same pixels
                np.testing.assert_array_equal(np.asarray(Image.open(out / row["image"])), mem["image"])
            if "audio" in row:  # 16-bit WAV: the same samples
                wave, rate = sf.read(out / row["audio"], dtype="int16")
                np.testing.assert_array_equal(wave, mem["audio"][0])
                assert rate == mem["audio"][1]


def test_blind_baseline_on_digit_vqa_is_at_chance(exported):
    _, paths = exported
    result = blind_baseline(read_jsonl(paths["vqa"]["train"]), read_jsonl(paths["vqa"]["test"]))
    assert result["per_type"]["digit"] <= 0.1 + 0.05 and result["per_type"]["plus_two"] <= 0.1 + 0.05
    assert result["per_type"]["parity"] <= 0.5 + 0.05
    chat = blind_baseline(read_jsonl(paths["chat"]["train"]), read_jsonl(paths["chat"]["test"]))
    assert chat["accuracy"] == pytest.approx(0.5)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(KeyError, match="no split"):
        generation_records("dev", "vqa")
    with pytest.raises(KeyError, match="unknown generation task"):
        generation_records("test", "summarise", limit=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{not json\n')
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(bad)
    with pytest.raises(DataError, match="lacks"):
        blind_baseline([{"id": "x", "question": "q"}], [{"id": "y", "question": "q", "answers": ["a"]}])


def test_chat_row_format_round_trip(tmp_path):
    row = chat_row("r1", "chat", "and now?", ["ja, grün"], {"audio": "a.wav", "image": "i.png"},
                   history=[("what is it?", "ein Hund")])  # fmt: skip
    assert row["messages"][0]["content"] == "<image>\n<audio>\nwhat is it?"
    assert row["messages"][-1] == {"role": "assistant", "content": "ja, grün"}
    assert read_jsonl(write_jsonl([row], tmp_path / "m.jsonl")) == [row]  # UTF-8 survives
