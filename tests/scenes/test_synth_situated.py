"""Synthetic SQA3D questions, checked against the geometry of the scans they were written with."""

import json
import math
import re

import numpy as np
import pytest

from cl3dor_ray.scenes.catalog import plural
from cl3dor_ray.scenes.pose import align_pose
from cl3dor_ray.scenes.scannet import read_scan
from cl3dor_ray.scenes.synth_dataset import synthesize
from cl3dor_ray.text.sqa3d import load_sqa3d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("sqa")
    synthesize(out, 6, seed=11)
    annotations, errors, _ = load_sqa3d(out / "annotations")
    return out, annotations, errors


def _boxes(out, scene_id):
    """label -> [(centre, low, high)] of every object, from the scan's own (axis-aligned) vertices; and
    the scan's axisAlignment."""
    scan = read_scan(out / "scans" / scene_id)
    boxes = {}
    for obj in scan.objects:
        v = scan.vertices[scan.instance_ids == obj.object_id]
        boxes.setdefault(obj.label, []).append(((v.min(0) + v.max(0)) / 2, v.min(0), v.max(0)))
    return boxes, scan.axis_alignment


def _bearing(pose, point):
    x, y, _, _, _, qz, qw = pose
    yaw = 2 * math.atan2(qz, qw)
    a = math.atan2(point[1] - y, point[0] - x) - yaw
    return math.atan2(math.sin(a), math.cos(a))


def test_files_are_official_format_and_read_back_whole(world):
    out, annotations, errors = world
    assert errors == [] and len(annotations) > 40
    questions = json.loads((out / "annotations" / "v1_balanced_questions_train_scannetv2.json").read_text())
    answers = json.loads((out / "annotations" / "v1_balanced_sqa_annotations_train_scannetv2.json").read_text())
    assert set(questions) == {"questions"} and set(answers) == {"annotations"}
    assert {"situation", "alternative_situation", "question", "question_id", "scene_id"} <= set(
        questions["questions"][0]
    )
    assert {"answers", "position", "rotation", "answer_type", "question_type", "scene_id"} <= set(
        answers["annotations"][0]
    )
    assert all(re.match(r"I am (sitting on|standing by) the .+ facing the .+\.$", a.situation) for a in annotations)


def test_answers_agree_with_the_scans(world):
    out, annotations, _ = world
    checked = moved = 0
    for a in annotations:
        boxes, alignment = _boxes(out, a.scene_id)
        pose = align_pose(a.pose, alignment)  # the files keep SQA3D's sensor frame, as the mesh does
        moved += np.linalg.norm(np.array(pose[:2]) - np.array(a.pose[:2])) > 0.1
        unique = {label: b[0] for label, b in boxes.items() if len(b) == 1}
        answer = a.answers[0]
        if (m := re.match(r"Is the (\w[\w ]*?) in front of me\?$", a.question)) and m[1] in unique:
            assert (abs(_bearing(pose, unique[m[1]][0])) < math.pi / 4) == (answer == "yes"), a
        elif (m := re.match(r"Which way should I turn to face the (\w[\w ]*?)\?$", a.question)) and m[1] in unique:
            assert ("left" if _bearing(pose, unique[m[1]][0]) > 0 else "right") == answer, a
        elif m := re.match(r"How many (.+) are in front of me\?$", a.question):
            label = next(lab for lab in boxes if plural(lab) == m[1])
            # the object the agent is at is not counted: it is where the agent is, not in front of it
            near = [b for b in boxes[label] if np.linalg.norm(b[0][:2] - np.array(pose[:2])) > 0.05]
            counted = sum(abs(_bearing(pose, b[0])) < math.pi / 2 for b in near)
            assert abs(counted - int(answer)) <= sum(
                np.linalg.norm(b[0][:2] - np.array(pose[:2])) <= 0.05 for b in boxes[label]
            ), a
        elif (m := re.match(r"Can I reach the (\w[\w ]*?) without standing up\?$", a.question)) and m[1] in unique:
            _, lo, hi = unique[m[1]]
            nearest = np.clip(np.array(pose[:2]), lo[:2], hi[:2])
            assert (np.linalg.norm(nearest - np.array(pose[:2])) < 1.0) == (answer == "yes"), a
        else:
            continue
        checked += 1
    assert checked > 30 and moved > checked / 2


def test_each_question_names_its_objects(world):
    """Our extra field: the object a question names (the answer's, for "what is on my left?"), whose
    bearing agrees with the answer, and every object of the category counted in front."""
    out, annotations, _ = world
    scans = {}
    checked = 0
    for a in annotations:
        scan = scans.setdefault(a.scene_id, read_scan(out / "scans" / a.scene_id))
        labels = {o.object_id: o.label for o in scan.objects}
        assert a.object_ids and all(i in labels for i in a.object_ids), a
        pose = align_pose(a.pose, scan.axis_alignment)
        centre = scan.vertices[scan.instance_ids == a.object_ids[0]]
        centre = (centre.min(0) + centre.max(0)) / 2
        if a.question.startswith("What is"):
            assert labels[a.object_ids[0]] == a.answers[0]
        elif a.question.startswith("Which way"):
            assert labels[a.object_ids[0]] in a.question
            assert ("left" if _bearing(pose, centre) > 0 else "right") == a.answers[0], a
            checked += 1
        elif "in front of me" in a.question and a.question.startswith("Is"):
            assert (abs(_bearing(pose, centre)) < math.pi / 4) == (a.answers[0] == "yes"), a
            checked += 1
        elif a.question.startswith("How many"):
            assert len({labels[i] for i in a.object_ids}) == 1
    assert checked > 20
