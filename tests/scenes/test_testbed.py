"""The synthetic world as a controlled testbed: box size alone does not tell the small categories apart
(their shape does), and the question alone does not give the answer."""

from collections import Counter

import numpy as np
import pytest

from cl3dor_ray.eval.prior import box_features, knn_labels, text_prior
from cl3dor_ray.scenes.catalog import CATEGORIES, COLORS
from cl3dor_ray.scenes.densify import densify_objects
from cl3dor_ray.scenes.synth import generate_scene
from cl3dor_ray.scenes.synth_annotations import balance_answers, balance_question_words
from cl3dor_ray.scenes.synth_dataset import synthesize

SMALL_TABLETOP = ("cup", "glass", "can", "bottle", "book", "box", "keyboard")


def _shape_descriptor(points: np.ndarray) -> np.ndarray:
    """Occupancy of a 4x4x4 grid over the object's own box: where the surface is, not how big the box is."""
    lo, hi = points.min(0), points.max(0)
    cells = np.clip(((points - lo) / np.maximum(hi - lo, 1e-6) * 4).astype(int), 0, 3)
    grid = np.zeros((4, 4, 4))
    np.add.at(grid, tuple(cells.T), 1.0)
    return (grid / len(points)).ravel()


@pytest.fixture(scope="module")
def tabletop_objects():
    """(split, label, box size, dense points) of the small tabletop objects of 40 rooms (the last 10: val)."""
    rows = []
    for i in range(40):
        graph, scene, _ = generate_scene(f"scene{i:04d}_00", seed=3, index=i)
        for cloud in densify_objects(scene, 256, seed=0):
            if cloud.label in SMALL_TABLETOP:
                rows.append(("val" if i >= 30 else "train", cloud.label, cloud.size, cloud.points))
    return rows


def _accuracy(rows, feature) -> float:
    train = [r for r in rows if r[0] == "train"]
    val = [r for r in rows if r[0] == "val"]
    guess = knn_labels(
        np.array([feature(r) for r in train]), [r[1] for r in train], np.array([feature(r) for r in val])
    )
    return float(np.mean([g == r[1] for g, r in zip(guess, val)]))


def test_small_categories_share_box_sizes_but_not_shapes(tabletop_objects):
    labels = Counter(r[1] for r in tabletop_objects if r[0] == "val")
    assert len(labels) == len(SMALL_TABLETOP) and sum(labels.values()) >= 60
    by_box = _accuracy(tabletop_objects, lambda r: box_features(r[2][None])[0])
    by_shape = _accuracy(tabletop_objects, lambda r: _shape_descriptor(r[3]))
    majority = max(labels.values()) / sum(labels.values())
    print(f"box {by_box:.3f}, shape {by_shape:.3f}, majority {majority:.3f}, n {sum(labels.values())}")
    assert by_box < 0.6  # a family's categories draw their boxes from one range
    assert by_shape > by_box + 0.15 and by_shape > majority + 0.3  # the dense surface tells them apart


def test_balancing_caps_every_answer_of_a_template():
    qs = [
        {"question": f"What color is the {c}?", "answers": [a]}
        for c, a in [("cup", "red")] * 6 + [("book", "blue")] * 2 + [("lamp", "green")] * 2
    ]
    qs += [{"question": "Is there a cup on the table?", "answers": [a]} for a in ["yes"] * 5 + ["no"]]
    kept = balance_answers(qs, np.random.default_rng(0))
    color = Counter(q["answers"][0] for q in kept if q["question"].startswith("What"))
    assert color == {"red": 2, "blue": 2, "green": 2}  # three answers: none above a third
    assert Counter(q["answers"][0] for q in kept if q["question"].startswith("Is")) == {"yes": 1, "no": 1}
    order = [next(i for i, q in enumerate(qs) if q is k) for k in kept]
    assert order == sorted(order)  # the kept questions stay in their original order
    assert balance_answers(qs, np.random.default_rng(0)) == kept


def test_balancing_by_the_question_words_keeps_each_text_balanced_within_each_split():
    def q(text, answer, kind="relation"):
        return {"question": text, "answers": [answer], "question_type": kind}

    splits = {
        "train": [q("Where is the pillow placed?", "on the bed")] * 5
        + [q("Is the cup near the bed?", "yes")] * 3
        + [q("Is the cup near the bed?", "no")]
        + [q("How many cups are in the room?", "1", "counting")] * 4,
        "val": [q("Where is the pillow placed?", "on the bed")] * 2 + [q("Is the cup near the bed?", "yes")] * 2,
    }
    out = balance_question_words(splits, np.random.default_rng(0))
    pillow = [(s, r) for s in out for r in out[s] if "pillow" in r["question"]]
    assert len(pillow) == 1  # one answer in the whole world: one question of it, in one split
    assert Counter(r["answers"][0] for r in out["train"] if "cup near" in r["question"]) == {"yes": 1, "no": 1}
    assert len([r for r in out["val"] if "cup near" in r["question"]]) == 1  # one answer within the split
    assert sum(r["question_type"] == "counting" for r in out["train"]) == 4  # left to the template balance
    assert balance_question_words(splits, np.random.default_rng(0)) == out


def test_the_question_words_do_not_answer_it_in_the_ablation_world(tmp_path):
    """configs/ablation.yaml's world: the majority training answer of the exact question text (its
    categories kept; else its template, else its type) on the validation questions, per type."""
    from cl3dor_ray.ablation.plan import load_ablation_config
    from cl3dor_ray.text.annotations import load_annotations
    from cl3dor_ray.text.kinds import answer_kind
    from cl3dor_ray.text.sqa3d import load_sqa3d

    acfg = load_ablation_config("configs/ablation.yaml")
    synthesize(tmp_path, acfg.scenes, acfg.synth_seed, acfg.val_scenes)
    qa, _, _ = load_annotations(tmp_path / "annotations")
    sqa, _, _ = load_sqa3d(tmp_path / "annotations")
    labels = list(CATEGORIES)

    def prior(rows, benchmark):
        rows = [r.to_dict() for r in rows]
        return text_prior(
            [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "val"], labels, benchmark
        )

    scanqa = prior([a for a in qa if a.task == "qa"], "scanqa")
    # situated questions by the kind of their answer: yes/no (is / can ...?) and which way to turn
    situated = [a for a in sqa if answer_kind(a.answers[0], labels) in ("yes/no", "side")]
    for a in situated:
        a.question_type = answer_kind(a.answers[0], labels)
    sqa3d = prior(situated, "sqa3d")
    print({k: round(v, 3) for k, v in {**scanqa, **sqa3d}.items()})
    for kind in ("existence", "relation", "location"):
        assert scanqa[f"prior.scanqa.em.{kind}"] <= 0.6, kind
    for kind in ("yes/no", "side"):
        assert sqa3d[f"prior.sqa3d.em.{kind}"] <= 0.6, kind
    assert scanqa["prior.scanqa.em.color"] <= 0.3 and scanqa["prior.scanqa.em.category"] <= 0.3
    assert sum(a.task == "qa" and a.split == "train" and a.question_type == "counting" for a in qa) >= 100
    val = [a for a in qa if a.task == "qa" and a.split == "val"]
    assert len(val) >= 800
    colours = Counter(a.answers[0] for a in val if a.question_type == "color")
    assert set(colours) <= set(COLORS) and max(colours.values()) / sum(colours.values()) <= 0.25
