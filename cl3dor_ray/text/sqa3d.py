"""SQA3D (Ma et al., ICLR 2023) situated question answering, read from the files as released.

    v1_balanced_questions_{split}_scannetv2.json        {"questions": [{situation, alternative_situation,
                                                          question, question_id, scene_id}]}
    v1_balanced_sqa_annotations_{split}_scannetv2.json  {"annotations": [{question_id, scene_id,
                                                          answers: [{answer, answer_confidence, answer_id}],
                                                          position: {x, y, z}, rotation: {_x, _y, _z, _w},
                                                          answer_type, question_type}]}

The two files of a split are joined on question_id. An annotation may carry `object_ids` (the
objects the question is about), which the release does not have and our synthetic rooms write; it is
read where present and is [] otherwise. Each question becomes an `Annotation` of task
"sqa" whose `situation` is the agent's description of where it is ("I am sitting on the bed facing
the desk") and whose `pose` is its position and orientation (x, y, z, qx, qy, qz, qw) in the scan's
frame; `question_type` is LEO's split by the question's first word. A bad record becomes an
`AnnotationError` naming the file, the record and the field; the rest are kept.

The pose stays in the scan's sensor frame here; prepare moves it into the axis-aligned frame of the
prepared objects (scenes/pose.py), and the collator turns the room into the agent's frame with it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from cl3dor_ray.text.annotations import Annotation, AnnotationError, _id, _int_list, _Invalid, _text

SPLITS = ("train", "val", "test")
QUESTIONS = "v1_balanced_questions_{split}_scannetv2.json"
ANSWERS = "v1_balanced_sqa_annotations_{split}_scannetv2.json"
FIRST_WORDS = ("what", "is", "how", "can", "which")  # LEO's question types; anything else is "other"


def question_type(question: str) -> str:
    words = question.strip().lower().split()
    return words[0] if words and words[0] in FIRST_WORDS else "other"


# SQA3D's situations and questions speak as the agent ("I am sitting on the bed"); the model is told
# where it is ("You are sitting on the bed"), as LEO rewrites them.
_SECOND_PERSON = [
    (r"\bI am\b", "you are"),
    (r"\bam I\b", "are you"),
    (r"\bI'm\b", "you're"),
    (r"\bI\b", "you"),
    (r"\bmyself\b", "yourself"),
    (r"\bmine\b", "yours"),
    (r"\bmy\b", "your"),
    (r"\bme\b", "you"),
]


def second_person(text: str) -> str:
    for pattern, replacement in _SECOND_PERSON:
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE if pattern != r"\bI\b" else 0)
    return text[:1].upper() + text[1:]


def situated_instruction(question: str, situation: str = "") -> str:
    """The instruction of a situated question: where the agent is, then what it asks; a plain question
    stays as it is."""
    if not situation:
        return question
    return f"{second_person(situation.strip())} {second_person(question.strip())}"


def check_pose(pose) -> list[float]:
    """The pose as 7 floats; ValueError naming what is wrong otherwise."""
    values = list(pose)
    if len(values) != 7:
        raise ValueError(f"a pose is 7 numbers (x, y, z, qx, qy, qz, qw), got {len(values)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"a pose's 7 numbers must be finite, got {values}")
    if math.hypot(*values[3:]) < 1e-6:
        raise ValueError("the pose's quaternion (qx, qy, qz, qw) is zero; expected a rotation")
    return [float(v) for v in values]


def _number(rec: dict, key: str, where: str) -> float:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"field '{where}.{key}' must be a number, got {value!r}")
    return float(value)


def _pose(rec: dict) -> list[float]:
    position, rotation = rec.get("position"), rec.get("rotation")
    if not isinstance(position, dict):
        raise _Invalid(f"field 'position' must be an object {{x, y, z}}, got {position!r}")
    if not isinstance(rotation, dict):
        raise _Invalid(f"field 'rotation' must be an object {{_x, _y, _z, _w}}, got {rotation!r}")
    pose = [_number(position, k, "position") for k in ("x", "y", "z")] + [
        _number(rotation, k, "rotation") for k in ("_x", "_y", "_z", "_w")
    ]
    try:
        return check_pose(pose)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _answers(rec: dict) -> list[str]:
    answers = rec.get("answers")
    if not isinstance(answers, list) or not answers:
        raise _Invalid(f"field 'answers' must be a non-empty list of {{answer, ...}}, got {answers!r}")
    out = []
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str) or not a["answer"].strip():
            raise _Invalid(f"field 'answers[{i}].answer' must be a non-empty string, got {a!r}")
        out.append(a["answer"].strip())
    return out


def _records(path: Path, key: str) -> list:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise _Invalid(f"expected a JSON object with a list under '{key}'")
    return data[key]


def load_sqa3d(folder: str | Path, splits=SPLITS) -> tuple[list[Annotation], list[AnnotationError], list[str]]:
    """Every split whose two files are in `folder`. Returns (annotations, errors, files read)."""
    folder = Path(folder)
    annotations: list[Annotation] = []
    errors: list[AnnotationError] = []
    read: list[str] = []
    for split in splits:
        q_path, a_path = folder / QUESTIONS.format(split=split), folder / ANSWERS.format(split=split)
        present = [p for p in (q_path, a_path) if p.is_file()]
        read += [p.name for p in present]
        if len(present) == 1:
            missing = a_path if present[0] == q_path else q_path
            errors.append(AnnotationError("", present[0].name, f"{missing.name} is missing; SQA3D needs both files"))
        if len(present) < 2:
            continue
        try:
            questions, answers = _records(q_path, "questions"), _records(a_path, "annotations")
        except (json.JSONDecodeError, UnicodeDecodeError, _Invalid) as e:
            errors.append(AnnotationError("", f"{q_path.name} / {a_path.name}", f"invalid file: {e}"))
            continue
        by_id: dict[str, dict] = {}
        for i, rec in enumerate(answers):
            try:
                if not isinstance(rec, dict):
                    raise _Invalid(f"expected an object, got {type(rec).__name__}")
                by_id[_id(rec, "question_id")] = rec
            except _Invalid as e:
                errors.append(AnnotationError("", a_path.name, f"record {i}: {e}"))
        for i, rec in enumerate(questions):
            scene = rec.get("scene_id", "") if isinstance(rec, dict) and isinstance(rec.get("scene_id"), str) else ""
            try:
                if not isinstance(rec, dict):
                    raise _Invalid(f"expected an object, got {type(rec).__name__}")
                qid = _id(rec, "question_id")
                if qid not in by_id:
                    raise _Invalid(f"question_id {qid} has no record in {a_path.name}")
                ann = by_id[qid]
                scene_id, question = _text(rec, "scene_id"), _text(rec, "question")
                if ann.get("scene_id", scene_id) != scene_id:
                    raise _Invalid(f"scene_id {scene_id!r} but {a_path.name} says {ann.get('scene_id')!r}")
                # `object_ids` is not in SQA3D's release; our synthetic rooms write it (absent: [])
                annotations.append(
                    Annotation(
                        "sqa",
                        split,
                        scene_id,
                        f"sqa3d-{qid}",
                        question,
                        _answers(ann),
                        _int_list(ann, "object_ids"),
                        question_type(question),
                        q_path.name,
                        situation=_text(rec, "situation"),
                        pose=_pose(ann),
                    )
                )
            except _Invalid as e:
                errors.append(AnnotationError(scene, q_path.name, f"record {i}: {e}"))
    return annotations, errors, read
