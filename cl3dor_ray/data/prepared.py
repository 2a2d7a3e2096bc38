"""The one reader of a prepared folder (the output of `cl3dor prepare`).

    OUT/objects/        one row per object: its P points and colours, box, label  (schema.OBJECT_SCHEMA)
    OUT/samples/        one row per question, caption or existence probe        (schema.SAMPLE_SCHEMA)
    OUT/manifest.json   written last: its presence means the folder is complete

Training, evaluation, serving, the priors and the demo read the layout only through `Prepared`, so
a column or a check lives in one place. Objects come back grouped by scene, with their points
thinned once to the model's `num_points` as numpy arrays; `num_points` may not exceed the prepared P.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cl3dor_ray.config import ConfigError
from cl3dor_ray.data.clouds import even_subset

PARTS = ("objects", "samples", "manifest.json")


class Prepared:
    """A prepared folder, checked on opening: `Prepared(path)` fails at once, naming the missing part."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        for part in PARTS:
            if not (self.folder / part).exists():
                raise ConfigError(f"{self.folder}: {part} is missing; expected the output folder of `cl3dor prepare`")
        self.manifest = json.loads((self.folder / "manifest.json").read_text())

    def __repr__(self) -> str:
        return f"Prepared({str(self.folder)!r})"

    @property
    def points_per_object(self) -> int:
        """P: the points each object was prepared with."""
        return int(self.manifest["config"]["points_per_object"])

    def check_num_points(self, num_points: int) -> None:
        if num_points > self.points_per_object:
            raise ConfigError(
                f"model.num_points = {num_points} but {self.folder} was prepared with "
                f"points_per_object = {self.points_per_object}; expected num_points <= "
                f"{self.points_per_object} (prepare again with more points, or lower model.num_points)"
            )

    # ------------------------------------------------------------------ objects
    def object_table(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.folder / "objects", columns=columns)

    def objects(self, num_points: int) -> dict[str, list[dict]]:
        """scene_id -> its object rows, with points (float32) and colours (uint8) as (num_points, 3) arrays."""
        self.check_num_points(num_points)
        by_scene: dict[str, list[dict]] = {}
        for row in _rows(self.object_table()):
            idx = even_subset(len(row["points"]), num_points)
            row["points"], row["colors"] = row["points"][idx], row["colors"][idx]
            by_scene.setdefault(row["scene_id"], []).append(row)
        return by_scene

    def scene_objects(self, scene_id: str) -> list[dict]:
        """One scene's object rows, whole (all P points), read by a filter on scene_id."""
        return _rows(pq.read_table(self.folder / "objects", filters=[("scene_id", "==", scene_id)]))

    def object_rows(self, split: str | None = None) -> list[dict]:
        """Every object row of one split (or all), whole: all P points, as numpy arrays."""
        splits = self.scene_splits()
        return [row for row in _rows(self.object_table()) if split is None or splits.get(row["scene_id"]) == split]

    # ------------------------------------------------------------------ samples
    def samples(
        self,
        split: str | None = None,
        tasks: list[str] | tuple[str, ...] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Samples of one split and some tasks (default: all), sorted by sample_id."""
        wanted = None if columns is None else sorted(set(columns) | {"sample_id", "split", "task"})
        table = pq.read_table(self.folder / "samples", columns=wanted)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        if tasks is not None:
            table = table.filter(pc.is_in(table["task"], pa.array(list(tasks), pa.string())))
        table = table.sort_by("sample_id")
        return table if columns is None else table.select(columns)

    def scene_splits(self) -> dict[str, str]:
        """scene_id -> "train" / "val" (splits are by scene)."""
        t = pq.read_table(self.folder / "samples", columns=["scene_id", "split"]).to_pydict()
        return dict(zip(t["scene_id"], t["split"]))


def _rows(table: pa.Table) -> list[dict]:
    """Object rows as dicts, their points (float32) and colours (uint8) as (P, 3) numpy arrays."""
    clouds = zip(column_arrays(table["points"], np.float32), column_arrays(table["colors"], np.uint8))
    return [
        {**row, "points": points, "colors": colors}
        for row, (points, colors) in zip(table.drop_columns(["points", "colors"]).to_pylist(), clouds)
    ]


def column_arrays(column: pa.ChunkedArray, dtype) -> list[np.ndarray]:
    """list<fixed_size_list<_, 3>> -> one (n_i, 3) array per row, without a Python object per point."""
    arr = column.combine_chunks()
    flat = arr.flatten().flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, 3)
    offsets = arr.offsets.to_numpy()
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
