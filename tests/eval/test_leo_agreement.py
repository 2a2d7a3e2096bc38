"""Our ScanQA EM and EM-refined against LEO's rules (its `clean_answer` on both sides, then `answer_match`).

`leo_em` restates LEO's rules (embodied-generalist, data/data_utils.py and evaluator/scanqa_eval.py, as
Chat-Scene also uses them) in the order LEO applies them. Every pair of the table scores the same under
both, except the rows marked as our deliberate fixes, which the README lists.
"""

import re

import pytest

from cl3dor_ray.eval.metrics import exact_match, exact_match_refined

_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_LEO_RULES = (
    [(r"^ +| +$", ""), (r" {2,}", " "), (r"\.[ ]{2,}", ". "), (r"[^a-zA-Z0-9,'\s\-:]+", ""), ("\u2019", "'")]
    + [
        (rf"\b{typo}\b", fix)
        for typo, fix in [
            ("letf", "left"),
            ("let", "left"),
            ("tehre", "there"),
            ("rigth", "right"),
            ("rght", "right"),
            ("behine", "behind"),
            ("tv", "TV"),
            ("chai", "chair"),
            ("wasing", "washing"),
            ("waslked", "walked"),
            ("oclock", "o'clock"),
            ("o'[ ]+clock", "o'clock"),
        ]
    ]
    + [(r"\b0\b", "zero"), (r"\bnone\b", "zero")]
    + [(rf"\b{i}\b", w) for i, w in enumerate(_NUMBERS) if i]
    + [(r"\b23\b", "twenty-three")]
    + [(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>")]
    + [(rf"\b{article}\b ([a-zA-Z]+)", r"\g<1>") for article in ("a", "an", "the")]
    + [(r"\bbackwards\b", "backward")]
)


def leo_clean(text: str) -> str:
    text = text.lower()
    for pattern, replacement in _LEO_RULES:
        text = re.sub(pattern, replacement, text)
    return text


def leo_em(pred: str, golds: list[str]) -> tuple[bool, bool]:
    pred, golds = leo_clean(pred), [leo_clean(g) for g in golds]
    if not pred:
        return False, False
    if pred in golds:
        return True, True
    squeeze = lambda s: "".join(s.split())  # noqa: E731
    return False, any(squeeze(pred) in squeeze(g) or squeeze(g) in squeeze(pred) for g in golds)


AGREE = [  # ScanQA-style answers: the same EM and EM-refined under LEO's rules and ours
    ("brown", ["brown"]),
    ("Brown.", ["brown"]),
    ("the brown table", ["brown table"]),
    ("two", ["2"]),
    ("2", ["two"]),
    ("thirteen", ["13"]),
    ("19", ["nineteen"]),
    ("twenty-three", ["23"]),
    ("none", ["0"]),
    ("trashcan", ["trash can"]),
    ("trash can", ["trashcan"]),
    ("left", ["letf"]),
    ("right side", ["rigth side"]),
    ("behind the door", ["behine door"]),
    ("3 oclock", ["three o'clock"]),
    ("backward", ["backwards"]),
    ("mat", ["mat2"]),
    ("brown", ["dark brown"]),
    ("on the wooden table", ["table"]),
    ("chair", ["table", "desk"]),
    ("2", ["12"]),
    ("one", ["someone"]),
    ("white tv", ["white TV"]),
    ("in the corner of the room", ["corner"]),
    ("25", ["twenty five"]),
    ("", ["table"]),
    ("under the desk", ["below desk", "under desk"]),
    ("black office chair", ["office chair", "black chair"]),
]
FIXES = [  # our deliberate fixes: (pred, golds, our EM, our EM-refined), README "Answer normaliser"
    ("a", ["a"], False, False),  # an answer the normaliser empties is no answer (LEO: 1, 1)
    ("brown, wooden", ["brown wooden"], True, True),  # punctuation is not part of an answer (LEO: 0, 0)
    ("café", ["cafe"], False, False),  # letters outside ASCII are kept, not deleted (LEO: 0, 1: "caf" in "cafe")
]


def test_the_table_is_big_enough():
    assert len(AGREE) + len(FIXES) >= 20


@pytest.mark.parametrize("pred, golds", AGREE)
def test_same_em_and_refined_as_leo(pred, golds):
    assert (exact_match(pred, golds), exact_match_refined(pred, golds)) == leo_em(pred, golds)


@pytest.mark.parametrize("pred, golds, em, refined", FIXES)
def test_deliberate_fixes_differ_from_leo_as_documented(pred, golds, em, refined):
    assert (exact_match(pred, golds), exact_match_refined(pred, golds)) == (em, refined)
    assert leo_em(pred, golds) != (em, refined)
