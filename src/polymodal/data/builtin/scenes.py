"""The built-in "scenes" generation set: coloured shapes on a small canvas, with captions and questions
answered from the scene graph (procedural, offline, deterministic from a seed).

Each scene holds 2-5 objects (``SceneConfig``), each a (colour, shape) pair, no pair twice in a scene,
colours red / green / blue / yellow, shapes circle / square / triangle, drawn without overlap on a 64×64
canvas. Any two objects differ in x by at least ``min_dx`` pixels, so "left of" is never ambiguous.

Questions (``QUESTION_TYPES``; the answer sets are ``ANSWERS``):

| type | example | answers |
|---|---|---|
| color | what color is the circle? (the only circle) | red green blue yellow |
| shape | what shape is the blue object? (the only blue one) | circle square triangle |
| count | how many squares are there? / how many red objects are there? | 0 1 2 3 |
| left_right | is the red circle left of the blue square? (or "right of") | yes no |
| nearest | what color is the object nearest to the green triangle? (a clear nearest) | the 4 colours |

Balance, so that the question alone does not give the answer: question types rotate over scenes; for each
type the target answers cycle through shuffled copies of its answer set (equal counts per type and split),
and the question text is drawn uniformly from the type's texts (:func:`question_strings`) independently
of the answer; the scene is then redrawn until that question has that answer. So neither the type nor the
exact text predicts the answer: a question-only model is at chance (the tests check
:func:`~.generation_format.blind_baseline` by type and by exact text). One question per scene by default;
``questions_per_scene`` > 1 asks several (of different types) at the price of many more redraws; as such
questions can contradict each other, their texts are redrawn (answers kept) every 500 failed scenes.

Captions (three references, objects listed left to right): "a red circle, a blue square and a green
triangle"; "three shapes: a red circle, ..."; "from left to right: a red circle, ...".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .generation_format import chat_row, write_jsonl

COLORS = {"red": (220, 50, 47), "green": (60, 180, 75), "blue": (50, 110, 230), "yellow": (240, 210, 40)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (40, 40, 40)
QUESTION_TYPES = ("color", "shape", "count", "left_right", "nearest")
ANSWERS = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "count": ("0", "1", "2", "3"),
    "left_right": ("yes", "no"),
    "nearest": tuple(COLORS),
}
SPLITS = ("train", "val", "test")
CAPTION_PROMPT = "describe the picture."
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class SceneObject:
    """One shape: ``x``, ``y`` its centre and ``size`` its bounding-box side, in pixels."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneConfig:
    """Canvas side and object sizes (pixels), objects per scene, questions per scene, spacing margins."""

    canvas: int = 64
    min_objects: int = 2
    max_objects: int = 5
    min_size: int = 10
    max_size: int = 14
    min_dx: int = 4  # x-separation of any two centres: left/right is never a judgement call
    nearest_margin: float = 4.0  # the nearest object must be this much nearer than the second nearest
    questions_per_scene: int = 1  # each more question per scene multiplies the draws needed
    max_tries: int = 5000

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= len(COLORS) * len(SHAPES):
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 12, got {self.min_objects}, {self.max_objects}")
        if not 1 <= self.questions_per_scene <= len(QUESTION_TYPES):
            raise ValueError(f"questions_per_scene must be in 1..{len(QUESTION_TYPES)}")


def sample_objects(rng: np.random.Generator, config: SceneConfig) -> list[SceneObject] | None:
    """A random scene (objects sorted left to right), or None when placement failed (caller retries)."""
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    pairs = rng.choice(len(COLORS) * len(SHAPES), size=n, replace=False)
    placed: list[SceneObject] = []
    for pair in pairs:
        color, shape = list(COLORS)[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)]
        for _ in range(50):
            size = int(rng.integers(config.min_size, config.max_size + 1))
            half = size // 2 + 1
            x, y = (int(v) for v in rng.integers(half, config.canvas - half, size=2))
            if all(
                abs(x - o.x) >= config.min_dx and math.hypot(x - o.x, y - o.y) >= (size + o.size) / 2 + 2
                for o in placed
            ):
                placed.append(SceneObject(shape, color, x, y, size))
                break
        else:
            return None
    return sorted(placed, key=lambda o: o.x)


def scene_questions(objects: list[SceneObject], config: SceneConfig) -> dict[str, list[tuple[str, str]]]:
    """Every question this scene answers unambiguously, by type → [(question, answer)]."""
    out: dict[str, list[tuple[str, str]]] = {t: [] for t in QUESTION_TYPES}
    for shape in SHAPES:
        same = [o for o in objects if o.shape == shape]
        if len(same) == 1:
            out["color"].append((f"what color is the {shape}?", same[0].color))
        if len(same) <= 3:
            out["count"].append((f"how many {shape}s are there?", str(len(same))))
    for color in COLORS:
        same = [o for o in objects if o.color == color]
        if len(same) == 1:
            out["shape"].append((f"what shape is the {color} object?", same[0].shape))
        out["count"].append((f"how many {color} objects are there?", str(len(same))))
    for a, b in itertools.permutations(objects, 2):
        out["left_right"].append((f"is the {a.name} left of the {b.name}?", "yes" if a.x < b.x else "no"))
        out["left_right"].append((f"is the {a.name} right of the {b.name}?", "yes" if a.x > b.x else "no"))
    if len(objects) >= 3:
        for a in objects:
            others = sorted((math.hypot(a.x - o.x, a.y - o.y), i) for i, o in enumerate(objects) if o is not a)
            if others[1][0] - others[0][0] >= config.nearest_margin:
                nearest = objects[others[0][1]]
                out["nearest"].append((f"what color is the object nearest to the {a.name}?", nearest.color))
    return out


def scene_captions(objects: list[SceneObject]) -> list[str]:
    """Three reference captions listing the objects left to right."""
    names = [f"a {o.name}" for o in sorted(objects, key=lambda o: o.x)]
    listing = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    count = _NUMBER_WORDS[len(names)] if len(names) < len(_NUMBER_WORDS) else str(len(names))
    return [listing, f"{count} shapes: {listing}", f"from left to right: {listing}"]


def render_scene(objects: list[SceneObject], canvas: int = 64) -> np.ndarray:
    """The scene as uint8 [canvas, canvas, 3] RGB."""
    image = Image.new("RGB", (canvas, canvas), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in objects:
        half = o.size / 2
        box = (o.x - half, o.y - half, o.x + half, o.y + half)
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(o.x, o.y - half), (o.x - half, o.y + half), (o.x + half, o.y + half)], fill=fill)
    return np.asarray(image)


def question_strings(qtype: str) -> list[str]:
    """Every question text of one type (the blind model's whole view of a question)."""
    names = [f"{c} {s}" for c in COLORS for s in SHAPES]
    if qtype == "color":
        return [f"what color is the {s}?" for s in SHAPES]
    if qtype == "shape":
        return [f"what shape is the {c} object?" for c in COLORS]
    if qtype == "count":
        return [f"how many {s}s are there?" for s in SHAPES] + [f"how many {c} objects are there?" for c in COLORS]
    if qtype == "left_right":
        return [f"is the {a} {side} of the {b}?" for a in names for b in names if a != b for side in ("left", "right")]
    if qtype == "nearest":
        return [f"what color is the object nearest to the {a}?" for a in names]
    raise ValueError(f"unknown question type {qtype!r}; types: {QUESTION_TYPES}")


class _TargetCycle:
    """Targets per question type: the answer cycles through shuffled copies of the answer set (equal
    counts); the question text is drawn uniformly and independently of the answer, so no question text
    predicts its answer."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.queues = rng, {t: [] for t in QUESTION_TYPES}
        self.strings = {t: question_strings(t) for t in QUESTION_TYPES}

    def answer(self, qtype: str) -> str:
        if not self.queues[qtype]:
            self.queues[qtype] = [str(a) for a in self.rng.permutation(ANSWERS[qtype])]
        return self.queues[qtype].pop()

    def question(self, qtype: str) -> str:
        return self.strings[qtype][int(self.rng.integers(len(self.strings[qtype])))]


def generate_split(split: str, n_scenes: int, seed: int = 0, config: SceneConfig | None = None) -> list[dict[str, Any]]:
    """``n_scenes`` scenes of one split, deterministic from (seed, split).

    Each item: {"id", "objects": [SceneObject], "captions": [3 str], "questions": [(type, question, answer)]}.
    Each scene is drawn again until each of its target questions has its target answer. Raises
    RuntimeError if that takes more than ``config.max_tries`` draws (an impossible config).
    """
    config = config or SceneConfig()
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))
    cycle = _TargetCycle(rng)
    scenes = []
    for index in range(n_scenes):
        types = [QUESTION_TYPES[(index * config.questions_per_scene + k) % len(QUESTION_TYPES)]
                 for k in range(config.questions_per_scene)]  # fmt: skip
        answers = [cycle.answer(t) for t in types]
        for attempt in range(config.max_tries):
            # Several questions can contradict each other ("how many green objects?" 0 and "is the green
            # circle left of ...?"): redraw their texts now and then, keeping the answers.
            if attempt % 500 == 0:
                targets = [(t, cycle.question(t), a) for t, a in zip(types, answers)]
            objects = sample_objects(rng, config)
            if objects is None:
                continue
            candidates = scene_questions(objects, config)
            if all((q, a) in candidates[t] for t, q, a in targets):
                break
        else:
            raise RuntimeError(f"scenes: no scene for {targets} in {config.max_tries} draws; loosen the config")
        scenes.append(
            {"id": f"{split}-{index:05d}", "objects": objects, "captions": scene_captions(objects),
             "questions": targets}
        )  # fmt: skip
    return scenes


def generate_training_split(split: str, n_scenes: int, seed: int = 0,
                            config: SceneConfig | None = None, stream: int = 1) -> list[dict[str, Any]]:
    """``n_scenes`` scenes with up to one question of every type each: the cheap, dense form of a training split.

    :func:`generate_split` redraws a scene until it answers one chosen (question, answer) pair, which keeps each
    question text independent of its answer but costs many draws per question, and more than one question per
    scene costs many more. Here each scene is drawn once and, for every type, asks a question whose answer is
    that type's next target (the answers still cycle through shuffled copies of the answer set, so their counts
    per type stay equal); a type with no such question in the scene keeps its target for the next scene. The
    text is then drawn among the scene's questions with that answer, so text and answer are only nearly
    independent: use this for training rows, and :func:`generate_split` for the rows a model is scored on.
    Same item format as :func:`generate_split`; deterministic from (split, n_scenes, seed, config, stream);
    ``stream`` picks another random stream, i.e. other scenes, for the same seed.
    """
    config = config or SceneConfig()
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), stream]))
    cycle = _TargetCycle(rng)
    scenes = []
    for index in range(n_scenes):
        objects = None
        while objects is None:
            objects = sample_objects(rng, config)
        candidates = scene_questions(objects, config)
        targets = []
        for k in range(len(QUESTION_TYPES)):
            qtype = QUESTION_TYPES[(index + k) % len(QUESTION_TYPES)]
            answer = cycle.answer(qtype)
            texts = sorted({q for q, a in candidates[qtype] if a == answer})
            if not texts:
                cycle.queues[qtype].append(answer)  # still owed: the next scene that can answer it does
                continue
            targets.append((qtype, texts[int(rng.integers(len(texts)))], answer))
        scenes.append({"id": f"{split}-{index:05d}", "objects": objects, "captions": scene_captions(objects),
                       "questions": targets})
    return scenes


def build_scenes(
    out_dir: str | Path,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    config: SceneConfig | None = None,
) -> dict[str, dict[str, Path]]:
    """Write the set: ``images/<split>-<index>.png`` and, per split, ``scenes_<split>.jsonl`` (scene
    graphs), ``caption_<split>.jsonl`` and ``vqa_<split>.jsonl`` (rows in the generation manifest format).

    ``sizes``: scenes per split (default train 2000, val 300, test 300). Returns
    {split: {"scenes" | "caption" | "vqa": path}}. The same (sizes, seed, config) give byte-identical files.
    """
    config = config or SceneConfig()
    sizes = sizes or {"train": 2000, "val": 300, "test": 300}
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, Path]] = {}
    for split, n in sizes.items():
        scenes = generate_split(split, n, seed, config)
        graphs, captions, vqa = [], [], []
        for scene in scenes:
            image = f"images/{scene['id']}.png"
            Image.fromarray(render_scene(scene["objects"], config.canvas)).save(out / image)
            objects = [asdict(o) for o in scene["objects"]]
            graphs.append({"id": scene["id"], "image": image, "width": config.canvas, "height": config.canvas,
                           "objects": objects})  # fmt: skip
            captions.append(chat_row(scene["id"], "caption", CAPTION_PROMPT, scene["captions"], {"image": image}))
            for k, (qtype, question, answer) in enumerate(scene["questions"]):
                vqa.append(
                    chat_row(f"{scene['id']}-q{k}", "vqa", question, [answer], {"image": image},
                             question=question, question_type=qtype, scene_id=scene["id"])
                )  # fmt: skip
        paths[split] = {
            "scenes": write_jsonl(graphs, out / f"scenes_{split}.jsonl"),
            "caption": write_jsonl(captions, out / f"caption_{split}.jsonl"),
            "vqa": write_jsonl(vqa, out / f"vqa_{split}.jsonl"),
        }
    return paths


# The task names of the generation manifests (``generation_format.TASKS``) this set provides.
SCENE_TASKS = ("caption", "vqa")
# Scenes per split of the in-memory set the generation tasks train on (``data.name: scenes``; data.limit caps
# them). Scenes are cheap to draw (~2 ms each) and a from-scratch model needs many to ground its answers.
DEFAULT_SIZES = {"train": 6000, "val": 300, "test": 300}


def scene_records(split: str, task: str, n_scenes: int | None = None, seed: int = 0,
                  config: SceneConfig | None = None, dense: bool = False) -> list[dict[str, Any]]:
    """Rows of one split and task ("caption" or "vqa") in memory, in the generation manifest format with
    ``image`` as uint8 [canvas, canvas, 3] RGB (what :func:`build_scenes` writes, without files).

    ``n_scenes``: default ``DEFAULT_SIZES[split]``. ``dense``: the scenes of :func:`generate_training_split` (up to
    one question of each type per scene) instead of :func:`generate_split`'s one strictly balanced question. Deterministic from (split, n_scenes, seed, config). Raises
    ValueError for an unknown split or task."""
    if task not in SCENE_TASKS:
        raise ValueError(f"the scenes set has no {task!r} rows; its tasks: {SCENE_TASKS}")
    config = config or SceneConfig()
    rows = []
    generate = generate_training_split if dense else generate_split
    for scene in generate(split, n_scenes or DEFAULT_SIZES[split], seed, config):
        image = render_scene(scene["objects"], config.canvas)
        if task == "caption":
            rows.append(chat_row(scene["id"], "caption", CAPTION_PROMPT, scene["captions"], {"image": image}))
            continue
        for k, (qtype, question, answer) in enumerate(scene["questions"]):
            rows.append(chat_row(f"{scene['id']}-q{k}", "vqa", question, [answer], {"image": image},
                                 question=question, question_type=qtype, scene_id=scene["id"]))
    return rows


def vqa_training_rows(n_scenes: int, seed: int = 0, config: SceneConfig | None = None) -> list[dict[str, Any]]:
    """The VQA training split of the built-in set (``data.name: scenes``): the questions of ``n_scenes`` dense
    scenes (:func:`generate_training_split`, ~2.6 questions each) followed by the captions of ``n_scenes`` other
    scenes, as caption rows (no ``question_type``: the blind baseline leaves them out).

    Mixing a description task into question answering is LLaVA's recipe (its instruction data holds detailed
    descriptions next to the questions, arXiv:2304.08485 §3; LLaVA-1.5 adds captioning data, arXiv:2310.03744).
    Here it decides what the model learns: a caption names every object's colour and shape left to right, which
    a one-word answer does not. ``polymodal demo --task vqa`` measured on the 300 test questions (exact match):
    0.51 without the captions, shape questions at chance (0.33); 0.62 with them, shape 0.73.
    """
    config = config or SceneConfig()
    questions = scene_records("train", "vqa", n_scenes, seed, config, dense=True)
    rows = [chat_row(f"caption-{scene['id']}", "caption", CAPTION_PROMPT, scene["captions"],
                     {"image": render_scene(scene["objects"], config.canvas)})
            for scene in generate_training_split("train", n_scenes, seed, config, stream=2)]  # other scenes
    return questions + rows
