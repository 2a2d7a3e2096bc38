"""Grounding probes: does the answer depend on the room, and on where the agent stands?

The scene-swap probe.

Every validation question is asked again about another validation room: the rooms, sorted by id,
are paired with the next one (the last with the first), so every question moves to a room with other
objects. A model that reads the room loses exact match there; a model that answers from the
question alone keeps it. metrics.json gets

    grounding.scene_swap.em          EM of the answers about the wrong room (against the true room's gold)
    grounding.scene_swap.drop        true-room EM minus that, over the same questions
    grounding.scene_swap.em.<type>   per question type, and .changed: the share of answers that changed

The pose probe: every situated question whose answer follows from the geometry when the agent turns
around is asked again with the agent turned by half a turn (`pose_probes`); `grounding.pose.follows`
is the share answered as the turned geometry says. A model that ignores the pose keeps its answers
and scores about the share of those whose answer does not change.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from cl3dor_ray.eval.metrics import exact_match
from cl3dor_ray.scenes.pose import heading, to_agent_frame, yaw_quaternion
from cl3dor_ray.text.normalize import normalize_answer


def swap_partners(scene_ids: list[str]) -> dict[str, str]:
    """Each scene -> the next one in sorted order (a cycle, so no scene keeps its own objects)."""
    scenes = sorted(set(scene_ids))
    if len(scenes) < 2:
        raise ValueError(f"the scene-swap probe needs at least 2 validation scenes, got {len(scenes)}")
    return {s: scenes[(i + 1) % len(scenes)] for i, s in enumerate(scenes)}


def swap_metrics(true_rows: list[dict], swapped_rows: list[dict]) -> dict[str, float]:
    """Rows: {sample_id, question_type, answers, prediction}; swapped rows answer the same questions
    about the partner room. Only questions answered in both count."""
    swapped = {r["sample_id"]: r for r in swapped_rows}
    pairs = [(t, swapped[t["sample_id"]]) for t in true_rows if t["sample_id"] in swapped]
    if not pairs:
        return {}
    by_type = defaultdict(list)
    for t, s in pairs:
        row = (
            exact_match(t["prediction"], t["answers"]),
            exact_match(s["prediction"], t["answers"]),
            normalize_answer(t["prediction"]) != normalize_answer(s["prediction"]),
        )
        by_type["all"].append(row)
        by_type[t["question_type"] or "unknown"].append(row)
    out = {}
    for kind, rows in sorted(by_type.items()):
        n = len(rows)
        em_true, em_swap = sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n
        key = "grounding.scene_swap" if kind == "all" else f"grounding.scene_swap.em.{kind}"
        if kind == "all":
            out.update(
                {
                    f"{key}.em": em_swap,
                    f"{key}.drop": em_true - em_swap,
                    f"{key}.changed": sum(r[2] for r in rows) / n,
                    f"{key}.n": n,
                }
            )
        else:
            out.update({key: em_swap, f"{key}.drop": em_true - em_swap, f"{key}.changed": sum(r[2] for r in rows) / n})
    return out


# ---------------------------------------------------------------------- the pose probe
FRONT = math.pi / 4  # "in front of me": within 45 degrees of ahead (scenes/synth_situated.py)
EDGE = math.radians(15)  # a turned bearing this close to 45 degrees is not probed: its answer is uncertain


def turned_around(pose) -> list[float]:
    """The same position, the heading turned by half a turn."""
    return [*pose[:3], *yaw_quaternion(heading(pose) + math.pi)]


def pose_probes(samples: list[dict], centers: dict[tuple[str, int], list[float]]) -> list[tuple[dict, str]]:
    """Situated questions asked again with the agent turned around, each with the answer the geometry
    then gives: "which way to turn to face X" swaps left and right (any object off the line of sight
    changes side); "is X in front of me" is computed from X's centre in the turned agent's frame, and
    left out when it falls within 15 degrees of the 45-degree edge. Needs the pose, and for "in front" the
    object (`object_ids`: our synthetic SQA3D has them, the release does not)."""
    out = []
    for s in samples:
        if s["task"] != "sqa" or not s.get("pose"):
            continue
        question, answer = s["question"].lower(), normalize_answer(s["answers"][0])
        turned = {**s, "pose": turned_around(s["pose"])}
        if question.startswith("which way") and answer in ("left", "right"):
            out.append((turned, "right" if answer == "left" else "left"))
        elif question.startswith("is ") and "in front of" in question and answer in ("yes", "no") and s["object_ids"]:
            center = centers.get((s["scene_id"], s["object_ids"][0]))
            if center is None:
                continue
            moved, _ = to_agent_frame(np.array([center]), np.zeros((1, 3)), turned["pose"])
            b = abs(math.atan2(float(moved[0, 1]), float(moved[0, 0])))
            if abs(b - FRONT) > EDGE:
                out.append((turned, "yes" if b < FRONT else "no"))
    return out


def pose_metrics(true_rows: list[dict], turned_rows: list[dict], expected: list[str]) -> dict[str, float]:
    """`grounding.pose.follows`: the share of probed questions whose answer with the agent turned around is
    the one the geometry gives; `.changed`: the share whose answer changed with the pose (of those whose
    expected answer changed); per question kind (`.which`, `.is`) too."""
    before = {r["sample_id"]: r for r in true_rows}
    groups: dict[str, list[tuple[bool, bool | None]]] = defaultdict(list)
    for row, want in zip(turned_rows, expected):
        original = before.get(row["sample_id"])
        if original is None or "error" in row:
            continue
        follows = normalize_answer(row["prediction"]) == want
        flipped = want != normalize_answer(original["answers"][0])
        changed = normalize_answer(row["prediction"]) != normalize_answer(original["prediction"]) if flipped else None
        for key in ("", "." + row["question"].split()[0].lower()):
            groups[key].append((follows, changed))
    out = {}
    for key, rows in sorted(groups.items()):
        out[f"grounding.pose.follows{key}"] = sum(f for f, _ in rows) / len(rows)
        out[f"grounding.pose.n{key}"] = len(rows)
        flips = [c for _, c in rows if c is not None]
        if flips:
            out[f"grounding.pose.changed{key}"] = sum(flips) / len(flips)
    return out
