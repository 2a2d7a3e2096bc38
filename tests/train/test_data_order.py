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


def test_a_worker_draws_every_row_once_per_epoch_and_a_resume_sees_the_same_batches():
    from itertools import islice

    import numpy as np

    from cl3dor_ray.train.worker import batches

    run = list(islice(batches(50, 8, (0, 1)), 18))  # 6 batches an epoch (2 rows left over), three epochs
    for epoch in range(3):
        rows = np.concatenate(run[6 * epoch : 6 * epoch + 6])
        assert len(set(rows.tolist())) == 48  # no row twice within an epoch
    assert not np.array_equal(np.concatenate(run[:6]), np.concatenate(run[6:12]))  # a fresh order each epoch
    resumed = list(islice(batches(50, 8, (0, 1), start=10), 8))
    assert all(np.array_equal(a, b) for a, b in zip(run[10:], resumed))
    other_rank = list(islice(batches(50, 8, (0, 0)), 6))
    assert not all(np.array_equal(a, b) for a, b in zip(run, other_rank))
