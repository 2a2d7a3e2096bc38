"""A hand-written SQA3D pair in the official format: read, prepared (pose aligned, hard negatives),
collated in the agent's frame, and trained on."""

import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cl3dor_ray.config import PrepareConfig, load_config
from cl3dor_ray.data.prepare import prepare
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import build_model
from cl3dor_ray.scenes.pose import align_pose
from cl3dor_ray.scenes.scannet import read_scan
from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.text.sqa3d import situated_instruction
from cl3dor_ray.train.orpo import orpo_loss
from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.slow
K = 2
Q = math.sqrt(0.5)  # a quarter turn about z: (0, 0, sin 45°, cos 45°)

QUESTIONS = {
    "train": [
        {
            "scene_id": "scene0000_00",
            "question_id": 220602000000,
            "situation": "I am sitting on the bed facing the desk.",
            "alternative_situation": ["I sit on the bed and the desk is in front of me."],
            "question": "What is on my left?",
        },
        {
            "scene_id": "scene0000_00",
            "question_id": 220602000001,
            "situation": "I am sitting on the bed facing the desk.",
            "alternative_situation": [],
            "question": "Can I reach the lamp without standing up?",
        },
        {
            "scene_id": "scene0001_00",
            "question_id": 220602000002,
            "situation": "I am standing by the table.",
            "alternative_situation": [],
            "question": "How many chairs are in front of me?",
        },
        {
            "scene_id": "scene0001_00",
            "question_id": 220602000003,
            "situation": "I am standing by the table.",
            "alternative_situation": [],
            "question": "Which way should I turn to face the door?",
        },
        {
            "scene_id": "scene0001_00",
            "question_id": 220602000004,
            "situation": "I am standing by the table.",
            "alternative_situation": [],
            "question": "Is the sofa behind me?",
        },
        {
            "scene_id": "scene0001_00",
            "question_id": 220602000005,
            "situation": "I am lying down.",
            "alternative_situation": [],
            "question": "What is above me?",
        },
    ],
    "val": [
        {
            "scene_id": "scene0004_00",
            "question_id": 220602000100,
            "situation": "I am sitting on the chair.",
            "alternative_situation": [],
            "question": "What color is the table in front of me?",
        },
    ],
}


def _annotation(qid, scene_id, answer, position, rotation, answer_type="other"):
    return {
        "scene_id": scene_id,
        "question_id": qid,
        "answer_type": answer_type,
        "question_type": "N/A",
        "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": 1}],
        "position": dict(zip("xyz", position)),
        "rotation": dict(zip(("_x", "_y", "_z", "_w"), rotation)),
    }


ANSWERS = {
    "train": [
        _annotation(220602000000, "scene0000_00", "table", (1.2, -0.4, 0.0), (0, 0, Q, Q)),
        _annotation(220602000001, "scene0000_00", "yes", (1.2, -0.4, 0.0), (0, 0, Q, Q), "yes/no"),
        _annotation(220602000002, "scene0001_00", "2", (0.3, 0.9, 0.0), (0, 0, 0, 1), "number"),
        _annotation(220602000003, "scene0001_00", "left", (0.3, 0.9, 0.0), (0, 0, 0, 1)),
        _annotation(220602000004, "scene0001_00", "no", (0.3, 0.9, 0.0), (0, 0, 0, 1), "yes/no"),
        _annotation(220602000005, "scene0001_00", "lamp", (0.3, 0.9, 0.0), (0, 0, 0, 0)),  # a zero quaternion
    ],
    "val": [
        _annotation(220602000100, "scene0004_00", "brown", (-0.5, 0.2, 0.0), (0, 0, 1, 0)),
    ],
}


@pytest.fixture(scope="module")
def prepared(synth_dir, local_ray, tmp_path_factory):
    raw = tmp_path_factory.mktemp("sqa_raw")
    shutil.copytree(synth_dir / "scans", raw / "scans")
    (raw / "annotations").mkdir()
    for split in ("train", "val"):  # only the hand-written pair: no other annotation file
        (raw / "annotations" / f"v1_balanced_questions_{split}_scannetv2.json").write_text(
            json.dumps({"questions": QUESTIONS[split]})
        )
        (raw / "annotations" / f"v1_balanced_sqa_annotations_{split}_scannetv2.json").write_text(
            json.dumps({"annotations": ANSWERS[split]})
        )
    out = tmp_path_factory.mktemp("sqa_prepared")
    summary = prepare(raw, out, PrepareConfig(points_per_object=64, negatives=K, workers=2))
    return raw, out, summary


def test_prepares_with_aligned_poses_and_hard_negatives(prepared):
    raw, out, summary = prepared
    assert summary.samples == {"train/sqa": 5, "val/sqa": 1}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "quaternion" in errors[0]["reason"] and "record 5" in errors[0]["reason"]
    rows = {r["sample_id"]: r for r in pq.read_table(out / "samples").to_pylist()}
    for split in ("train", "val"):
        for q, a in zip(QUESTIONS[split], ANSWERS[split]):
            row = rows.get(f"sqa3d-{q['question_id']}")
            if row is None:
                continue
            assert row["task"] == "sqa" and row["situation"] == q["situation"] and row["question"] == q["question"]
            assert row["question_type"] == q["question"].split()[0].lower()  # all five of LEO's first words
            raw_pose = [*a["position"].values(), *a["rotation"].values()]
            expected = align_pose(raw_pose, read_scan(raw / "scans" / q["scene_id"]).axis_alignment)
            np.testing.assert_allclose(row["pose"], expected, atol=1e-5)
            assert np.linalg.norm(np.array(row["pose"][:2]) - raw_pose[:2]) > 0.05  # the synth scans are turned
            gold = normalize_answer(row["answers"][0])
            negs = list(map(normalize_answer, row["negatives"]))
            assert 1 <= len(set(negs)) == len(negs) <= K and gold not in negs
    kinds = {r["sample_id"]: r["negative_kinds"] for r in rows.values()}
    assert "existence_flip" in kinds["sqa3d-220602000001"] and "relation_flip" in kinds["sqa3d-220602000003"]
    assert "count_change" in kinds["sqa3d-220602000002"]


def test_collated_in_the_agents_frame_and_trains(prepared):
    _, out, _ = prepared
    data = Prepared(out)
    rows = data.samples("train", ["sqa"]).to_pylist()
    objects = data.objects(16)
    cfg = load_config(None, TINY_MODEL).model
    torch.manual_seed(0)
    corpus = [situated_instruction(r["question"], r["situation"]) for r in rows] + [
        a for r in rows for a in r["answers"] + r["negatives"]
    ]
    model = build_model(cfg, corpus)
    collate = SceneCollator(model.tokenizer, objects, 16, cfg.max_objects)
    batch = collate(rows)

    # the situation leads the instruction, in the second person
    text = model.tokenizer.decode(batch.instruction_ids[0][batch.instruction_mask[0].bool()])
    assert "You are sitting on the bed facing the desk. What is on your left?" in text
    # the boxes are in the agent's frame: distances to the agent kept, and an agent turned a quarter
    # left sees the room's +x on its right (-y)
    plain = collate([{**r, "pose": []} for r in rows])
    for i, r in enumerate(rows):
        n = int(batch.object_mask[i].sum())
        agent = np.array(r["pose"][:3], np.float32)
        np.testing.assert_allclose(
            np.linalg.norm(batch.centers[i, :n].numpy(), axis=1),
            np.linalg.norm(plain.centers[i, :n].numpy() - agent, axis=1),
            atol=1e-4,
        )
        assert not torch.allclose(batch.centers[i, :n], plain.centers[i, :n])

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss, _ = orpo_loss(model.candidate_logps(batch)[0], lam=0.1, present=batch.cand_present)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        logps = model.candidate_logps(batch)[0]
    # the gold answer above every hard negative (a yes/no question has one, others up to two), for every question
    assert ((logps[:, :1] > logps[:, 1:]) | ~batch.cand_present[:, 1:]).all()
