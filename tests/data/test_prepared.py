"""The one reader of a prepared folder (data/prepared.py), and the layering it stands for."""

import ast
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cl3dor_ray.config import ConfigError
from cl3dor_ray.data.prepared import Prepared

PACKAGE = Path(__file__).resolve().parents[2] / "cl3dor_ray"


def test_objects_are_thinned_once_to_an_even_subset_of_the_prepared_points(prepared_dir):
    prepared = Prepared(prepared_dir)
    assert prepared.points_per_object == 128
    whole = {(r["scene_id"], r["object_id"]): r for r in pq.read_table(prepared_dir / "objects").to_pylist()}
    by_scene = prepared.objects(32)
    assert sum(len(v) for v in by_scene.values()) == len(whole)
    for scene, rows in by_scene.items():
        for r in rows:
            assert r["scene_id"] == scene and r["points"].shape == (32, 3) and r["colors"].shape == (32, 3)
            assert r["points"].dtype == np.float32 and r["colors"].dtype == np.uint8
            source = np.asarray(whole[(scene, r["object_id"])]["points"], np.float32)
            idx = np.linspace(0, len(source) - 1, 32).round().astype(int)
            np.testing.assert_array_equal(r["points"], source[idx])
    full = prepared.objects(128)
    row = full[next(iter(full))][0]
    np.testing.assert_array_equal(
        row["points"], np.asarray(whole[(row["scene_id"], row["object_id"])]["points"], np.float32)
    )


def test_more_model_points_than_prepared_fails_naming_both(prepared_dir):
    with pytest.raises(ConfigError, match=r"num_points = 256 .*points_per_object = 128"):
        Prepared(prepared_dir).objects(256)


def test_samples_by_split_and_task_sorted_by_id(prepared_dir):
    prepared = Prepared(prepared_dir)
    everything = pq.read_table(prepared_dir / "samples").to_pylist()
    val_qa = prepared.samples("val", ["qa"], columns=["sample_id", "question"]).to_pylist()
    expected = sorted(s["sample_id"] for s in everything if s["split"] == "val" and s["task"] == "qa")
    assert [s["sample_id"] for s in val_qa] == expected and expected
    assert set(val_qa[0]) == {"sample_id", "question"}
    splits = prepared.scene_splits()
    assert {s["scene_id"]: s["split"] for s in everything} == splits


def test_a_folder_that_is_not_prepared_names_what_is_missing(tmp_path):
    (tmp_path / "objects").mkdir()
    with pytest.raises(ConfigError, match="samples is missing; expected the output folder of `cl3dor prepare`"):
        Prepared(tmp_path)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_data_reads_prepared_parquet_and_serving_does_not_reach_into_training():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    readers = [
        p.relative_to(PACKAGE).as_posix()
        for p in modules
        if p.parent.name != "data" and {"pyarrow.parquet", "pyarrow.dataset"} & _imports(p)
    ]
    assert readers == []
    serve = [
        p.name
        for p in (PACKAGE / "serve").glob("*.py")
        if any(m == "cl3dor_ray.train" or m.startswith("cl3dor_ray.train.") for m in _imports(p))
    ]
    assert serve == []
