"""`cl3dor synth`: a folder of synthetic ScanNet scans plus ScanQA / ScanRefer / existence annotations.

    DIR/scans/sceneXXXX_00/...                      ScanNet layout (see scannet.py)
    DIR/annotations/ScanQA_v1.0_{train,val}.json
    DIR/annotations/ScanRefer_filtered_{train,val}.json
    DIR/annotations/existence_{train,val}.json
Splits are by scene: the last fifth of the scenes (at least one, when there are two or more) is val,
or the last `val_scenes`.
ScanQA and SQA3D answers are balanced by the question's own words over both splits, then per question
template within each split (synth_annotations.balance_question_words, balance_answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl3dor_ray.scenes.scannet import write_scan
from cl3dor_ray.scenes.synth import generate_scene
from cl3dor_ray.scenes.synth_annotations import (
    balance_answers,
    balance_question_words,
    existence_questions,
    scanqa_questions,
    scanrefer_descriptions,
)
from cl3dor_ray.scenes.synth_situated import sqa_questions, to_sensor_frame
from cl3dor_ray.text.sqa3d import ANSWERS as SQA_ANNOTATIONS
from cl3dor_ray.text.sqa3d import QUESTIONS as SQA_QUESTIONS

ANNOTATION_FILES = {
    "scanqa": "ScanQA_v1.0_{split}.json",
    "scanrefer": "ScanRefer_filtered_{split}.json",
    "existence": "existence_{split}.json",
}


def scene_id(index: int) -> str:
    return f"scene{index:04d}_00"


def default_val_scenes(n_scenes: int) -> int:
    return 0 if n_scenes < 2 else max(1, round(n_scenes / 5))


def split_of(index: int, n_scenes: int, val_scenes: int | None = None) -> str:
    n_val = default_val_scenes(n_scenes) if val_scenes is None else val_scenes
    return "val" if index >= n_scenes - n_val else "train"


@dataclass
class SynthSummary:
    scenes: dict[str, int]  # split -> number of scenes
    annotations: dict[str, int]  # file name -> records
    objects: int
    vertices: int


def synthesize(out: str | Path, n_scenes: int, seed: int = 0, val_scenes: int | None = None) -> SynthSummary:
    """`val_scenes` rooms (default: a fifth) are the validation split; an ablation asks for more, for power."""
    if n_scenes < 1:
        raise ValueError(f"--scenes must be at least 1, got {n_scenes}")
    if val_scenes is not None and not 0 <= val_scenes < n_scenes:
        raise ValueError(f"--val-scenes must be in [0, {n_scenes - 1}] for {n_scenes} scenes, got {val_scenes}")
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    records = {(kind, split): [] for kind in (*ANNOTATION_FILES, "sqa") for split in ("train", "val")}
    counts = {}
    scenes = {"train": 0, "val": 0}
    n_objects = n_vertices = 0
    for index in range(n_scenes):
        split = split_of(index, n_scenes, val_scenes)
        graph, scene, segments = generate_scene(scene_id(index), seed, index)
        write_scan(scene, out / "scans", segments=segments)
        rng = np.random.default_rng([seed, index, 1])  # own stream: annotations don't shift the geometry
        for kind, items in (
            ("scanqa", scanqa_questions(graph, rng)),
            ("scanrefer", scanrefer_descriptions(graph)),
            ("existence", existence_questions(graph, rng)),
        ):
            for k, item in enumerate(items):
                if kind != "scanrefer":
                    item["question_id"] = f"{split}-{graph.scene_id}-{k}"
                records[kind, split].append(item)
        records["sqa", split] += [
            (q, to_sensor_frame(a, scene.axis_alignment))
            for q, a in sqa_questions(graph, np.random.default_rng([seed, index, 3]))
        ]
        scenes[split] += 1
        n_objects += len(graph.objects)
        n_vertices += len(scene.vertices)

    # balanced as ScanQA's are: "no" would otherwise answer most "Can I reach ...?" questions unseen; first
    # by the question's own words over both splits, then by template within each
    proxies = {
        split: [
            {"question": q["question"], "answers": [a["answers"][0]["answer"]], "pair": k}
            for k, (q, a) in enumerate(records["sqa", split])
        ]
        for split in ("train", "val")
    }
    proxies = balance_question_words(proxies, np.random.default_rng([seed, 5]))
    for s, split in enumerate(("train", "val")):  # SQA3D's pair of files: questions, and their answers and poses
        pairs = records.pop(("sqa", split))
        pairs = [pairs[p["pair"]] for p in balance_answers(proxies[split], np.random.default_rng([seed, 4, s]))]
        for k, (question, annotation) in enumerate(pairs):
            question["question_id"] = annotation["question_id"] = f"{split}-sqa-{k}"
        for name, key, items in (
            (SQA_QUESTIONS, "questions", [q for q, _ in pairs]),
            (SQA_ANNOTATIONS, "annotations", [a for _, a in pairs]),
        ):
            name = name.format(split=split)
            (out / "annotations" / name).write_text(json.dumps({key: items}, indent=1), encoding="utf-8")
            counts[name] = len(items)
    qa = balance_question_words(
        {split: records["scanqa", split] for split in ("train", "val")}, np.random.default_rng([seed, 6])
    )
    for s, split in enumerate(("train", "val")):  # per split, so validation answers are balanced too
        records["scanqa", split] = balance_answers(qa[split], np.random.default_rng([seed, 2, s]))
    for (kind, split), items in records.items():
        name = ANNOTATION_FILES[kind].format(split=split)
        (out / "annotations" / name).write_text(json.dumps(items, indent=1, ensure_ascii=False), encoding="utf-8")
        counts[name] = len(items)
    return SynthSummary(scenes, counts, n_objects, n_vertices)
