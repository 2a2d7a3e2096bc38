"""The real preparation job on a local Ray (2 CPUs), with broken scans and annotations mixed in."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from cl3dor_ray.config import PrepareConfig
from cl3dor_ray.data.prepare import prepare
from cl3dor_ray.data.schema import OBJECT_SCHEMA, SAMPLE_SCHEMA
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, read_scan, write_scan
from cl3dor_ray.scenes.synth import generate_scene
from cl3dor_ray.text.kinds import CLOSED_KINDS, KINDS, PAIRS, answer_kind
from cl3dor_ray.text.normalize import normalize_answer
from tests.helpers import MALFORMED, break_scan, point_triangle_distance

pytestmark = pytest.mark.slow
P, K = 64, 3
BROKEN = {f"scene{100 + i:04d}_00": what for i, what in enumerate(MALFORMED)}
BAD_ANNOTATIONS = {
    "missing_scene": {
        "scene_id": "scene0999_00",
        "question_id": "x-1",
        "question": "What is it?",
        "answers": ["chair"],
        "object_ids": [],
        "object_names": [],
    },
    "missing_object": {
        "scene_id": "scene0000_00",
        "question_id": "x-2",
        "question": "What color is it?",
        "answers": ["red"],
        "object_ids": [999],
        "object_names": ["cup"],
    },
    "empty_answers": {
        "scene_id": "scene0000_00",
        "question_id": "x-3",
        "question": "What is that?",
        "answers": [],
        "object_ids": [0],
        "object_names": ["table"],
    },
    "wrong_type": {
        "scene_id": "scene0000_00",
        "question_id": "x-4",
        "question": 5,
        "answers": ["a"],
        "object_ids": [0],
        "object_names": ["table"],
    },
    "rejected_scan": {
        "scene_id": "scene0100_00",
        "question_id": "x-5",
        "question": "How many chairs?",
        "answers": ["2"],
        "object_ids": [],
        "object_names": [],
    },
}
NON_ASCII = {
    "scene_id": "scene0000_00",
    "question_id": "x-6",
    "question": "¿De qué color es la mesa? ☕",
    "answers": ["marrón café"],
    "object_ids": [0],
    "object_names": ["table"],
}


@pytest.fixture(scope="module")
def raw(synth_dir, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    shutil.copytree(synth_dir / "scans", raw / "scans")
    shutil.copytree(synth_dir / "annotations", raw / "annotations")
    for i, (scene_id, what) in enumerate(BROKEN.items()):
        _, scene, segments = generate_scene(scene_id, seed=9, index=i)
        break_scan(write_scan(scene, raw / "scans", segments=segments), scene_id, what)
    qa_file = raw / "annotations" / "ScanQA_v1.0_train.json"
    records = json.loads(qa_file.read_text())
    qa_file.write_text(
        json.dumps(records + list(BAD_ANNOTATIONS.values()) + [NON_ASCII], ensure_ascii=False), encoding="utf-8"
    )
    return raw


@pytest.fixture(scope="module")
def prepared(raw, local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare(raw, out, PrepareConfig(points_per_object=P, negatives=K, workers=2))
    return out, summary


def test_parquet_schemas(prepared):
    out, _ = prepared
    assert pq.read_schema(next((out / "objects").glob("*.parquet"))).remove_metadata() == OBJECT_SCHEMA
    assert pq.read_schema(next((out / "samples").glob("*.parquet"))).remove_metadata() == SAMPLE_SCHEMA


def test_every_object_present_with_p_points_on_its_surface(prepared, raw):
    out, summary = prepared
    objects = pq.read_table(out / "objects").to_pylist()
    good = sorted(p.name for p in (raw / "scans").iterdir() if p.name not in BROKEN)
    assert sorted({o["scene_id"] for o in objects}) == good
    for scene_id in good:
        scene = read_scan(raw / "scans" / scene_id)
        rows = {o["object_id"]: o for o in objects if o["scene_id"] == scene_id}
        expected = {o.object_id: o.label for o in scene.objects if o.label not in STRUCTURE_LABELS}
        assert {i: r["label"] for i, r in rows.items()} == expected
        face_ids = scene.face_instance_ids()
        for object_id, row in rows.items():
            points = np.array(row["points"], dtype=np.float64)
            assert points.shape == (P, 3) and len(row["colors"]) == P
            tri = scene.vertices[scene.faces[face_ids == object_id]].astype(np.float64)
            assert point_triangle_distance(points, tri).min(1).max() < 1e-4 * scene.extent
            assert row["num_source_vertices"] == int((scene.instance_ids == object_id).sum())
    assert summary.objects == len(objects)


def test_samples_have_up_to_k_negatives_of_the_gold_kind_none_equal_to_gold(prepared, raw):
    out, summary = prepared
    samples = pq.read_table(out / "samples").to_pylist()
    labels = sorted(set(pq.read_table(out / "objects", columns=["label"]).column("label").to_pylist()))
    assert len({s["sample_id"] for s in samples}) == len(samples)
    for s in samples:
        assert len(s["negatives"]) <= K and len(s["negatives"]) == len(s["negative_kinds"])
        # an answer of no known kind with nothing to swap ("marrón café") has no plausible negative: none
        assert s["negatives"] or (s["answer_kind"] == "other" and s["sample_id"].endswith("x-6")), s
        gold = {normalize_answer(a) for a in s["answers"]}
        negs = [normalize_answer(n) for n in s["negatives"]]
        assert len(set(negs)) == len(negs) and not gold & set(negs), s
        assert s["answer_kind"] == answer_kind(s["answers"][0], labels, s["task"])
        if s["answer_kind"] in PAIRS:  # yes/no, a side, above/below, near/far: the other word, alone
            assert len(negs) == 1
    # the manifest's share of negatives of the gold's kind is what the samples hold: 1.00 on every closed kind
    stats = json.loads((out / "manifest.json").read_text())["summary"]["negatives"]
    by_kind = stats["by_answer_kind"]
    assert {"yes/no", "count", "colour"} <= set(by_kind) and set(by_kind) <= set(KINDS)
    assert by_kind["other"]["without_negatives"] == 1
    for kind, figures in by_kind.items():
        mine = [s for s in samples if s["answer_kind"] == kind]
        same = sum(answer_kind(n, labels, s["task"]) == kind for s in mine for n in s["negatives"])
        assert figures["samples"] == len(mine)
        assert figures["of_gold_kind"] == same / max(sum(len(s["negatives"]) for s in mine), 1)
        assert figures["negatives_per_sample"] == pytest.approx(sum(len(s["negatives"]) for s in mine) / len(mine))
    for kind in CLOSED_KINDS:
        if kind in by_kind:
            assert by_kind[kind]["of_gold_kind"] == 1.0, kind
    assert stats["by_task"]["existence"]["negatives_per_sample"] == 1.0
    tasks = {s["task"] for s in samples}
    assert tasks == {"qa", "caption", "existence", "sqa"}
    captions = [s for s in samples if s["task"] == "caption"]
    assert all(s["question"].startswith("Describe the object at (") for s in captions)
    # every valid annotation became a sample: ScanQA + existence records, one caption per described object
    ann = raw / "annotations"
    n_qa = sum(len(json.loads((ann / f"ScanQA_v1.0_{sp}.json").read_text())) for sp in ("train", "val"))
    n_pope = sum(len(json.loads((ann / f"existence_{sp}.json").read_text())) for sp in ("train", "val"))
    n_cap = len(
        {
            (r["scene_id"], r["object_id"])
            for sp in ("train", "val")
            for r in json.loads((ann / f"ScanRefer_filtered_{sp}.json").read_text())
        }
    )
    n_sqa = sum(
        len(json.loads((ann / f"v1_balanced_questions_{sp}_scannetv2.json").read_text())["questions"])
        for sp in ("train", "val")
    )
    n_bad = len(BAD_ANNOTATIONS)
    assert len(samples) == n_qa - n_bad + n_pope + n_cap + n_sqa == sum(summary.samples.values())


def test_non_ascii_text_survives(prepared):
    out, _ = prepared
    row = next(s for s in pq.read_table(out / "samples").to_pylist() if s["sample_id"] == "scanqa-x-6")
    assert row["question"] == NON_ASCII["question"] and row["answers"] == ["marrón café"]


def test_bad_inputs_are_listed_in_errors_jsonl(prepared):
    out, summary = prepared
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    by_scene = {}
    for e in errors:
        assert set(e) == {"scene_id", "file", "reason"}
        by_scene.setdefault(e["scene_id"], []).append(e)
    for scene_id in BROKEN:
        (scan_error,) = [e for e in by_scene[scene_id] if e["file"].startswith("scans/")]
        assert scan_error["file"].startswith(f"scans/{scene_id}/{scene_id}")
    reasons = " | ".join(e["reason"] for e in errors)
    assert "scanqa-x-1: no scan scene0999_00 in scans/" in reasons
    assert "scanqa-x-2: object_ids [999] are not objects of scene0000_00" in reasons
    assert "field 'answers' is empty" in reasons
    assert "field 'question' must be a non-empty string, got 5" in reasons
    assert "scanqa-x-5: its scan was rejected" in reasons
    assert summary.scenes_rejected == len(BROKEN)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["errors"] == len(errors)
    assert manifest["config"]["points_per_object"] == P and "ray" in manifest["versions"]


def _sorted_rows(out, name, key):
    return sorted(pq.read_table(out / name).to_pylist(), key=key)


def test_rerun_into_same_out_is_deterministic_and_does_not_duplicate(prepared, raw):
    out, _ = prepared
    before = _sorted_rows(out, "samples", lambda r: r["sample_id"])
    objects_before = _sorted_rows(out, "objects", lambda r: (r["scene_id"], r["object_id"]))
    # simulate an interrupted earlier run: stale staging data and no manifest
    (out / ".staging" / "objects").mkdir(parents=True)
    (out / ".staging" / "objects" / "junk.parquet").write_bytes(b"partial")
    prepare(raw, out, PrepareConfig(points_per_object=P, negatives=K, workers=2))
    assert not (out / ".staging").exists()
    assert _sorted_rows(out, "samples", lambda r: r["sample_id"]) == before
    assert _sorted_rows(out, "objects", lambda r: (r["scene_id"], r["object_id"])) == objects_before


def test_sparse_and_no_negatives(raw, local_ray, tmp_path):
    summary = prepare(raw, tmp_path, PrepareConfig(points_per_object=P, negatives=0, sparse=True, workers=1))
    samples = pq.read_table(tmp_path / "samples").to_pylist()
    assert all(s["negatives"] == [] for s in samples) and summary.objects > 0
    scene = read_scan(raw / "scans" / "scene0000_00")
    verts = {tuple(v) for v in scene.vertices.tolist()}
    rows = [r for r in pq.read_table(tmp_path / "objects").to_pylist() if r["scene_id"] == "scene0000_00"]
    assert rows
    for row in rows:  # sparse points are the object's own scan vertices
        assert all(tuple(np.float32(p).tolist()) in verts for p in row["points"])


def test_job_entry_point_exits_nonzero_when_nothing_can_be_prepared(tmp_path):
    for i, what in enumerate(("truncated_ply", "missing_segs")):
        scene_id = f"scene{i:04d}_00"
        _, scene, segments = generate_scene(scene_id, seed=1, index=i)
        break_scan(write_scan(scene, tmp_path / "raw" / "scans", segments=segments), scene_id, what)
    run = subprocess.run(
        [
            sys.executable,
            "jobs/prepare_data.py",
            "--raw",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "error: no scan under" in run.stderr and "truncated" in run.stderr
