"""Generation metrics: BLEU / CIDEr-D / ROUGE-L / METEOR (COCO), VQA accuracy, exact match and WER, pinned
to their reference implementations (pycocoevalcap, sacrebleu, rouge-score, jiwer) and to hand-computed values.

Reference-implementation tests skip only when that package is absent; the hand-computed ones always run.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from polymodal.errors import PolymodalError
from polymodal.evaluation.generation import (
    MetricInputError,
    bleu,
    caption_metrics,
    cider_d,
    coco_tokenize,
    exact_match,
    meteor,
    meteor_available,
    normalize_answer,
    normalize_transcript,
    rouge_l,
    vqa_accuracy,
    vqa_metrics,
    word_error_rate,
)
from polymodal.evaluation.generation.tokenizer import PUNCTUATIONS

# Sentences and what pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 jar, -preserveLines -lowerCase,
# then its PUNCTUATIONS filter) made of them, recorded once from the jar. Known differences, not listed:
# "a...b" (jar "a. b"), "y'all" (jar "y' all"), "cat!dog" (jar keeps it whole).
JAR_TOKENS = [
    ('A man riding a wave on top of a surfboard.', 'a man riding a wave on top of a surfboard'),
    ("Two dogs don't like the cat's toy; it's red!", "two dogs do n't like the cat 's toy it 's red"),
    ('The colour of the "big" bus (left) is grey-blue.', 'the colour of the big bus -lrb- left -rrb- is grey-blue'),
    ("A woman's 3.5 kg bag, 1,000 apples & 2/3 pears...", "a woman 's 3.5 kg bag 1,000 apples & 2/3 pears"),
    ('Mr. Smith and Dr. Who visit the U.S. today.', 'mr. smith and dr. who visit the u.s. today'),
    ('A CAFÉ in Zürich — naïve résumé?', 'a café in zürich naïve résumé'),
    ("he said: 'hello' -- then left", 'he said hello then left'),
    ("can't won't I'm you're they've we'd she'll", "ca n't wo n't i 'm you 're they 've we 'd she 'll"),
    ("children's toys' boxes, o'clock", "children 's toys boxes o'clock"),
    ("a 5-year-old boy's birthday cake at 10:30am", "a 5-year-old boy 's birthday cake at 10:30 am"),
    ("'tis the season", "'t is the season"),
    ('a red circle left of a blue square', 'a red circle left of a blue square'),
    ('  multiple   spaces   here  ', 'multiple spaces here'),
    ('It costs $5.00 or 50% off*', 'it costs $ 5.00 or 50 % off *'),
    ("the cats' tails [in] {braces}", 'the cats tails -lsb- in -rsb- -lcb- braces -rcb-'),
    ('gonna wanna gotta cannot', 'gon na wan na got ta can not'),
    ('why?!?', 'why ?!?'),
    ('"quoted"', 'quoted'),
    ('A giraffe standing next to a tree in a field.', 'a giraffe standing next to a tree in a field'),
    ('A close up of a plate of food with broccoli', 'a close up of a plate of food with broccoli'),
    ('a kitchen with stainless steel appliances and granite counter tops .', 'a kitchen with stainless steel appliances and granite counter tops'),
    ('There is a man that is holding a tennis racket.', 'there is a man that is holding a tennis racket'),
    ('A black and white photo of a man on a motorcycle', 'a black and white photo of a man on a motorcycle'),
    ('Several people are standing around a table with laptops', 'several people are standing around a table with laptops'),
    ('A cat laying on top of a laptop computer.', 'a cat laying on top of a laptop computer'),
    ('a train traveling down tracks next to a forest', 'a train traveling down tracks next to a forest'),
    ('A young girl in a pink shirt is eating a donut.', 'a young girl in a pink shirt is eating a donut'),
    ('The bathroom has a toilet, sink and mirror.', 'the bathroom has a toilet sink and mirror'),
    ('Two zebras grazing in the grass at the zoo', 'two zebras grazing in the grass at the zoo'),
    ('a baseball player swinging a bat at a ball', 'a baseball player swinging a bat at a ball'),
    ('A pizza that is sitting on a table.', 'a pizza that is sitting on a table'),
    ('An airplane flying in the sky over a city.', 'an airplane flying in the sky over a city'),
    ('a group of people skiing down a snowy hill', 'a group of people skiing down a snowy hill'),
    ('The dog is catching a Frisbee in mid-air!', 'the dog is catching a frisbee in mid-air'),
    ('A bowl of fruit: apples, bananas, and oranges.', 'a bowl of fruit apples bananas and oranges'),
    ('Is that a stop sign? Yes, it is.', 'is that a stop sign yes it is'),
    ("The man's shirt is blue; his hat is red.", "the man 's shirt is blue his hat is red"),
    ('a street sign on a pole at an intersection', 'a street sign on a pole at an intersection'),
    ('A couple of horses are standing in a field', 'a couple of horses are standing in a field'),
    ('a red double-decker bus driving down the street', 'a red double-decker bus driving down the street'),
    ('A person holding an umbrella in the rain...', 'a person holding an umbrella in the rain'),
    ('A man wearing a tie and a suit', 'a man wearing a tie and a suit'),
    ('three elephants walking in a row', 'three elephants walking in a row'),
    ('a dog with a frisbee in its mouth', 'a dog with a frisbee in its mouth'),
    ('The clock on the tower reads 12:45.', 'the clock on the tower reads 12:45'),
    ('A sandwich cut in half on a white plate', 'a sandwich cut in half on a white plate'),
    ('two teddy bears sitting on a shelf', 'two teddy bears sitting on a shelf'),
    ('a boat docked at the pier (on the lake)', 'a boat docked at the pier -lrb- on the lake -rrb-'),
    ('An old-fashioned car parked on the side of the road', 'an old-fashioned car parked on the side of the road'),
    ("It's a sunny day at the beach", "it 's a sunny day at the beach"),
    ('a small bird perched on a branch', 'a small bird perched on a branch'),
    ("A kid's bedroom with a bunk bed.", "a kid 's bedroom with a bunk bed"),
    ('A blue and yellow kite flying high in the sky', 'a blue and yellow kite flying high in the sky'),
    ('people are walking on the sidewalk, near shops', 'people are walking on the sidewalk near shops'),
    ('This is a picture of a living room with a TV', 'this is a picture of a living room with a tv'),
    ('a motorcycle parked in front of a building', 'a motorcycle parked in front of a building'),
    ('The woman is talking on her cell-phone.', 'the woman is talking on her cell-phone'),
    ('A sheep standing in the grass looking at the camera', 'a sheep standing in the grass looking at the camera'),
    ('a laptop, a mouse, and a keyboard on a desk', 'a laptop a mouse and a keyboard on a desk'),
    ("The train's engine is black & red.", "the train 's engine is black & red"),
    ('a handwritten seven', 'a handwritten seven'),
    ('the digit 7 written by hand', 'the digit 7 written by hand'),
    ('someone says seven', 'someone says seven'),
    ('a blue triangle is to the left of a red circle', 'a blue triangle is to the left of a red circle'),
    ('there are 3 shapes: a green square, a red circle and a yellow triangle', 'there are 3 shapes a green square a red circle and a yellow triangle'),
    ('What digit is this?', 'what digit is this'),
    ('is it even?', 'is it even'),
    ('what is this digit plus two?', 'what is this digit plus two'),
    ('Do the image and the recording show the same digit?', 'do the image and the recording show the same digit'),
    ('yes', 'yes'),
    ('no', 'no'),
    ('9', '9'),
    ('the dog. the cat', 'the dog the cat'),
    ('in the U.S.', 'in the u.s.'),
    ('a man in the U.S. army.', 'a man in the u.s. army'),
    ('wow!! really??', 'wow !! really ??'),
    ('hello...', 'hello'),
    ('e.g. a cat', 'e.g. a cat'),
    ('etc.', 'etc.'),
    ('the cat-', 'the cat'),
    ('-the cat', 'the cat'),
    ('a - b', 'a b'),
    ('a 3-d image.', 'a 3-d image'),
    ('at 5pm and 10 a.m. today', 'at 5pm and 10 a.m. today'),
    ("I'll go", "i 'll go"),
    ("JOHN'S dog", "john 's dog"),
    ("rock 'n' roll", "rock 'n' roll"),
    ('she said "go"', 'she said go'),
    ('"go," she said.', 'go she said'),
    ('(a) b', '-lrb- a -rrb- b'),
    ("1990s 80's", "1990s 80 's"),
    ('no. 5 st. louis', 'no. 5 st. louis'),
    ("there's a man", "there 's a man"),
    ("isn't aren't", "is n't are n't"),
    ("d'you", "d'you"),
    ("don't.", "do n't"),
    ("a 'quoted phrase' here", 'a quoted phrase here'),
    ('i.e. that', 'i.e. that'),
    ('the end', 'the end'),
    ('a cat on a mat .', 'a cat on a mat'),
    ('a b.c d', 'a b.c d'),
    ('x.y', 'x.y'),
    ('a dog,', 'a dog'),
    ('plus+minus', 'plus + minus'),
    ('a cat=dog', 'a cat = dog'),
    ('#hashtag @user', '#hashtag @user'),
    ('1/2 3\\4', '1/2 3 \\ 4'),
    ('tab\tseparated', 'tab separated'),
    ('ﬁ ligature', 'ﬁ ligature'),
    ('“smart quotes” and ‘single’', 'smart quotes and single'),
    ('a cat… and', 'a cat and'),
    ("the word's end'", "the word 's end"),
    ('5\'10" tall', '5 10 tall'),
    ('a,b dog.the a:b a/b a;b', 'a b dog.the a b a/b a b'),
    ('3,5 3:5 3/5 3.5.6 1.2.3.4', '3,5 3:5 3/5 3.5.6 1.2.3.4'),
    ('a.b.c abc.def', 'a.b.c abc.def'),
    ('ab.c', 'ab.c'),
    ('10:30pm 10pm 10.30am 1st 2nd 3rd 21st', '10:30 pm 10pm 10.30 am 1st 2nd 3rd 21st'),
    ('half-way 1-2 a-1 --a a--b', 'half-way 1-2 a-1 a a b'),
    ("x'y can't've", "x y ca n't 've"),
    ('e-mail i-pad', 'e-mail i-pad'),
    ('100km 5kg 3x4 4x4', '100km 5kg 3x4 4x4'),
    ("the 1990's style", "the 1990 's style"),
    ('$5 5$ €5 £10 5€', '$ 5 5 $ $ 5 # 10 5 $'),
    ('20°c 30° angle', '20 ° c 30 ° angle'),
    ('1:2 ratio', '1:2 ratio'),
    ("it's 'n' 'em", "it 's 'n' 'em"),
    ("o'neill o'brien mcdonald's", "o'neill o'brien mcdonald 's"),
    ('“ok” ‘ok’', 'ok ok'),
    ('a – b a—b', 'a b a b'),
    ("cafe' x' 'x", 'cafe x x'),
    ('tree.', 'tree'),
    ('st. mary', 'st. mary'),
    ('mt. fuji', 'mt. fuji'),
    ('vs. the', 'vs. the'),
    ('jr. and co.', 'jr. and co.'),
    ('the no. 1 jet', 'the no. 1 jet'),
    ('some u.k. guy', 'some u.k. guy'),
    ('a Ph.D. student', 'a ph.d. student'),
]

PREDICTIONS = [
    "A red circle left of a blue square.",
    "two dogs playing in the grass",
    "",
    "a man riding a horse on the beach",
    "a cat",
    "Ein Hund läuft über die Straße",
]
REFERENCES = [
    ["a red circle is left of a blue square", "red circle and blue square", "a circle and a square"],
    ["two dogs play on grass", "dogs in a field", "two brown dogs playing"],
    ["a handwritten seven"],
    ["a man on a horse", "a person riding a brown horse on a beach"],
    ["a cat on a mat", "the cat sits"],
    ["Ein Hund läuft über die Straße", "ein großer Hund auf der Straße"],
]


def _tokenized(preds, refs):
    res = {i: [coco_tokenize(p)] for i, p in enumerate(preds)}
    gts = {i: [coco_tokenize(r) for r in rs] for i, rs in enumerate(refs)}
    return gts, res


# ---- tokenizer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), JAR_TOKENS)
def test_coco_tokenize_matches_the_corenlp_jar(text, expected):
    assert coco_tokenize(text) == expected


def test_coco_tokenize_edge_cases():
    assert coco_tokenize("") == ""
    assert coco_tokenize("a dog\nand a cat.") == "a dog and a cat"
    assert "-lrb-" in coco_tokenize("(left)")  # lower-cased escapes escape the filter, as in pycocoevalcap
    assert not {"''", "``", ".", ","} & set(coco_tokenize('"Hi," he said.').split())
    for text, _ in JAR_TOKENS:
        assert not set(coco_tokenize(text).split()) & PUNCTUATIONS


@pytest.mark.skipif(shutil.which("java") is None, reason="the CoreNLP jar needs Java")
def test_coco_tokenize_matches_the_jar_live():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = [t for t, _ in JAR_TOKENS] + [p for p in PREDICTIONS if p] + [r for rs in REFERENCES for r in rs]
    jar = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert [jar[i][0] for i in range(len(texts))] == [coco_tokenize(t) for t in texts]


# ---- BLEU --------------------------------------------------------------------------------------------------


def test_bleu_hand_computed():
    # 6 words each; matches: 1-grams 5/6, 2-grams 3/5 ("the cat", "on the", "the mat"), equal lengths: BP = 1.
    out = bleu(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert out["bleu_1"].value == pytest.approx(5 / 6, abs=1e-9)
    assert out["bleu_2"].value == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-9)
    # 3-grams: "on the mat" only → 1/4; 4-grams: 0/3 → ≈ 0 (no smoothing, as COCO)
    assert out["bleu_3"].value == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-9)
    assert out["bleu_4"].value < 1e-3
    # brevity penalty: 3 candidate words against a 6-word reference → exp(1 - 6/3)
    short = bleu(["the cat is"], [["the cat is on the mat"]])
    assert short["bleu_1"].value == pytest.approx(math.exp(1 - 2), abs=1e-9)


def test_bleu_matches_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _tokenized(PREDICTIONS, REFERENCES)
    corpus, per_sample = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(PREDICTIONS, REFERENCES)
    for k in range(4):
        assert ours[f"bleu_{k + 1}"].value == pytest.approx(corpus[k], abs=1e-6)
        np.testing.assert_allclose(ours[f"bleu_{k + 1}"].per_sample, per_sample[k], atol=1e-6)
    # single reference per sample
    gts1 = {i: refs[:1] for i, refs in gts.items()}
    corpus1, _ = Bleu(4).compute_score(gts1, res, verbose=0)
    ours1 = bleu(PREDICTIONS, [rs[0] for rs in REFERENCES])
    assert [ours1[f"bleu_{k}"].value for k in range(1, 5)] == pytest.approx(corpus1, abs=1e-6)


def test_corpus_bleu_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    preds = ["a red circle is left of a blue square", "two dogs are playing on the grass", "a man rides a horse"]
    refs = [
        ["a red circle left of a blue square", "a red circle and a blue square"],
        ["two dogs playing on the grass", "two dogs play on grass"],
        ["a man riding a horse", "a man rides a brown horse"],
    ]
    ours = bleu(preds, refs, tokenize=False)
    streams = [[r[k] for r in refs] for k in range(2)]
    for order in range(1, 5):
        metric = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=order)
        reference = metric.corpus_score(preds, streams).score / 100
        assert ours[f"bleu_{order}"].value == pytest.approx(reference, abs=1e-6)


def test_bleu_empty_prediction_and_bootstrap():
    out = bleu(["", "a cat on a mat"], [["a handwritten seven"], ["a cat on a mat"]])
    assert out["bleu_4"].per_sample[0] == 0.0
    assert out["bleu_4"].per_sample[1] == pytest.approx(1.0, abs=1e-6)
    result = bleu(PREDICTIONS, REFERENCES)["bleu_2"]
    # the aggregate recomputes the corpus value from per-sample statistics exactly
    assert float(result.aggregate(result.stats)) == pytest.approx(result.value, abs=1e-12)
    point, low, high = result.bootstrap_ci(n_resamples=200, seed=1)
    assert point == pytest.approx(result.value) and low <= point <= high


# ---- CIDEr-D -----------------------------------------------------------------------------------------------


def test_cider_d_matches_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider

    gts, res = _tokenized(PREDICTIONS, REFERENCES)
    corpus, per_sample = Cider().compute_score(gts, res)
    ours = cider_d(PREDICTIONS, REFERENCES)
    assert ours.value == pytest.approx(corpus, abs=1e-6)
    np.testing.assert_allclose(ours.per_sample, per_sample, atol=1e-6)
    gts1 = {i: refs[:1] for i, refs in gts.items()}
    corpus1, per1 = Cider().compute_score(gts1, res)
    ours1 = cider_d(PREDICTIONS, [rs[0] for rs in REFERENCES])
    np.testing.assert_allclose(ours1.per_sample, per1, atol=1e-6)


def test_cider_d_properties():
    # one sample alone: IDF = log(1) - log(1) = 0 for every n-gram, so CIDEr-D is 0 (as in pycocoevalcap)
    assert cider_d(["a cat"], [["a cat"]]).value == 0.0
    captions = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]
    perfect = cider_d(captions, [[c] for c in captions])
    constant = cider_d(["a red circle"] * 4, [[c] for c in captions])
    assert perfect.value > constant.value > 0
    assert cider_d(["", "a blue square"], [["a red circle"], ["a blue square"]]).per_sample[0] == 0.0


# ---- ROUGE-L -----------------------------------------------------------------------------------------------


def test_rouge_l_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score_multi(refs, pred)["rougeL"].fmeasure for pred, refs in zip(PREDICTIONS, REFERENCES)]
    ours = rouge_l(PREDICTIONS, REFERENCES)
    np.testing.assert_allclose(ours.per_sample, expected, atol=1e-6)
    assert ours.value == pytest.approx(np.mean(expected), abs=1e-6)


def test_rouge_l_coco_matches_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _tokenized(PREDICTIONS, REFERENCES)
    corpus, per_sample = Rouge().compute_score(gts, res)
    ours = rouge_l(PREDICTIONS, REFERENCES, definition="coco")
    assert ours.value == pytest.approx(corpus, abs=1e-6)
    np.testing.assert_allclose(ours.per_sample, per_sample, atol=1e-6)


def test_rouge_l_hand_values_and_unicode():
    # LCS("a b c d", "a c d e") = 3 → P = R = 3/4 → F1 = 3/4
    assert rouge_l(["a c d e"], ["a b c d"]).value == pytest.approx(0.75)
    assert rouge_l([""], ["a cat"]).value == 0.0
    # rouge-score's tokenizer treats non-ASCII letters as separators: "über" → "ber"; the unicode one keeps them
    assert rouge_l(["über straße"], ["uber strasse"]).value == 0.0
    assert rouge_l(["Über Straße"], ["über straße"], tokenizer="unicode").value == 1.0
    assert rouge_l(["日本 の 猫"], ["日本 の 犬"], tokenizer="unicode").value == pytest.approx(2 / 3)
    with pytest.raises(MetricInputError, match="definition"):
        rouge_l(["a"], ["a"], definition="rouge-2")


# ---- METEOR ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not meteor_available(), reason="METEOR needs pycocoevalcap and Java")
def test_meteor_through_the_coco_jar():
    out = meteor(["a red circle left of a blue square", "two dogs"], [["a red circle left of a blue square"], ["a cat"]])
    assert out.per_sample[0] == pytest.approx(1.0, abs=1e-6)
    assert out.per_sample[1] == 0.0
    assert 0 < out.value < 1 and out.aggregate is None
    with pytest.raises(MetricInputError, match="bootstrap"):
        out.bootstrap_ci()


# ---- VQA ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two dogs.", "2 dogs"),
        ("The red one!", "red 1"),
        ("dont know", "don't know"),
        ("3,000", "3000"),
        ("1.5", "1.5"),
        ("yes.", "yes"),
        ("  A\tcat\n", "cat"),
        ("black/white", "black white"),
        ("left - right", "left right"),
        ("none", "0"),
        ("Ünïcode café", "ünïcode café"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize(("n_matching", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_ten_annotators(n_matching, expected):
    # leave-one-out over the 10 answers: min(#matches among the other 9 / 3, 1), averaged
    refs = ["2"] * n_matching + ["3"] * (10 - n_matching)
    assert vqa_accuracy(["two"], [refs]).value == pytest.approx(expected)


def test_vqa_accuracy_few_references_and_exact_match():
    preds = ["Red", "two", "yes", "circle"]
    refs = [["red", "red", "blue"], "2", ["Yes"], ["square"]]
    result = vqa_accuracy(preds, refs)
    # 3 refs, 2 match: leave a match out → 1/3, leave the other out → 2/3: (1/3 + 1/3 + 2/3) / 3
    np.testing.assert_allclose(result.per_sample, [4 / 9, 1.0, 1.0, 0.0])
    em = exact_match(preds, refs)
    np.testing.assert_allclose(em.per_sample, [1, 1, 1, 0])
    np.testing.assert_allclose(exact_match(preds, refs, normalize=False).per_sample, [0, 0, 0, 0])
    both = vqa_metrics(preds, refs)
    assert set(both) == {"vqa_accuracy", "exact_match"}


# ---- WER ---------------------------------------------------------------------------------------------------


def test_word_error_rate_matches_jiwer():
    jiwer = pytest.importorskip("jiwer")
    refs = ["seven", "one two three", "the quick brown fox", "zero"]
    hyps = ["seven", "one three four", "the quick fox jumps", ""]
    result = word_error_rate(hyps, refs)
    expected_errors = [jiwer.process_words(r, h) for r, h in zip(refs[:3], hyps[:3])]
    errors = sum(o.substitutions + o.deletions + o.insertions for o in expected_errors) + 1  # "" deletes "zero"
    assert result.value == pytest.approx(errors / 9, abs=1e-9)  # 9 reference words in all
    # jiwer's own corpus WER over the first three (8 reference words), plus the one deletion
    assert result.value == pytest.approx((jiwer.wer(refs[:3], hyps[:3]) * 8 + 1) / 9, abs=1e-9)
    assert result.per_sample[-1] == 1.0 and result.per_sample[0] == 0.0
    point, low, high = result.bootstrap_ci(n_resamples=200)
    assert low <= point <= high


def test_word_error_rate_normalisation_and_edges():
    assert normalize_transcript("Don't STOP—now!") == "don't stop now"
    assert normalize_transcript("Ｓeven.") == "seven"  # NFKC folds full-width letters
    assert word_error_rate(["Seven!"], ["seven"]).value == 0.0
    assert word_error_rate(["Seven!"], ["seven"], normalize=False).value == 1.0
    assert word_error_rate(["Zürich"], ["zürich"]).value == 0.0
    assert word_error_rate(["7"], ["seven"]).value == 1.0  # no number normalisation, documented
    # an empty reference: its words are insertions, its sentence WER undefined
    result = word_error_rate(["one extra", "two"], ["", "two"])
    assert result.value == pytest.approx(2 / 1) and math.isnan(result.per_sample[0])
    with pytest.raises(MetricInputError, match="every reference is empty"):
        word_error_rate(["a"], [""])
    with pytest.raises(MetricInputError, match="exactly one"):
        word_error_rate(["a"], [["a", "b"]])


# ---- inputs and the suite ----------------------------------------------------------------------------------


def test_input_errors_name_the_sample():
    with pytest.raises(MetricInputError, match="2 predictions but 1 reference"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(MetricInputError, match="sample 1 has no reference"):
        cider_d(["a", "b"], [["a"], []])
    with pytest.raises(MetricInputError, match="prediction 0 is NoneType"):
        vqa_accuracy([None], [["a"]])
    with pytest.raises(MetricInputError, match="reference 1 of sample 0"):
        rouge_l(["a"], [["a", 3]])
    with pytest.raises(MetricInputError, match="no samples"):
        bleu([], [])
    assert issubclass(MetricInputError, PolymodalError)


def test_caption_metrics_suite():
    out = caption_metrics(PREDICTIONS, REFERENCES)
    assert set(out) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d", "rouge_l_coco"}
    for result in out.values():
        assert result.per_sample.shape == (len(PREDICTIONS),) and np.isfinite(result.value)
    assert out["bleu_1"].value >= out["bleu_4"].value


def test_missing_jiwer_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jiwer", None)  # makes "import jiwer" raise ImportError
    with pytest.raises(MetricInputError, match=r"polymodal\[generation\]"):
        word_error_rate(["one two"], ["one three"])


def test_random_corpus_matches_pycocoevalcap():
    """A larger corpus (varied lengths, repeated words, 1-4 references) against all three COCO scorers."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    rng = np.random.default_rng(0)
    vocab = "a the red blue green circle square triangle left of right and is two three shapes dog".split()
    preds, refs = [], []
    for _ in range(60):
        preds.append(" ".join(rng.choice(vocab, size=rng.integers(0, 12))))
        refs.append([" ".join(rng.choice(vocab, size=rng.integers(1, 12))) for _ in range(rng.integers(1, 5))])
    gts, res = _tokenized(preds, refs)
    bleu_ref, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(preds, refs)
    for k in range(4):
        assert ours[f"bleu_{k + 1}"].value == pytest.approx(bleu_ref[k], abs=1e-6)
        np.testing.assert_allclose(ours[f"bleu_{k + 1}"].per_sample, bleu_per[k], atol=1e-6)
    cider_ref, cider_per = Cider().compute_score(gts, res)
    np.testing.assert_allclose(cider_d(preds, refs).per_sample, cider_per, atol=1e-6)
    assert cider_d(preds, refs).value == pytest.approx(cider_ref, abs=1e-6)
    rouge_ref, rouge_per = Rouge().compute_score(gts, res)
    np.testing.assert_allclose(rouge_l(preds, refs, definition="coco").per_sample, rouge_per, atol=1e-6)
