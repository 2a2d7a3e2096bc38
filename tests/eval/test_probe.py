"""The pose probe's arithmetic: what turning the agent around does to a situated question's answer."""

import math

import pytest

from cl3dor_ray.eval.probe import pose_metrics, pose_probes, turned_around
from cl3dor_ray.scenes.pose import heading, yaw_quaternion


def _sqa(sid, question, answer, object_ids=(), yaw=0.0):
    return {
        "sample_id": sid,
        "task": "sqa",
        "scene_id": "s0",
        "question": question,
        "answers": [answer],
        "object_ids": list(object_ids),
        "pose": [1.0, 2.0, 0.0, *yaw_quaternion(yaw)],
    }


def test_turning_around_keeps_the_place_and_reverses_the_heading():
    pose = [1.0, 2.0, 0.5, *yaw_quaternion(0.3)]
    turned = turned_around(pose)
    assert turned[:3] == pose[:3] and heading(turned) == pytest.approx(0.3 - math.pi, abs=1e-9)


def test_pose_probes_know_the_answer_the_turned_geometry_gives():
    centers = {
        ("s0", 1): [4.0, 2.0, 0.5],  # straight ahead of an agent at (1, 2) facing +x: behind once turned
        ("s0", 2): [1.0, 3.0, 0.5],  # on its left: still not in front once turned
        ("s0", 3): [-2.0, 2.5, 0.5],  # behind it: in front once turned
        ("s0", 4): [0.0, 3.0, 0.5],
    }  # 135 degrees: at 45 once turned, on the edge: not probed
    samples = [
        _sqa("a", "Is the lamp in front of me?", "yes", [1]),
        _sqa("b", "Is the cup in front of me?", "no", [2]),
        _sqa("c", "Is the bed in front of me?", "no", [3]),
        _sqa("d", "Is the box in front of me?", "no", [4]),
        _sqa("e", "Which way should I turn to face the sofa?", "left"),
        _sqa("f", "Can I reach the desk without standing up?", "yes", [1]),  # not a probe
        _sqa("g", "Is the chair in front of me?", "yes"),
    ]  # no object: cannot be probed
    probes = pose_probes(samples, centers)
    assert [(s["sample_id"], want) for s, want in probes] == [("a", "no"), ("b", "no"), ("c", "yes"), ("e", "right")]
    assert all(
        heading(s["pose"]) == pytest.approx(math.pi) or heading(s["pose"]) == pytest.approx(-math.pi) for s, _ in probes
    )


def test_pose_metrics_count_answers_that_follow_and_that_changed():
    true_rows = [
        {"sample_id": "a", "answers": ["yes"], "prediction": "yes", "question": "Is the lamp in front of me?"},
        {"sample_id": "e", "answers": ["left"], "prediction": "left", "question": "Which way should I turn?"},
        {"sample_id": "b", "answers": ["no"], "prediction": "no", "question": "Is the cup in front of me?"},
    ]
    turned = [
        {**true_rows[0], "prediction": "no"},
        {**true_rows[1], "prediction": "left"},
        {**true_rows[2], "prediction": "no"},
    ]
    m = pose_metrics(true_rows, turned, ["no", "right", "no"])
    assert m["grounding.pose.follows"] == pytest.approx(2 / 3) and m["grounding.pose.n"] == 3
    assert m["grounding.pose.changed"] == pytest.approx(1 / 2)  # of a and e, whose expected answers flipped
    assert m["grounding.pose.follows.is"] == 1.0 and m["grounding.pose.follows.which"] == 0.0
