import json

from cl3dor_ray.text.annotations import caption_instruction, load_annotations


def _write(folder, name, records):
    (folder / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


def test_reads_the_three_formats_and_groups_scanrefer_by_object(tmp_path):
    _write(
        tmp_path,
        "ScanQA_v1.0_train.json",
        [
            {
                "scene_id": "scene0000_00",
                "question_id": "train-scene0000-0",
                "question": "What color is the chair?",
                "answers": ["brown", " "],
                "object_ids": [3],
                "object_names": ["chair"],
            }
        ],
    )
    _write(
        tmp_path,
        "ScanRefer_filtered_val.json",
        [
            {
                "scene_id": "scene0001_00",
                "object_id": "4",
                "object_name": "cup",
                "ann_id": "0",
                "description": "a cup.",
            },
            {"scene_id": "scene0001_00", "object_id": "4", "object_name": "cup", "ann_id": "1", "description": "red."},
        ],
    )
    _write(
        tmp_path,
        "existence_val.json",
        [
            {
                "scene_id": "scene0001_00",
                "question_id": 7,
                "question": "Is there a bed?",
                "answer": "No",
                "object_name": "bed",
                "pope_type": "adversarial",
            }
        ],
    )
    anns, errors, read = load_annotations(tmp_path)
    assert not errors and len(read) == 3
    qa, cap, pope = sorted(anns, key=lambda a: a.task != "qa")[0], *[a for a in anns if a.task != "qa"]
    assert qa.answers == ["brown"] and qa.object_ids == [3] and qa.split == "train"
    assert cap.task == "caption" and cap.answers == ["a cup.", "red."] and cap.object_ids == [4]
    assert pope.answers == ["no"] and pope.question_type == "adversarial" and pope.sample_id == "pope-7"


def test_bad_records_are_reported_and_the_rest_kept(tmp_path):
    good = {"scene_id": "s", "question_id": "q1", "question": "Q?", "answers": ["a"], "object_ids": []}
    _write(
        tmp_path,
        "ScanQA_v1.0_val.json",
        [
            good,
            {**good, "question_id": "q2", "answers": []},
            {**good, "question_id": "q3", "object_ids": ["x"]},
            {k: v for k, v in good.items() if k != "question"},
            "not a record",
        ],
    )
    (tmp_path / "existence_train.json").write_text("{broken")
    anns, errors, _ = load_annotations(tmp_path)
    assert [a.sample_id for a in anns] == ["scanqa-q1"]
    reasons = [(e.file, e.reason) for e in errors]
    assert ("ScanQA_v1.0_val.json", "record 1: field 'answers' is empty; expected at least one answer") in reasons
    assert ("ScanQA_v1.0_val.json", "record 2: field 'object_ids' must be a list of integers, got ['x']") in reasons
    assert ("ScanQA_v1.0_val.json", "record 3: field 'question' is missing") in reasons
    assert ("ScanQA_v1.0_val.json", "record 4: expected an object, got str") in reasons
    assert any(f == "existence_train.json" and r.startswith("invalid JSON") for f, r in reasons)


def test_caption_instruction_names_the_position():
    assert caption_instruction([1.234, -0.5, 0.04]) == "Describe the object at (1.2, -0.5, 0.0)."
