"""The SQA3D reader on a hand-written pair of files in the released format."""

import json

from cl3dor_ray.text.sqa3d import load_sqa3d, question_type

QUESTIONS = {
    "info": {"description": "SQA3D"},
    "questions": [
        {
            "alternative_situation": ["I am facing the desk, sitting on the bed."],
            "question": "What is on my left?",
            "question_id": 220602000000,
            "scene_id": "scene0000_00",
            "situation": "I am sitting on the bed facing the desk.",
        },
        {
            "alternative_situation": [],
            "question": "Can I reach the lamp without standing up?",
            "question_id": 220602000001,
            "scene_id": "scene0000_00",
            "situation": "I am sitting on the bed facing the desk.",
        },
        {
            "alternative_situation": [],
            "question": "Which way should I turn to see the door?",
            "question_id": 220602000002,
            "scene_id": "scene0000_00",
            "situation": "I just walked in through the door.",
        },
        {
            "alternative_situation": [],
            "question": "Is the sofa behind me?",
            "question_id": 220602000003,
            "scene_id": "scene0000_00",
            "situation": "",
        },  # bad: an empty situation
        {
            "alternative_situation": [],
            "question": "How many chairs are in front of me?",
            "question_id": 220602000004,
            "scene_id": "scene0000_00",
            "situation": "I am standing by the window.",
        },  # bad: no annotation
    ],
}
ANNOTATIONS = {
    "annotations": [
        {
            "answers": [{"answer": "nightstand", "answer_confidence": "yes", "answer_id": 1}],
            "answer_type": "other",
            "position": {"x": 1.25, "y": -0.5, "z": 0.0},
            "question_id": 220602000000,
            "question_type": "N/A",
            "rotation": {"_w": 0.7071, "_x": 0.0, "_y": 0.0, "_z": 0.7071},
            "scene_id": "scene0000_00",
        },
        {
            "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}],
            "answer_type": "yes/no",
            "position": {"x": 1.25, "y": -0.5, "z": 0.0},
            "question_id": 220602000001,
            "question_type": "N/A",
            "rotation": {"_w": 0.7071, "_x": 0.0, "_y": 0.0, "_z": 0.7071},
            "scene_id": "scene0000_00",
        },
        {
            "answers": [{"answer": "left", "answer_confidence": "yes", "answer_id": 1}],
            "answer_type": "other",
            "position": {"x": 3.0, "y": 2.0, "z": 0.0},
            "question_id": 220602000002,
            "question_type": "N/A",
            "rotation": "facing north",
            "scene_id": "scene0000_00",
        },  # bad: a rotation that is not a quaternion
        {
            "answers": [{"answer": "no", "answer_confidence": "yes", "answer_id": 1}],
            "answer_type": "yes/no",
            "position": {"x": 0.0, "y": 0.0, "z": 0.0},
            "question_id": 220602000003,
            "question_type": "N/A",
            "rotation": {"_w": 1.0, "_x": 0.0, "_y": 0.0, "_z": 0.0},
            "scene_id": "scene0000_00",
        },
    ]
}


def test_the_released_pair_is_read_joined_and_checked(tmp_path):
    (tmp_path / "v1_balanced_questions_train_scannetv2.json").write_text(json.dumps(QUESTIONS))
    (tmp_path / "v1_balanced_sqa_annotations_train_scannetv2.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "v1_balanced_questions_val_scannetv2.json").write_text(json.dumps(QUESTIONS))  # its pair is missing
    annotations, errors, read = load_sqa3d(tmp_path)
    assert [a.sample_id for a in annotations] == ["sqa3d-220602000000", "sqa3d-220602000001"]
    first = annotations[0]
    assert (first.task, first.split, first.scene_id, first.answers) == ("sqa", "train", "scene0000_00", ["nightstand"])
    assert first.situation == "I am sitting on the bed facing the desk." and first.question == "What is on my left?"
    assert first.pose == [1.25, -0.5, 0.0, 0.0, 0.0, 0.7071, 0.7071]  # x, y, z, qx, qy, qz, qw
    assert [a.question_type for a in annotations] == ["what", "can"]
    reasons = sorted(e.reason for e in errors)
    assert len(reasons) == 4
    assert any("field 'rotation' must be an object" in r and r.startswith("record 2") for r in reasons)
    assert any("field 'situation' must be a non-empty string" in r for r in reasons)
    assert any("220602000004 has no record" in r for r in reasons)
    assert any("v1_balanced_sqa_annotations_val_scannetv2.json is missing" in r for r in reasons)
    assert len(read) == 3


def test_question_types_follow_leo():
    assert [
        question_type(q)
        for q in ("What is it?", "is it red?", "How many?", "Can I sit?", "Which one?", "Where am I?", "")
    ] == ["what", "is", "how", "can", "which", "other", "other"]


def test_object_ids_beside_the_released_fields_are_read_and_may_be_absent(tmp_path):
    annotations = json.loads(json.dumps(ANNOTATIONS))
    annotations["annotations"][1]["object_ids"] = [7]  # ours (synthetic rooms); the release has none
    annotations["annotations"][0]["object_ids"] = ["seven"]  # wrong: reported, the rest kept
    (tmp_path / "v1_balanced_questions_train_scannetv2.json").write_text(json.dumps(QUESTIONS))
    (tmp_path / "v1_balanced_sqa_annotations_train_scannetv2.json").write_text(json.dumps(annotations))
    read, errors, _ = load_sqa3d(tmp_path)
    assert [(a.sample_id, a.object_ids) for a in read] == [("sqa3d-220602000001", [7])]
    assert any("field 'object_ids' must be a list of integers" in e.reason for e in errors)
    (tmp_path / "v1_balanced_sqa_annotations_train_scannetv2.json").write_text(json.dumps(ANNOTATIONS))
    assert [a.object_ids for a in load_sqa3d(tmp_path)[0]] == [[], []]
