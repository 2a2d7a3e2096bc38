"""Parquet schemas of the prepared data, and numpy -> Arrow helpers.

Points are stored as plain nested lists (list<fixed_size_list<float32, 3>>), not Ray's tensor
extension type, so any Parquet reader (pandas, DuckDB, pyarrow without Ray) can open them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

XYZ = pa.list_(pa.float32(), 3)
RGB = pa.list_(pa.uint8(), 3)

OBJECT_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("object_id", pa.int32()),
        ("label", pa.string()),
        ("points", pa.list_(XYZ)),  # P x [x, y, z], axis-aligned scene frame
        ("colors", pa.list_(RGB)),  # P x [r, g, b]
        ("center", XYZ),  # centre of the object's axis-aligned box
        ("size", XYZ),  # extent of that box
        ("num_source_vertices", pa.int32()),  # scan vertices the object had before densification
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),  # "train" or "val"
        ("task", pa.string()),  # "qa", "caption", "existence" or "sqa"
        ("scene_id", pa.string()),
        ("object_ids", pa.list_(pa.int32())),  # objects the sample is about (relevant ones first)
        ("question", pa.string()),  # the instruction
        ("answers", pa.list_(pa.string())),  # gold answers
        ("answer_kind", pa.string()),  # the gold answer's kind (text/kinds.py): yes/no, side, count, colour, ...
        ("negatives", pa.list_(pa.string())),  # 0 to K hard negative answers, of the gold answer's kind
        ("negative_kinds", pa.list_(pa.string())),  # the strategy of each negative
        ("question_type", pa.string()),  # ScanQA type, POPE sampling type or SQA3D first word; "" if unknown
        ("situation", pa.string()),  # SQA3D: the agent's situation, as written; "" for other tasks
        ("pose", pa.list_(pa.float32())),  # SQA3D: x, y, z, qx, qy, qz, qw in the axis-aligned frame; [] otherwise
    ]
)

# While a stage runs, every row also says whether its input was rejected.
ERROR_FIELDS = [("error", pa.string()), ("error_file", pa.string())]


def with_errors(schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(schema) + ERROR_FIELDS)


def nested(arrays: list[np.ndarray], value_type: pa.DataType, width: int = 3) -> pa.ListArray:
    """[(n_i, width) arrays] -> list<fixed_size_list<value_type, width>>, without a Python loop over points."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int32)
    flat = np.concatenate([np.asarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), width)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    return pa.ListArray.from_arrays(offsets, inner)


def fixed(rows: np.ndarray, value_type: pa.DataType, width: int = 3) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(rows).reshape(-1), type=value_type), width)
