"""The text-only baseline: what ScanQA EM a model gets from the question alone, without the scene.

For each validation question, the most frequent training answer of questions with the same template
(the question with category and colour words masked: "what color is the _ on the _?"), else of its
question type. A 3D LMM that scores near this has learned the answer distribution, not the rooms.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from cl3dor_ray.eval.metrics import exact_match
from cl3dor_ray.text.vocab import COLOR_WORDS


def _template(question: str, words: re.Pattern) -> str:
    return words.sub("_", question.lower())


def language_prior(data_dir: str | Path) -> dict[str, float]:
    """`prior.scanqa.em` and `prior.scanqa.em.<question type>` on the validation QA of a prepared folder."""
    data_dir = Path(data_dir)
    samples = pq.read_table(data_dir / "samples", columns=["split", "task", "question", "answers",
                                                           "question_type"]).to_pylist()
    labels = pq.read_table(data_dir / "objects", columns=["label"]).column("label").unique().to_pylist()
    vocab = sorted(set(labels) | set(COLOR_WORDS), key=len, reverse=True)  # "trash can" before "can"
    words = re.compile(r"\b(" + "|".join(re.escape(w.lower()) for w in vocab) + r")(e?s)?\b")
    by_template, by_type = defaultdict(Counter), defaultdict(Counter)
    for s in samples:
        if s["split"] == "train" and s["task"] == "qa":
            by_template[_template(s["question"], words)][s["answers"][0]] += 1
            by_type[s["question_type"]][s["answers"][0]] += 1
    hits = defaultdict(list)
    for s in samples:
        if s["split"] == "val" and s["task"] == "qa":
            counts = by_template.get(_template(s["question"], words)) or by_type.get(s["question_type"])
            hit = bool(counts) and exact_match(counts.most_common(1)[0][0], s["answers"])
            hits["all"].append(hit)
            hits[s["question_type"]].append(hit)
    return {("prior.scanqa.em" if k == "all" else f"prior.scanqa.em.{k}"): sum(v) / len(v) for k, v in hits.items()}
