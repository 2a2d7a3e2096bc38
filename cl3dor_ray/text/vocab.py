"""Word lists that hard negatives swap: colours, sizes, relation opposites.

They cover the synthetic rooms and the common words of ScanQA / ScanRefer answers on real ScanNet.
"""

from __future__ import annotations

import re

COLOR_WORDS = (
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "black",
    "brown",
    "gray",
    "grey",
    "orange",
    "purple",
    "pink",
    "beige",
    "tan",
    "silver",
    "gold",
    "wooden",
)


def masking_pattern(labels) -> re.Pattern:
    """Matches category names (and plurals) and colour words, longest first ("trash can" before "can")."""
    vocab = sorted(set(labels) | set(COLOR_WORDS), key=lambda w: (-len(w), w))
    return re.compile(r"\b(" + "|".join(re.escape(w.lower()) for w in vocab) + r")(e?s)?\b")


def question_text(question: str) -> str:
    """The question as a reader of its words alone sees it: lower-cased, spaces collapsed, categories kept."""
    return " ".join(question.lower().split())


def question_template(question: str, pattern: re.Pattern) -> str:
    """The question with its category and colour words masked: "what color is the _ on the _?"."""
    return pattern.sub("_", question.lower())


def caption_color(descriptions: list[str]) -> str | None:
    """The colour word the descriptions of one object use most (ties: alphabetical), if any."""
    counts: dict[str, int] = {}
    for text in descriptions:
        for word in re.findall(r"[a-z]+", text.lower()):
            if word in COLOR_WORDS:
                counts[word] = counts.get(word, 0) + 1
    return min(counts, key=lambda w: (-counts[w], w)) if counts else None


# Each pair flips both ways.
SIZE_OPPOSITES = (("small", "big"), ("large", "small"), ("tall", "short"), ("long", "short"), ("wide", "narrow"))
RELATION_OPPOSITES = (
    ("left", "right"),
    ("above", "below"),
    ("near", "far"),
    ("on", "under"),
    ("top", "bottom"),
    ("front", "behind"),
    ("inside", "outside"),
    ("closer", "farther"),
)


def opposites(pairs) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for a, b in pairs:
        table.setdefault(a, []).append(b)
        table.setdefault(b, []).append(a)
    return table


SIZE_FLIPS = opposites(SIZE_OPPOSITES)
RELATION_FLIPS = opposites(RELATION_OPPOSITES)
