"""Baselines that do not look at the scene the way a 3D LMM should.

The text-only prior: what EM a model gets from the question alone. For each validation question, the
most frequent training answer of the same question text (lower-cased, its category words kept: "where
is the pillow placed?" is answered "on the bed" if that is what training said most often), else of
questions with the same template (category and colour words masked: "what color is the _ on the _?"),
else of its question type. A 3D LMM that scores near this has learned the answer distribution, not
the rooms.

The box-size prior: how well an object's category follows from its bounding box alone (k nearest
training objects by footprint and height). Where it is low, telling categories apart takes their shape,
which is what denser point clouds are meant to show the encoder.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cl3dor_ray.data.objects import SMALL_OBJECT_M
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.eval.metrics import exact_match
from cl3dor_ray.text.vocab import masking_pattern, question_template, question_text


def text_prior(train: list[dict], val: list[dict], labels, benchmark: str = "scanqa") -> dict[str, float]:
    """EM of answering each val question {question, answers, question_type} with the majority training
    answer of the same question text, else of its template (category names `labels` and colour words
    masked), else of its type. Keys `prior.<benchmark>.em[.<type>]`."""
    words = masking_pattern(labels)
    by_text, by_template, by_type = defaultdict(Counter), defaultdict(Counter), defaultdict(Counter)
    for s in train:
        by_text[question_text(s["question"])][s["answers"][0]] += 1
        by_template[question_template(s["question"], words)][s["answers"][0]] += 1
        by_type[s["question_type"]][s["answers"][0]] += 1
    hits = defaultdict(list)
    for s in val:
        counts = (
            by_text.get(question_text(s["question"]))
            or by_template.get(question_template(s["question"], words))
            or by_type.get(s["question_type"])
        )
        hit = bool(counts) and exact_match(counts.most_common(1)[0][0], s["answers"])
        hits["all"].append(hit)
        hits[s["question_type"]].append(hit)
    return {
        (f"prior.{benchmark}.em" if k == "all" else f"prior.{benchmark}.em.{k}"): sum(v) / len(v)
        for k, v in hits.items()
    }


# The tasks a text-only prior is reported for, and their benchmark names in metrics.json.
PRIOR_TASKS = {"qa": "scanqa", "sqa": "sqa3d"}


def language_prior(data_dir: str | Path) -> dict[str, float]:
    """`prior.<scanqa|sqa3d>.em` and `.em.<question type>` on the validation questions of a prepared folder.
    SQA3D's prior reads the question without its situation: the situation names where the agent is,
    which is what a model has to look at the room to use."""
    prepared = Prepared(data_dir)
    columns = ["question", "answers", "question_type"]
    labels = prepared.object_table(["label"]).column("label").unique().to_pylist()
    metrics: dict[str, float] = {}
    for task, benchmark in PRIOR_TASKS.items():
        val = prepared.samples("val", [task], columns).to_pylist()
        if val:
            metrics.update(text_prior(prepared.samples("train", [task], columns).to_pylist(), val, labels, benchmark))
    return metrics


BOX_NEIGHBOURS = 7


def box_features(size: np.ndarray) -> np.ndarray:
    """(N, 3) box extents -> log(long side, short side, height): the same for a box turned a quarter."""
    size = np.maximum(np.asarray(size, dtype=np.float64), 1e-3)
    return np.log(np.stack([size[:, :2].max(1), size[:, :2].min(1), size[:, 2]], 1))


def knn_labels(train_x: np.ndarray, train_y: list[str], x: np.ndarray, k: int = BOX_NEIGHBOURS) -> list[str]:
    """Majority label of the k nearest training rows (standardised features); ties go to the nearer label."""
    scale = train_x.std(0) + 1e-9
    out = []
    for row in x:
        nearest = np.argsort(np.linalg.norm((train_x - row) / scale, axis=1), kind="stable")[:k]
        votes = Counter(train_y[j] for j in nearest)
        best = max(votes.values())
        out.append(next(train_y[j] for j in nearest if votes[train_y[j]] == best))
    return out


def box_size_prior(data_dir: str | Path) -> dict[str, float]:
    """`prior.box.accuracy` and `.small_objects` / `.large_objects`: validation objects classified by their box."""
    prepared = Prepared(data_dir)
    splits = prepared.scene_splits()
    t = prepared.object_table(["scene_id", "label", "size"]).to_pydict()
    rows = {
        split: [(lab, size) for s, lab, size in zip(t["scene_id"], t["label"], t["size"]) if splits.get(s) == split]
        for split in ("train", "val")
    }
    if not rows["train"] or not rows["val"]:
        return {}
    train_x = box_features(np.array([size for _, size in rows["train"]]))
    val_size = np.array([size for _, size in rows["val"]])
    guess = knn_labels(train_x, [lab for lab, _ in rows["train"]], box_features(val_size))
    hit = np.array([g == lab for g, (lab, _) in zip(guess, rows["val"])])
    small = val_size.max(1) < SMALL_OBJECT_M
    out = {"prior.box.accuracy": float(hit.mean())}
    for name, mask in (("small_objects", small), ("large_objects", ~small)):
        if mask.any():
            out[f"prior.box.accuracy.{name}"] = float(hit[mask].mean())
    return out
