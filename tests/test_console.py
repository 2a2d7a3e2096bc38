"""The training bar follows metrics.jsonl, also when a restarted worker rewrites it under the follower."""

import json
import threading
import time

from cl3dor_ray.console import follow_training


def _rows(steps, stage="instruction_tuning"):
    return "".join(
        json.dumps({"stage": stage, "step": s, "loss": 1.0 / s, "samples_per_s": 10.0}) + "\n" for s in steps
    )


def _until(condition, timeout: float = 15.0) -> bool:
    """Polls: the follower reads every 0.5 s, later on a loaded machine."""
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.1)
    return condition()


def test_the_bar_survives_a_rewrite_to_a_shorter_file_and_a_line_caught_mid_write(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_rows(range(1, 4), stage="grounding"))  # another stage's rows, before this one starts
    errors = []
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        with follow_training(path, "instruction_tuning", total=12) as progress:
            with open(path, "a") as fh:
                fh.write(_rows(range(1, 7)))
            assert _until(lambda: progress.n == 6), progress.n
            # the worker died and restarted from its checkpoint at step 4: rows past it are dropped
            path.write_text(_rows(range(1, 4), stage="grounding") + _rows(range(1, 5)))
            time.sleep(1.2)
            with open(path, "a") as fh:  # a line half written, then the rest of the run
                fh.write('{"stage": "instruction_tuning", "st')
                fh.flush()
                time.sleep(1.2)
                fh.write('ep": 5, "loss": 0.2}\n' + _rows(range(6, 13)))
            assert _until(lambda: progress.n == 12), progress.n
    finally:
        threading.excepthook = hook
    assert errors == []
