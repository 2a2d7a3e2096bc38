"""The one answer normaliser, shared by negative generation and evaluation.

Version it: a metric computed under another normaliser is another metric.
  v1: NFKC, lower case, punctuation -> space, drop articles (a, an, the), number words -> digits,
      collapse whitespace.
  v2: v1, plus the gold-side conventions of LEO's ScanQA evaluation (its `clean_answer`): number
      words up to twenty and "twenty three", the typo table of ScanQA's answers ("letf" -> "left",
      "backwards" -> "backward", "oclock" -> "o clock"), and a digit stuck to the end of a word dropped
      ("mat2" -> "mat"). LEO maps digits to words and we map words to digits: the same equivalence.
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZER_VERSION = "cl3dor-answer-norm-v2"

NUMBER_WORDS = {
    "zero": "0",
    "none": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
}
# the misspellings of ScanQA's answers that LEO's evaluation corrects, word for word
TYPOS = {
    "letf": "left",
    "let": "left",
    "tehre": "there",
    "rigth": "right",
    "rght": "right",
    "behine": "behind",
    "chai": "chair",
    "wasing": "washing",
    "waslked": "walked",
    "backwards": "backward",
    "oclock": "o clock",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]", flags=re.UNICODE)
_WORD_AND_DIGIT = re.compile(r"^([^\W\d_]+)\d$", flags=re.UNICODE)  # "mat2", "no1"


def _word(w: str) -> str:
    w = TYPOS.get(w, w)
    w = _WORD_AND_DIGIT.sub(r"\1", w)
    return NUMBER_WORDS.get(w, w)


_SPELLED = {digits: word for word, digits in NUMBER_WORDS.items() if word != "none"} | {"23": "twenty three"}


def spell_numbers(normalized: str) -> str:
    """A normalised answer with its numbers in words again ("2 chairs" -> "two chairs"), for EM-refined's
    containment test, which LEO runs on words: "2" is inside "12", but "two" is not inside "twelve"."""
    return " ".join(_SPELLED.get(w, w) for w in normalized.split())


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    words = [w for w in _PUNCT.sub(" ", text).split() if w not in _ARTICLES]
    out: list[str] = []
    for i, w in enumerate(words):
        if w == "three" and i and words[i - 1] == "twenty":
            out[-1] = "23"  # "twenty-three", the one compound number in LEO's table
            continue
        out.append(_word(w))
    return " ".join(out)
