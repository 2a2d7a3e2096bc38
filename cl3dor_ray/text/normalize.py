"""The one answer normaliser, shared by negative generation and evaluation.

Version it: a metric computed under another normaliser is another metric.
  v1: NFKC, lower case, punctuation -> space, drop articles (a, an, the), number words -> digits,
      collapse whitespace.
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZER_VERSION = "cl3dor-answer-norm-v1"

NUMBER_WORDS = {
    "zero": "0", "none": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]", flags=re.UNICODE)


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)
