"""The procedural scenes set: deterministic files, answers that follow the scene graph, pixels that show it,
and questions balanced so that a question-only (blind) model stays at chance."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from polymodal.data.builtin.generation_format import blind_baseline, read_jsonl
from polymodal.data.builtin.scenes import (
    ANSWERS,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    SceneConfig,
    SceneObject,
    build_scenes,
    generate_split,
    generate_training_split,
    question_strings,
    render_scene,
    scene_captions,
)

SIZES = {"train": 20, "val": 5, "test": 10}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return out, build_scenes(out, SIZES, seed=3)


def _answer(question: str, objects: list[dict]) -> str:
    """An independent reading of the scene graph (not the generator's code)."""
    names = {f"{o['color']} {o['shape']}": o for o in objects}
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        (obj,) = [o for o in objects if o["shape"] == m[1]]
        return obj["color"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        (obj,) = [o for o in objects if o["color"] == m[1]]
        return obj["shape"]
    if m := re.fullmatch(r"how many (\w+)s are there\?", question):
        return str(sum(o["shape"] == m[1] for o in objects))
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return str(sum(o["color"] == m[1] for o in objects))
    if m := re.fullmatch(r"is the (\w+ \w+) (left|right) of the (\w+ \w+)\?", question):
        a, b = names[m[1]], names[m[3]]
        return "yes" if (a["x"] < b["x"]) == (m[2] == "left") else "no"
    if m := re.fullmatch(r"what color is the object nearest to the (\w+ \w+)\?", question):
        a = names[m[1]]
        others = sorted(objects, key=lambda o: math.hypot(o["x"] - a["x"], o["y"] - a["y"]))
        return others[1]["color"]  # others[0] is a itself
    raise AssertionError(f"unparsed question {question!r}")


def test_build_is_deterministic_and_seeded(built, tmp_path):
    out, paths = built
    again = build_scenes(tmp_path / "again", SIZES, seed=3)
    for split, files in paths.items():
        for kind, path in files.items():
            assert path.read_bytes() == again[split][kind].read_bytes(), (split, kind)
    for name in ("train-00000.png", "test-00009.png"):
        assert (out / "images" / name).read_bytes() == (tmp_path / "again" / "images" / name).read_bytes()
    other = build_scenes(tmp_path / "other", {"train": 5}, seed=4)
    assert read_jsonl(other["train"]["scenes"])[0]["objects"] != read_jsonl(paths["train"]["scenes"])[0]["objects"]


def test_answers_follow_the_scene_graph(built):
    out, paths = built
    for split in SIZES:
        graphs = {g["id"]: g for g in read_jsonl(paths[split]["scenes"])}
        rows = read_jsonl(paths[split]["vqa"])
        assert len(graphs) == SIZES[split] and len(rows) == SIZES[split]  # one question per scene by default
        for row in rows:
            graph = graphs[row["scene_id"]]
            assert row["answers"] == [_answer(row["question"], graph["objects"])], row
            assert row["answers"][0] in ANSWERS[row["question_type"]]
            assert row["question"] in question_strings(row["question_type"])


def test_manifest_rows_are_in_the_generation_format(built):
    out, paths = built
    for row in read_jsonl(paths["val"]["vqa"]):
        assert (out / row["image"]).is_file() and row["task"] == "vqa"
        assert row["messages"] == [
            {"role": "user", "content": f"<image>\n{row['question']}"},
            {"role": "assistant", "content": row["answers"][0]},
        ]
    graphs = {g["id"]: g for g in read_jsonl(paths["val"]["scenes"])}
    for row in read_jsonl(paths["val"]["caption"]):
        assert row["task"] == "caption" and len(row["answers"]) == 3
        assert row["messages"][-1]["content"] == row["answers"][0]
        objects = sorted(graphs[row["id"]]["objects"], key=lambda o: o["x"])
        positions = [row["answers"][0].index(f"{o['color']} {o['shape']}") for o in objects]
        assert positions == sorted(positions)  # the caption lists the objects left to right


def test_pixels_show_the_scene_graph(built):
    out, paths = built
    config = SceneConfig()
    for graph in read_jsonl(paths["train"]["scenes"]):
        pixels = np.asarray(Image.open(out / graph["image"]).convert("RGB"))
        assert pixels.shape == (config.canvas, config.canvas, 3)
        objects = graph["objects"]
        assert config.min_objects <= len(objects) <= config.max_objects
        assert len({(o["color"], o["shape"]) for o in objects}) == len(objects)  # no pair twice
        for o in objects:
            assert tuple(pixels[o["y"], o["x"]]) == COLORS[o["color"]]  # the centre has the object's colour
        for a, b in itertools.combinations(objects, 2):
            assert abs(a["x"] - b["x"]) >= config.min_dx
            assert math.hypot(a["x"] - b["x"], a["y"] - b["y"]) >= (a["size"] + b["size"]) / 2  # no overlap


def test_render_shapes():
    objects = [SceneObject("square", "red", 12, 12, 10), SceneObject("triangle", "blue", 40, 40, 14)]
    pixels = render_scene(objects, 64)
    assert tuple(pixels[8, 8]) == COLORS["red"]  # a square fills its corners
    assert tuple(pixels[34, 34]) != COLORS["blue"]  # a triangle does not fill its top-left corner
    assert tuple(pixels[46, 40]) == COLORS["blue"]  # but does its base
    assert tuple(pixels[0, 63]) == (40, 40, 40)


def test_captions():
    objects = [SceneObject("circle", "red", 5, 5, 10), SceneObject("square", "blue", 30, 5, 10)]
    assert scene_captions(objects) == [
        "a red circle and a blue square",
        "two shapes: a red circle and a blue square",
        "from left to right: a red circle and a blue square",
    ]


def _rows(scenes):
    return [
        {"question_type": t, "question": q, "answers": [a]} for scene in scenes for (t, q, a) in scene["questions"]
    ]


def test_questions_are_balanced_and_the_blind_baseline_is_at_chance():
    train = _rows(generate_split("train", 400, seed=0))
    test = _rows(generate_split("test", 200, seed=0))
    for qtype in QUESTION_TYPES:
        counts = Counter(r["answers"][0] for r in train if r["question_type"] == qtype)
        assert set(counts) == set(ANSWERS[qtype])
        assert max(counts.values()) - min(counts.values()) <= 1  # exact balance per type
    by_type = blind_baseline(train, test)
    for qtype, accuracy in by_type["per_type"].items():
        assert accuracy <= 1 / len(ANSWERS[qtype]) + 0.02, (qtype, accuracy)
    # a stronger blind model that memorises each exact question text does no better than chance overall
    chance = np.mean([1 / len(ANSWERS[r["question_type"]]) for r in test])
    by_question = blind_baseline(train, test, by="question")
    assert by_question["accuracy"] <= chance + 0.07, (by_question["accuracy"], chance)


def test_several_questions_per_scene_and_config_errors():
    scenes = generate_split("val", 6, seed=1, config=SceneConfig(questions_per_scene=2))
    for scene in scenes:
        types = [t for t, _, _ in scene["questions"]]
        assert len(types) == 2 and len(set(types)) == 2
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(min_objects=4, max_objects=3)
    with pytest.raises(ValueError, match="unknown split"):
        generate_split("dev", 1)
    assert len({f"{c} {s}" for c in COLORS for s in SHAPES}) == 12


def test_dense_training_split_answers_from_the_graph_with_balanced_answers():
    scenes = generate_training_split("train", 300, seed=2)
    assert scenes == generate_training_split("train", 300, seed=2)  # deterministic
    assert scenes != generate_training_split("train", 300, seed=3)
    rows = _rows(scenes)
    assert len(rows) > 2 * len(scenes)  # several questions per scene: the point of the dense form
    for scene in scenes:
        objects = [o.__dict__ for o in scene["objects"]]
        types = [t for t, _, _ in scene["questions"]]
        assert len(types) == len(set(types))  # at most one question of each type
        for _, question, answer in scene["questions"]:
            assert _answer(question, objects) == answer, question
    for qtype in QUESTION_TYPES:
        counts = Counter(r["answers"][0] for r in rows if r["question_type"] == qtype)
        assert set(counts) == set(ANSWERS[qtype]), qtype
        assert max(counts.values()) - min(counts.values()) <= 1, (qtype, counts)  # the answer cycle holds
    with pytest.raises(ValueError, match="unknown split"):
        generate_training_split("dev", 1)
