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
        with follow_training(path, [("instruction_tuning", 12, 0)], lambda name: False) as bars:
            with open(path, "a") as fh:
                fh.write(_rows(range(1, 7)))
            assert _until(lambda: "instruction_tuning" in bars and bars["instruction_tuning"].n == 6)
            progress = bars["instruction_tuning"]
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


def test_stages_of_one_job_get_their_bars_in_turn(tmp_path):
    """All stages run in one Ray Train job: a stage's bar closes when its model is exported, the next opens."""
    path, exported, events = tmp_path / "metrics.jsonl", set(), []
    stages = [("encoder_pretraining", 4, 0), ("grounding", 3, 0), ("instruction_tuning", 5, 2)]
    with follow_training(
        path,
        stages,
        exported.__contains__,
        lambda name, total, start: events.append(("start", name, total, start)),
        lambda name, seconds: events.append(("done", name)),
    ) as bars:
        path.write_text(_rows(range(1, 5), "encoder_pretraining"))
        assert _until(lambda: "encoder_pretraining" in bars and bars["encoder_pretraining"].n == 4)
        assert "grounding" not in bars  # its stage has not finished
        exported.add("encoder_pretraining")
        with open(path, "a") as fh:  # the next stage's rows can arrive in the same read as the export
            fh.write(_rows(range(1, 4), "grounding"))
        exported.add("grounding")
        with open(path, "a") as fh:
            fh.write(_rows(range(3, 5)))
        assert _until(lambda: "instruction_tuning" in bars and bars["instruction_tuning"].n == 4)
    assert bars["grounding"].n == 3
    assert events == [
        ("start", "encoder_pretraining", 4, 0),
        ("done", "encoder_pretraining"),
        ("start", "grounding", 3, 0),
        ("done", "grounding"),
        ("start", "instruction_tuning", 5, 2),  # resumed at its checkpoint: its bar starts there
    ]
