"""Hard negative answers: plausible, wrong, of the gold answer's kind, and built from the scene itself.

A negative is hard when a reader of the question alone would accept it: it is of the gold answer's
kind (text/kinds.py). A yes/no question's negative is the other word, a side's the other side, an
above/below's the other word; a count's, a nearby count; a colour's, another colour (said about this
room first); a category's, another category (in this room first); a place's or a caption's, the same
phrase with one fact changed. A sample carries between 1 and K of them: fewer real negatives beat K
padded with fillers that the question alone rules out.

Strategies (the `kind` recorded with each negative), hardest first:
  tier 0  existence_flip         yes <-> no
          relation_flip          left/right, above/below, near/far, on/under, ... (a side, or inside a place)
          count_change           +-1
          category_swap_present  another category that is in the same room ("cup" -> "book")
          attribute_swap_color   a colour that appears in this room's annotations
  tier 1  attribute_swap_size    small <-> big, tall <-> short
          count_change           +-2
          attribute_swap_color   any other colour
  tier 2  category_swap_absent   a category of the dataset that is not in this room
  tier 3  scene_answer           the answer to another question about the same room, of the same kind
  tier 4  random_answer          an answer of the dataset of the same kind
Captions get the swaps, one fact at a time, with the kind `caption_corruption` (the rest of the
description stays as it was, so it stays fluent).

Rules: a negative is of the gold answer's kind; it never equals a gold answer after
`normalize_answer`; no two negatives of a sample are equal after it; there are at most K; the result
is a function of (seed, sample_id).

`NegativeGenerator` is the interface: the data stage builds one per Ray Data actor from a name
(text/generators.py). "llm" (text/llm_negatives.py) has a local LLM write them, in a pool of actors.
`RandomNegatives` ("random") is the ablation's control: answers of the gold's kind, drawn without
looking at the scene.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cl3dor_ray.text.kinds import CAPTION, CATEGORY, COLOUR, COUNT, PAIRS, YES_NO, answer_kind
from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.text.vocab import COLOR_WORDS, RELATION_FLIPS, SIZE_FLIPS

FALLBACK_KINDS = ("scene_answer", "random_answer")
# spellings of one colour: never each other's negative
_SAME_COLOUR = {"gray": "grey", "grey": "gray"}


@dataclass(frozen=True)
class HardNegative:
    text: str
    kind: str


@dataclass
class SceneContext:
    """What negatives may draw on: the room's categories, the colours said about it, its other answers."""

    scene_id: str
    labels: tuple[str, ...]  # categories present (structure excluded)
    colors: tuple[str, ...] = ()  # colour words used in this room's annotations
    answers: tuple[str, ...] = ()  # gold answers of the room's samples


@dataclass
class Vocabulary:
    """Dataset-wide words: all categories, the short answers (QA, existence) and the captions."""

    labels: tuple[str, ...]
    answers: tuple[str, ...]
    captions: tuple[str, ...] = ()

    def answers_by_kind(self) -> dict[str, list[str]]:
        """The short answers grouped by their kind (text/kinds.py), in the vocabulary's order."""
        out: dict[str, list[str]] = {}
        for a in self.answers:
            out.setdefault(answer_kind(a, self.labels), []).append(a)
        return out


class NegativeGenerator(Protocol):
    name: str
    needs_actor: bool  # True for generators that hold a model: Ray Data runs them in a pool of actors

    def generate(
        self, task: str, answers: list[str], scene: SceneContext, k: int, rng: np.random.Generator, question: str = ""
    ) -> list[HardNegative]:
        """At most k negatives of the gold answers' kind (and this instruction, for a generator that
        reads it); fewer when the kind has fewer wrong answers (yes/no has one)."""


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])


def _word_pattern(words) -> re.Pattern | None:
    words = sorted({w for w in words if w}, key=len, reverse=True)  # "trash can" before "can"
    if not words:
        return None
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", flags=re.IGNORECASE)


def _replace_at(text: str, match: re.Match, new: str) -> str:
    return text[: match.start()] + new + text[match.end() :]


def _other_word(kind: str, norm: str) -> str:
    a, b = PAIRS[kind]
    return b if norm == a else a


def _distinct(
    candidates, answers: list[str], chosen: list[HardNegative], k: int, rng: np.random.Generator, keep=lambda text: True
) -> list[HardNegative]:
    """`chosen` topped up to k from (tier, kind, text) candidates, tier by tier, in a random order within a
    tier: none equal to a gold answer or to another after the normaliser, each one `keep` accepts."""
    tiers: dict[int, list[tuple[str, str]]] = {}
    for tier, kind, text in candidates:
        tiers.setdefault(tier, []).append((kind, text))
    chosen = list(chosen[:k])
    seen = {normalize_answer(a) for a in answers} | {normalize_answer(n.text) for n in chosen}
    seen |= {_SAME_COLOUR[w] for w in seen if w in _SAME_COLOUR}
    for tier in sorted(tiers):
        if len(chosen) == k:
            break
        options = tiers[tier]
        for i in rng.permutation(len(options)):
            kind, text = options[i]
            norm = normalize_answer(text)
            if norm and norm not in seen and keep(text):
                seen.add(norm)
                chosen.append(HardNegative(text, kind))
                if len(chosen) == k:
                    break
    return chosen


class RuleBasedNegatives:
    """The default generator: swaps one fact of the reference answer using the scene's own vocabulary."""

    name = "rule"
    needs_actor = False  # regexes only: cheap to build in every task

    def __init__(self, vocabulary: Vocabulary):
        self.vocab = vocabulary
        self._by_kind = vocabulary.answers_by_kind()
        self._labels = _word_pattern(vocabulary.labels)
        self._colors = _word_pattern(COLOR_WORDS)
        self._sizes = _word_pattern(SIZE_FLIPS)
        self._relations = _word_pattern(RELATION_FLIPS)

    # ---- candidates, as (tier, kind, text)
    def _swaps(self, ref: str, scene: SceneContext):
        if self._labels is not None:
            present = set(scene.labels)
            for m in self._labels.finditer(ref):
                for label in self.vocab.labels:
                    if label.lower() != m.group(0).lower():
                        hard = label in present
                        yield (
                            (0 if hard else 2),
                            ("category_swap_present" if hard else "category_swap_absent"),
                            _replace_at(ref, m, label),
                        )
        for m in self._colors.finditer(ref):
            for color in COLOR_WORDS:
                if color != m.group(0).lower():
                    yield (0 if color in scene.colors else 1), "attribute_swap_color", _replace_at(ref, m, color)
        for m in self._sizes.finditer(ref):
            for other in SIZE_FLIPS[m.group(0).lower()]:
                yield 1, "attribute_swap_size", _replace_at(ref, m, other)
        for m in self._relations.finditer(ref):
            for other in RELATION_FLIPS[m.group(0).lower()]:
                yield 0, "relation_flip", _replace_at(ref, m, other)

    def _candidates(self, task: str, ref: str, kind: str, scene: SceneContext):
        norm = normalize_answer(ref)
        if kind in PAIRS:  # the other word is the only wrong answer of the kind
            yield 0, "existence_flip" if kind == YES_NO else "relation_flip", _other_word(kind, norm)
            return
        if kind == COUNT:
            n = int(norm)
            for delta, tier in ((1, 0), (-1, 0), (2, 1), (-2, 1)):
                if n + delta >= 0:
                    yield tier, "count_change", str(n + delta)
            return
        if kind == COLOUR:
            for color in COLOR_WORDS:
                if color not in norm.split():  # "brown" is not wrong for "dark brown"
                    yield (0 if color in scene.colors else 1), "attribute_swap_color", color
        elif kind == CATEGORY:
            present = set(scene.labels)
            for label in self.vocab.labels:
                yield (
                    (0 if label in present else 2),
                    ("category_swap_present" if label in present else "category_swap_absent"),
                    label,
                )
        else:  # a place, a caption or a free answer: one fact changed, the rest as it was
            for tier, swap, text in self._swaps(ref, scene):
                yield tier, ("caption_corruption" if task == "caption" else swap), text
        if kind != CAPTION:
            for answer in scene.answers:
                yield 3, "scene_answer", answer
            for answer in self._by_kind.get(kind, ()):
                yield 4, "random_answer", answer

    def generate(self, task, answers, scene, k, rng, question=""):
        return self.fill([], task, answers, scene, k, rng)

    def fill(self, chosen: list[HardNegative], task, answers, scene, k, rng) -> list[HardNegative]:
        """`chosen` (another generator's) topped up to k with the hardest rule-based negatives of the gold
        answer's kind that differ from it and from the gold answers; fewer when the kind has no more."""
        labels = self.vocab.labels
        kind = answer_kind(answers[0], labels, task)
        return _distinct(
            self._candidates(task, answers[0], kind, scene),
            answers,
            chosen,
            k,
            rng,
            keep=lambda text: answer_kind(text, labels, task) == kind,
        )


class RandomNegatives:
    """Answers of the gold answer's kind drawn uniformly from the dataset, without looking at the scene.

    The control for hard negatives ("random negatives" in the ablation): the same kinds, the same K and
    the same rules (never a gold answer, distinct, deterministic), but no knowledge of the room. Where a
    kind has one wrong answer (yes/no, a side) it is the same as the hard one; the two differ in which
    colour, category, count, place or caption they pick.
    """

    name = "random"
    needs_actor = False

    def __init__(self, vocabulary: Vocabulary):
        self.vocab = vocabulary
        self._by_kind = vocabulary.answers_by_kind()
        self._by_kind[COLOUR] = list(dict.fromkeys(list(COLOR_WORDS) + self._by_kind.get(COLOUR, [])))
        self._by_kind[CATEGORY] = list(dict.fromkeys(list(vocabulary.labels) + self._by_kind.get(CATEGORY, [])))
        for kind, words in PAIRS.items():
            self._by_kind[kind] = list(words)
        self._by_kind[CAPTION] = list(vocabulary.captions)

    def generate(self, task, answers, scene, k, rng, question=""):
        kind = answer_kind(answers[0], self.vocab.labels, task)
        pool = self._by_kind.get(kind, [])
        return _distinct(((0, "random_answer", a) for a in pool), answers, [], k, rng)
