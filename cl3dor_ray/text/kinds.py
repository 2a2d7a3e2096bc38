"""What kind of answer an answer is: the one thing a hard negative must share with the gold.

A reader of the question alone knows the kind of its answer ("above or below?" takes one of two
words), so a negative of another kind ("keyboard") is ruled out without looking at the room and
teaches the odds ratio nothing. Every generator keeps to the gold answer's kind, and the manifest
reports how often it did.

    yes/no        yes, no
    side          left, right
    above/below   above, below
    near/far      near, far
    count         a number
    colour        a colour word ("red"; "dark brown" too)
    category      an object category of the dataset ("trash can", "the lamp")
    place         where something is: a relation word and a category ("on the desk", "next to the bed")
    caption       a description of an object (Scan2Cap)
    other         anything else
The first six are closed: their wrong answers are a known, small set.
"""

from __future__ import annotations

import functools
import re

from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.text.vocab import COLOR_WORDS

YES_NO, SIDE, VERTICAL, DISTANCE, COUNT, COLOUR = "yes/no", "side", "above/below", "near/far", "count", "colour"
CATEGORY, PLACE, CAPTION, OTHER = "category", "place", "caption", "other"
CLOSED_KINDS = (YES_NO, SIDE, VERTICAL, DISTANCE, COUNT, COLOUR)
KINDS = CLOSED_KINDS + (CATEGORY, PLACE, CAPTION, OTHER)
# the two-word kinds: each word's only wrong answer of its kind is the other word
PAIRS = {YES_NO: ("yes", "no"), SIDE: ("left", "right"), VERTICAL: ("above", "below"), DISTANCE: ("near", "far")}
_PAIR_OF = {w: kind for kind, words in PAIRS.items() for w in words}
# words that start a place phrase ("on the desk", "next to the bed", "to the left of the sofa")
PLACE_WORDS = (
    "on",
    "under",
    "next",
    "beside",
    "behind",
    "in",
    "inside",
    "near",
    "above",
    "below",
    "by",
    "against",
    "between",
    "to",
    "at",
    "left",
    "right",
    "front",
    "outside",
    "across",
    "underneath",
    "over",
)
_COLOURS = set(COLOR_WORDS) | {"dark", "light"}  # "dark brown" is a colour; "dark" alone is not one


@functools.lru_cache(maxsize=8)
def _categories(labels: tuple[str, ...]) -> tuple[frozenset, re.Pattern | None]:
    """The normalised category names (and plurals), and a pattern that finds one inside a phrase."""
    names = sorted({normalize_answer(label) for label in labels if label} - {""}, key=lambda w: (-len(w), w))
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")(e?s)?\b") if names else None
    return frozenset(names) | {n + "s" for n in names} | {n + "es" for n in names}, pattern


def answer_kind(answer: str, labels=(), task: str = "") -> str:
    """The kind of `answer` (see the module's table); `labels` are the dataset's categories."""
    if task == "caption":
        return CAPTION
    norm = normalize_answer(answer)
    words = norm.split()
    if norm in _PAIR_OF:
        return _PAIR_OF[norm]
    if norm.isdigit():
        return COUNT
    if words and set(words) <= _COLOURS and set(words) & set(COLOR_WORDS):
        return COLOUR
    names, pattern = _categories(tuple(labels))
    if norm in names:
        return CATEGORY
    if words and words[0] in PLACE_WORDS and pattern is not None and pattern.search(norm):
        return PLACE
    return OTHER


def same_kind(a: str, b: str, labels=(), task: str = "") -> bool:
    return answer_kind(a, labels, task) == answer_kind(b, labels, task)
