"""VQA accuracy and exact match with the official VQA answer normalisation.

Antol et al. 2015, "VQA: Visual Question Answering" (§2, evaluation), and the official evaluation script
(GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, as copied by LAVIS and others):

- :func:`normalize_answer`: newlines/tabs → spaces, strip; punctuation: each of ``; / [ ] " { } ( ) = + \\
  _ - > < @ ` , ? !`` is deleted when it touches a space (or the answer has a digit,digit comma), else
  replaced by a space; a period not followed by a digit is deleted; lower-case; number words zero…ten (and
  "none") → digits; articles a / an / the dropped; apostrophe-less contractions restored ("dont" → "don't").
- accuracy of one answer against K human answers: for each of the K leave-one-out subsets of K − 1
  answers, min(#subset answers equal to the prediction / 3, 1); the mean over the subsets. With VQA's 10
  answers these are the 10-choose-9 subsets, and "3 of 10 humans agree" scores 1.

Differences from the script, both documented choices: the script normalises the references with the
punctuation step only (and only when they disagree), because VQA's released answers were already
lower-cased and digit-mapped; here references get the full :func:`normalize_answer`, so user manifests with
"Two" or "The red one" are scored fairly (identical results on VQA-style answers). With a single reference
the leave-one-out formula would give every answer 0, so one reference means normalised exact match
(as GQA / CLEVR report).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ._inputs import check_pairs
from .result import MetricResult

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = frozenset(["a", "an", "the"])
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]  # fmt: skip
# The script's pattern is "(?!<=\d)(\.)(?!\d)": its first group is a (no-op) look-ahead, not a look-behind,
# so in effect every period not followed by a digit is deleted. Kept as is for identical normalisation.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")


def _punctuation(text: str) -> str:
    out = text
    has_digit_comma = _DIGIT_COMMA.search(text) is not None
    for p in _PUNCT:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official VQA normalisation of one answer: "Two dogs." → "2 dogs"; "The red one!" → "red 1"."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(answer))


def vqa_score(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its K ≥ 1 reference answers, in [0, 1] (see module doc)."""
    pred = normalize_answer(prediction)
    refs = [normalize_answer(r) for r in references]
    if len(refs) == 1:
        return float(pred == refs[0])
    matches = [r == pred for r in refs]
    total = sum(matches)
    # Leaving reference i out removes its own match (if any) from the count.
    return float(np.mean([min(1.0, (total - m) / 3.0) for m in matches]))


def vqa_accuracy(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> MetricResult:
    """VQA accuracy → MetricResult("vqa_accuracy"), value = mean of ``per_sample`` [N] in [0, 1].
    references [N]: the human answers of each question (one string or a list)."""
    predictions, refs = check_pairs(predictions, references, "VQA accuracy")
    scores = np.array([vqa_score(p, rs) for p, rs in zip(predictions, refs)], dtype=np.float64)
    return MetricResult("vqa_accuracy", float(scores.mean()), scores, scores)


def exact_match(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], *, normalize: bool = True
) -> MetricResult:
    """Exact match → MetricResult("exact_match"): 1 when the prediction equals any reference, after
    :func:`normalize_answer` (``normalize=True``) or after stripping surrounding whitespace only."""
    predictions, refs = check_pairs(predictions, references, "exact match")
    prep = normalize_answer if normalize else str.strip
    scores = np.array(
        [float(prep(p) in {prep(r) for r in rs}) for p, rs in zip(predictions, refs)], dtype=np.float64
    )
    return MetricResult("exact_match", float(scores.mean()), scores, scores)
