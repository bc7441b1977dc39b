"""The COCO caption tokenizer, in Python (no Java): what pycocoevalcap's ``PTBTokenizer`` produces.

pycocoevalcap (Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server") runs
Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` on every caption and then drops the
tokens in its ``PUNCTUATIONS`` list. BLEU, CIDEr-D, ROUGE-L and METEOR of the COCO suite all score those
tokens, so this module reproduces that pipeline without a Java runtime:

- Penn Treebank splitting: punctuation split off words ("dog." → "dog ."), clitics split
  ("don't" → "do n't", "cat's" → "cat 's", "can't" → "ca n't", "cannot" → "can not", "gonna" → "gon na"),
  hyphenated words, decimals, times and thousands kept whole ("5-year-old", "3.5", "10:30", "1,000"),
  acronyms and common abbreviations keep their periods ("u.s.", "e.g.", "mr.", "st."), brackets become
  PTB escapes, currency signs become "$" / "#" as CoreNLP 3.4.1 writes them;
- lower-casing after tokenisation;
- dropping ``'' ' `` ` . ? ! , : - -- ... ;`` (pycocoevalcap's list). Like pycocoevalcap, the bracket
  escapes are lower-cased *before* that filter, so "-lrb-" / "-rrb-" stay in the tokens.

Parity: tests/evaluation/test_generation_metrics.py holds sentences tokenised by the real CoreNLP jar and,
where Java and pycocoevalcap are installed, compares this tokenizer to the jar live. CoreNLP has rules this
module does not copy, all rare in captions: "y'all" (jar: "y' all"), "a...b" (jar: "a. b") and words with
"!" or "?" inside ("cat!dog"); such words differ by a token or two.
"""

from __future__ import annotations

import re
import unicodedata

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, compared (as there) with the lower-cased tokens.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Abbreviations that keep their period in CoreNLP's PTBLexer (the common subset).
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|prof|st|mt|ft|vs|jr|sr|co|corp|inc|ltd|etc|gen|gov|sen|rep|capt|col|lt|sgt|ave|blvd|rd|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|dept|univ|approx|est|fig|figs"
)
_W = r"[^\W_]"  # a letter or digit (any script)
_TOKEN = re.compile(
    "|".join(
        [
            r"(?:https?://|www\.)\S+",  # URLs and e-mail addresses stay whole
            r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
            rf"(?:{_W}+\.){{2,}}(?!{_W})",  # acronyms with a final period: u.s. e.g. a.m. ph.d.
            rf"(?i:(?:{_ABBREVIATIONS})\.)(?!{_W})",
            r"(?i:no\.)(?=\s+\d)",  # "no. 5" (but "said no." ends a sentence)
            rf"(?i:'n'|'em|'t(?=is(?!{_W})))",  # rock 'n' roll, 'em, 'tis → 't is
            rf"{_W}+?(?=n't(?!{_W}))",  # the stem of a n't clitic: "do" of "don't", "ca" of "can't"
            r"(?i:n't)(?![^\W_])",
            r"\d+(?:[.,:/]\d+)+",  # 3.5  1,000  10:30  2/3 (letters after them split off: "10:30 am")
            rf"[#@]{_W}+",  # hashtags and handles
            rf"(?i:[odl]'{_W}+)",  # o'clock o'neill d'you
            rf"{_W}+(?:[-./]{_W}+)*",  # words, hyphenated words, x.y
            rf"(?i:'(?:s|m|d|re|ve|ll))(?!{_W})",  # clitics 's 'm 'd 're 've 'll
            r"\.\.\.",
            r"--+",
            r"[?!]+",
            r"\S",
        ]
    )
)
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "wanna": ("wan", "na"),
    "gotta": ("got", "ta"),
}
_ESCAPES = {
    "(": "-LRB-",
    ")": "-RRB-",
    "[": "-LSB-",
    "]": "-RSB-",
    "{": "-LCB-",
    "}": "-RCB-",
    '"': "''",
    "€": "$",
    "£": "#",
}
# Typographic characters CoreNLP maps to their ASCII forms before splitting.
_TYPOGRAPHY = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "—": " -- ", "–": " -- ", "…": "...", "\u00a0": " "}
)


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of one caption, lower-cased, before the punctuation filter (for inspection and tests)."""
    text = unicodedata.normalize("NFC", text).translate(_TYPOGRAPHY)
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        token = _ESCAPES.get(token, token)
        split = _SPLIT_WORDS.get(token.lower())
        tokens.extend(split if split else (token,))
    return [t.lower() for t in tokens]


def coco_tokenize(text: str) -> str:
    """One caption as pycocoevalcap tokenises it: PTB tokens, lower-cased, punctuation tokens dropped,
    joined by single spaces. "A Dog's toy." → "a dog 's toy"; "" → "". Newlines count as spaces."""
    return " ".join(t for t in ptb_tokens(text.replace("\n", " ")) if t not in PUNCTUATIONS)


def coco_tokenize_all(texts: list[str]) -> list[str]:
    """:func:`coco_tokenize` of each text."""
    return [coco_tokenize(t) for t in texts]
