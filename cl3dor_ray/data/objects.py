"""Ray Data UDF: scan folders -> one row per object with P points (dense or sparse).

A scan that fails to read becomes one error row (empty points) instead of failing the task, so
every other scene completes and the failure is reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cl3dor_ray.data.schema import OBJECT_SCHEMA, fixed, nested, with_errors
from cl3dor_ray.scenes.densify import ObjectCloud, densify_objects, sparse_objects
from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.scannet import read_scan

STAGED_OBJECT_SCHEMA = with_errors(OBJECT_SCHEMA)
SMALL_OBJECT_M = 0.5  # longest box side of a "small" object (cups, books, bottles, lamps, keyboards), metres


def objects_table(clouds: list[ObjectCloud], errors: list[tuple[str, str, str]] = ()) -> pa.Table:
    """Rows for the clouds, then one row per (scene_id, file, reason) error."""
    n_err = len(errors)
    empty = np.zeros((0, 3))
    columns = {
        "scene_id": [c.scene_id for c in clouds] + [e[0] for e in errors],
        "object_id": [c.object_id for c in clouds] + [-1] * n_err,
        "label": [c.label for c in clouds] + [""] * n_err,
        "points": nested([c.points for c in clouds] + [empty] * n_err, pa.float32()),
        "colors": nested([c.colors for c in clouds] + [empty] * n_err, pa.uint8()),
        "center": fixed(np.array([c.center for c in clouds] + [[0, 0, 0]] * n_err, np.float32), pa.float32()),
        "size": fixed(np.array([c.size for c in clouds] + [[0, 0, 0]] * n_err, np.float32), pa.float32()),
        "num_source_vertices": [c.num_source_vertices for c in clouds] + [0] * n_err,
        "error": [""] * len(clouds) + [e[2] for e in errors],
        "error_file": [""] * len(clouds) + [e[1] for e in errors],
    }
    return pa.table(columns, schema=STAGED_OBJECT_SCHEMA)


def densify_scans(batch: pa.Table, points_per_object: int, sparse: bool, seed: int, raw_root: str) -> pa.Table:
    """map_batches UDF over rows {scene_id, scan_dir}."""
    sample = sparse_objects if sparse else densify_objects
    clouds, errors = [], []
    for scene_id, scan_dir in zip(batch["scene_id"].to_pylist(), batch["scan_dir"].to_pylist()):
        try:
            # structure objects (walls, floor) are kept here so annotations that name them validate;
            # the writer drops them from objects/
            clouds += sample(read_scan(scan_dir), points_per_object, seed)
        except ScanFormatError as e:
            path = Path(e.path)
            where = str(path.relative_to(raw_root)) if path.is_relative_to(raw_root) else e.path
            errors.append((scene_id, where, e.reason))
    return objects_table(clouds, errors)
