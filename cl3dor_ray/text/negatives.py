"""Hard negative answers: plausible, wrong, and built from the scene itself.

Strategies (the `kind` recorded with each negative), hardest first:
  tier 0  category_swap_present  another category that is in the same room ("cup" -> "book")
          relation_flip          left/right, above/below, near/far, on/under, ...
          existence_flip         yes <-> no
          count_change           +-1
          attribute_swap_color   a colour that appears in this room's annotations
  tier 1  attribute_swap_size    small <-> big, tall <-> short
          count_change           +-2
          attribute_swap_color   any other colour
  tier 2  category_swap_absent   a category of the dataset that is not in this room
  fallback, when the scene cannot support K distinct hard negatives:
  tier 3  scene_answer           the answer to another question about the same room
  tier 4  random_answer          a word of the dataset's answer vocabulary
Captions get the same swaps, one fact at a time, with the kind `caption_corruption` (the rest of
the description stays as it was, so it stays fluent).

Rules: a negative never equals a gold answer after `normalize_answer`; no two negatives of a
sample are equal after it; there are exactly K; the result is a function of (seed, sample_id).

`NegativeGenerator` is the interface: the data stage builds one per Ray Data actor from a name
(text/generators.py). "llm" (text/llm_negatives.py) has a local LLM write them, in a pool of actors.
`RandomNegatives` ("random") is the ablation's control: answers of other samples, not hard ones.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.text.vocab import COLOR_WORDS, RELATION_FLIPS, SIZE_FLIPS

FALLBACK_KINDS = ("scene_answer", "random_answer")


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


class NegativeGenerator(Protocol):
    name: str
    needs_actor: bool  # True for generators that hold a model: Ray Data runs them in a pool of actors

    def generate(self, task: str, answers: list[str], scene: SceneContext, k: int,
                 rng: np.random.Generator, question: str = "") -> list[HardNegative]:
        """Exactly k negatives for a sample with these gold answers (and this instruction, for a
        generator that reads it)."""


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])


def _word_pattern(words) -> re.Pattern | None:
    words = sorted({w for w in words if w}, key=len, reverse=True)  # "trash can" before "can"
    if not words:
        return None
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", flags=re.IGNORECASE)


def _replace_at(text: str, match: re.Match, new: str) -> str:
    return text[: match.start()] + new + text[match.end():]


class RuleBasedNegatives:
    """The default generator: swaps one fact of the reference answer using the scene's own vocabulary."""

    name = "rule"
    needs_actor = False  # regexes only: cheap to build in every task

    def __init__(self, vocabulary: Vocabulary):
        self.vocab = vocabulary
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
                        yield (0 if hard else 2), ("category_swap_present" if hard else "category_swap_absent"), \
                            _replace_at(ref, m, label)
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

    def _candidates(self, task: str, ref: str, scene: SceneContext):
        norm = normalize_answer(ref)
        if norm in ("yes", "no"):
            yield 0, "existence_flip", "no" if norm == "yes" else "yes"
        elif norm.isdigit():
            n = int(norm)
            for delta, tier in ((1, 0), (-1, 0), (2, 1), (-2, 1)):
                if n + delta >= 0:
                    yield tier, "count_change", str(n + delta)
        else:
            for tier, kind, text in self._swaps(ref, scene):
                yield tier, ("caption_corruption" if task == "caption" else kind), text
        for answer in scene.answers:
            yield 3, "scene_answer", answer
        for answer in self.vocab.answers:
            yield 4, "random_answer", answer

    def generate(self, task, answers, scene, k, rng, question=""):
        return self.fill([], task, answers, scene, k, rng)

    def fill(self, chosen: list[HardNegative], task, answers, scene, k, rng) -> list[HardNegative]:
        """`chosen` (another generator's) topped up to k with the hardest rule-based negatives that differ
        from it and from the gold answers."""
        tiers: dict[int, list[tuple[str, str]]] = {}
        for tier, kind, text in self._candidates(task, answers[0], scene):
            tiers.setdefault(tier, []).append((kind, text))
        chosen = list(chosen[:k])
        if len(chosen) == k:
            return chosen
        seen = {normalize_answer(a) for a in answers} | {normalize_answer(n.text) for n in chosen}
        for tier in sorted(tiers):
            options = tiers[tier]
            for i in rng.permutation(len(options)):
                kind, text = options[i]
                norm = normalize_answer(text)
                if norm and norm not in seen:
                    seen.add(norm)
                    chosen.append(HardNegative(text, kind))
                    if len(chosen) == k:
                        return chosen
        raise ValueError(f"only {len(chosen)} distinct negatives exist for answers {answers!r}; "
                         f"the vocabulary is too small for K = {k}")


class RandomNegatives:
    """Answers of other samples of the same task, drawn uniformly: wrong, but rarely about this scene.

    The control for hard negatives ("random negatives" in the ablation): it has the same K and the
    same rules (never a gold answer, distinct, deterministic) but no knowledge of the scene.
    """

    name = "random"
    needs_actor = False

    def __init__(self, vocabulary: Vocabulary):
        self.vocab = vocabulary

    def generate(self, task, answers, scene, k, rng, question=""):
        pool = self.vocab.captions if task == "caption" and self.vocab.captions else self.vocab.answers
        seen = {normalize_answer(a) for a in answers}
        chosen: list[HardNegative] = []
        for i in rng.permutation(len(pool)):
            norm = normalize_answer(pool[i])
            if norm and norm not in seen:
                seen.add(norm)
                chosen.append(HardNegative(pool[i], "random_answer"))
                if len(chosen) == k:
                    return chosen
        raise ValueError(f"only {len(chosen)} distinct answers of other samples differ from {answers!r}; "
                         f"need K = {k}")
