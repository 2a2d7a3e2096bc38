"""ScanQA, ScanRefer (Scan2Cap) and POPE-style existence files -> validated `Annotation`s.

Files are read from an `annotations/` folder with the public names:
    ScanQA_v1.0_{split}.json, ScanRefer_filtered_{split}.json, existence_{split}.json
A bad record never stops the others: it becomes an `AnnotationError` naming the file, the record
and the field, and the rest are kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SPLITS = ("train", "val")
FILES = {
    "qa": "ScanQA_v1.0_{split}.json",
    "caption": "ScanRefer_filtered_{split}.json",
    "existence": "existence_{split}.json",
}


@dataclass
class Annotation:
    """One training or evaluation sample before negatives, in a task-independent shape."""

    task: str  # "qa", "caption" or "existence"
    split: str
    scene_id: str
    sample_id: str
    question: str  # the instruction; captions get theirs from the object's position (caption_instruction)
    answers: list[str]
    object_ids: list[int]
    question_type: str = ""  # ScanQA question type (ours) or POPE sampling type; "" when unknown
    source: str = ""  # the file it came from
    situation: str = ""  # SQA3D: where the agent is, in its words ("I am sitting on the bed facing the desk")
    pose: list[float] = field(default_factory=list)  # SQA3D: x, y, z, qx, qy, qz, qw in the scan's frame

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnnotationError:
    scene_id: str
    file: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def caption_instruction(center) -> str:
    """Scan2Cap's instruction: the target is named by its position, which the object tokens encode."""
    x, y, z = (float(c) for c in center)
    return f"Describe the object at ({x:.1f}, {y:.1f}, {z:.1f})."


class _Invalid(ValueError):
    pass


def _text(rec: dict, key: str) -> str:
    if key not in rec:
        raise _Invalid(f"field '{key}' is missing")
    value = rec[key]
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"field '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _int(rec: dict, key: str) -> int:
    if key not in rec:
        raise _Invalid(f"field '{key}' is missing")
    try:
        return int(rec[key])  # ScanRefer stores ids as strings
    except (TypeError, ValueError):
        raise _Invalid(f"field '{key}' must be an integer (or a string of one), got {rec[key]!r}") from None


def _int_list(rec: dict, key: str) -> list[int]:
    value = rec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Invalid(f"field '{key}' must be a list of integers, got {value!r}")
    return value


def _answers(rec: dict) -> list[str]:
    if "answers" not in rec:
        raise _Invalid("field 'answers' is missing")
    answers = rec["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise _Invalid(f"field 'answers' must be a list of strings, got {answers!r}")
    answers = [a.strip() for a in answers if a.strip()]
    if not answers:
        raise _Invalid("field 'answers' is empty; expected at least one answer")
    return answers


def _id(rec: dict, key: str) -> str:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise _Invalid(f"field '{key}' must be a string or an integer, got {value!r}")
    return str(value)


def _scanqa(rec: dict, split: str, source: str) -> Annotation:
    return Annotation(
        "qa",
        split,
        _text(rec, "scene_id"),
        f"scanqa-{_id(rec, 'question_id')}",
        _text(rec, "question"),
        _answers(rec),
        _int_list(rec, "object_ids"),
        str(rec.get("question_type", "")),
        source,
    )


def _existence(rec: dict, split: str, source: str) -> Annotation:
    answer = _text(rec, "answer").lower()
    if answer not in ("yes", "no"):
        raise _Invalid(f"field 'answer' must be 'yes' or 'no', got {rec['answer']!r}")
    return Annotation(
        "existence",
        split,
        _text(rec, "scene_id"),
        f"pope-{_id(rec, 'question_id')}",
        _text(rec, "question"),
        [answer],
        _int_list(rec, "object_ids"),
        str(rec.get("pope_type", "")),
        source,
    )


def _scanrefer(records: list, split: str, source: str, errors: list[AnnotationError]) -> list[Annotation]:
    """Scan2Cap: one sample per (scene, object) whose answers are all of its descriptions."""
    grouped: dict[tuple[str, int], Annotation] = {}
    for i, rec in enumerate(records):
        try:
            if not isinstance(rec, dict):
                raise _Invalid(f"expected an object, got {type(rec).__name__}")
            scene_id, object_id, text = _text(rec, "scene_id"), _int(rec, "object_id"), _text(rec, "description")
        except _Invalid as e:
            errors.append(AnnotationError(_scene_of(rec), source, f"record {i}: {e}"))
            continue
        key = (scene_id, object_id)
        if key not in grouped:
            grouped[key] = Annotation(
                "caption",
                split,
                scene_id,
                f"scan2cap-{split}-{scene_id}-{object_id}",
                "",
                [],
                [object_id],
                str(rec.get("object_name", "")),
                source,
            )
        grouped[key].answers.append(text)
    return list(grouped.values())


def _scene_of(rec) -> str:
    return rec.get("scene_id", "") if isinstance(rec, dict) and isinstance(rec.get("scene_id"), str) else ""


def load_annotations(folder: str | Path) -> tuple[list[Annotation], list[AnnotationError], list[str]]:
    """All annotation files present in `folder`. Returns (annotations, errors, files read)."""
    folder = Path(folder)
    annotations: list[Annotation] = []
    errors: list[AnnotationError] = []
    read: list[str] = []
    for task, pattern in FILES.items():
        for split in SPLITS:
            path = folder / pattern.format(split=split)
            if not path.is_file():
                continue
            read.append(path.name)
            try:
                records = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                errors.append(AnnotationError("", path.name, f"invalid JSON: {e}"))
                continue
            if not isinstance(records, list):
                errors.append(AnnotationError("", path.name, "expected a JSON list of records"))
                continue
            if task == "caption":
                annotations += _scanrefer(records, split, path.name, errors)
                continue
            parse = _scanqa if task == "qa" else _existence
            for i, rec in enumerate(records):
                try:
                    if not isinstance(rec, dict):
                        raise _Invalid(f"expected an object, got {type(rec).__name__}")
                    annotations.append(parse(rec, split, path.name))
                except _Invalid as e:
                    errors.append(AnnotationError(_scene_of(rec), path.name, f"record {i}: {e}"))
    return annotations, errors, read
