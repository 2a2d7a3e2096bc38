"""The order Ray Train's workers read a stage's rows in."""

import pyarrow as pa

from cl3dor_ray.train.trainer import _shuffled


def _longest_run(values: list[str]) -> int:
    best = run = 1
    for a, b in zip(values, values[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def test_rows_reach_the_workers_shuffled_not_room_by_room():
    # prepared samples come sorted by id: room by room, and within a room task by task
    ids = [f"scene{s:04d}_00-{task}-{i:03d}" for s in range(6) for task in ("qa", "sqa") for i in range(20)]
    rows = pa.table({"sample_id": ids, "task": [i.split("-")[1] for i in ids]})
    assert _longest_run(rows["task"].to_pylist()) == 20
    shuffled = _shuffled(rows, seed=0)
    assert sorted(shuffled["sample_id"].to_pylist()) == ids  # the same rows
    shuffled_ids = shuffled["sample_id"].to_pylist()
    assert _longest_run([i.rsplit("-", 1)[0] for i in shuffled_ids]) < 5  # no long run of one room's one task
    assert _longest_run([i[:12] for i in shuffled_ids]) < 6  # nor of one room (a sixth of the rows each)
    assert _shuffled(rows, seed=0).equals(shuffled)  # the same seed, the same order
    assert not _shuffled(rows, seed=1).equals(shuffled)
