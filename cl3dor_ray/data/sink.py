"""A Ray Data sink that writes the accepted rows to Parquet and hands the driver a small index.

Each stage's UDF returns every input as rows, rejected ones marked with `error`. The sink, in
the write task, splits them: accepted rows go to one Parquet file per task, and the index
columns of every row (errors included) go back to the driver through `on_write_complete`. One
pass over the data, no second read to find out what happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data._internal.execution.interfaces import TaskContext


class StagedParquetSink(Datasink[list[dict]]):
    def __init__(self, path: str | Path, index_columns: list[str], drop_labels: tuple[str, ...] = ()):
        self.path = str(path)
        self.index_columns = index_columns
        self.drop_labels = list(drop_labels)  # accepted but not written (e.g. walls and floors)
        self.index: list[dict] = []

    def write(self, blocks: Iterable[pa.Table], ctx: TaskContext) -> list[dict]:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables)
        keep = pc.equal(table["error"], "")
        if self.drop_labels:
            keep = pc.and_(keep, pc.invert(pc.is_in(table["label"], pa.array(self.drop_labels))))
        accepted = table.filter(keep).drop_columns(["error", "error_file"])
        if accepted.num_rows:
            # named by task index: a retried task overwrites its own file instead of adding one
            pq.write_table(accepted, f"{self.path}/part-{ctx.task_idx:05d}.parquet", compression="zstd")
        return table.select(self.index_columns).to_pylist()

    def on_write_complete(self, write_result) -> None:
        self.index = [row for rows in write_result.write_returns for row in rows]
