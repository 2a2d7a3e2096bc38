"""The synthetic world as a controlled testbed: box size alone does not tell the small categories apart
(their shape does), and the question alone does not give the answer."""

import json
from collections import Counter

import numpy as np
import pytest

from cl3dor_ray.eval.prior import box_features, knn_labels, text_prior
from cl3dor_ray.scenes.catalog import CATEGORIES, COLORS
from cl3dor_ray.scenes.densify import densify_objects
from cl3dor_ray.scenes.synth import generate_scene
from cl3dor_ray.scenes.synth_annotations import balance_answers
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
    guess = knn_labels(np.array([feature(r) for r in train]), [r[1] for r in train],
                       np.array([feature(r) for r in val]))
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
    qs = [{"question": f"What color is the {c}?", "answers": [a]}
          for c, a in [("cup", "red")] * 6 + [("book", "blue")] * 2 + [("lamp", "green")] * 2]
    qs += [{"question": "Is there a cup on the table?", "answers": [a]} for a in ["yes"] * 5 + ["no"]]
    kept = balance_answers(qs, np.random.default_rng(0))
    color = Counter(q["answers"][0] for q in kept if q["question"].startswith("What"))
    assert color == {"red": 2, "blue": 2, "green": 2}  # three answers: none above a third
    assert Counter(q["answers"][0] for q in kept if q["question"].startswith("Is")) == {"yes": 1, "no": 1}
    order = [next(i for i, q in enumerate(qs) if q is k) for k in kept]
    assert order == sorted(order)  # the kept questions stay in their original order
    assert balance_answers(qs, np.random.default_rng(0)) == kept


def test_the_question_alone_does_not_answer_it(tmp_path):
    synthesize(tmp_path, 40, seed=4, val_scenes=12)
    qa = {split: json.loads((tmp_path / "annotations" / f"ScanQA_v1.0_{split}.json").read_text())
          for split in ("train", "val")}
    assert len(qa["val"]) >= 250
    prior = text_prior(qa["train"], qa["val"], list(CATEGORIES))
    assert prior["prior.scanqa.em.color"] <= 0.3 and prior["prior.scanqa.em.category"] <= 0.35
    assert prior["prior.scanqa.em.existence"] <= 0.65
    answers = Counter(q["answers"][0] for q in qa["val"] if q["question_type"] == "color")
    assert set(answers) <= set(COLORS) and max(answers.values()) / sum(answers.values()) <= 0.25
