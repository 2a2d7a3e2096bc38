"""Situated questions (SQA3D's format) derived from a synthetic scene graph.

An agent stands or sits at a piece of furniture, facing another object: "I am sitting on the bed
facing the desk." Its pose is its position (the seat's centre on the floor plane) and its heading as
a quaternion about the vertical axis. Every question is answered from that pose and the graph:

    What is on my left? / on my right? / behind me?   the nearest object whose bearing is in that sector
    Is the <x> in front of me?                        yes when its bearing is within 45 degrees of ahead
    Which way should I turn to face the <x>?          left or right: the sign of its bearing
    How many <xs> are in front of me?                 those within 90 degrees of ahead
    Can I reach the <x> without standing up?         (sitting) yes when its box is within REACH metres

Bearings are measured counter-clockwise from the heading (z is up), so left is +90 degrees. Poses
are computed in the room frame and written in the scan's sensor frame, as SQA3D's are. Each
annotation also carries `object_ids`, the objects the question names (or, for "what is on my left?",
the answer's), which SQA3D's release does not have; the reader takes them where present.
An answer that a small change of pose could flip (an object on a sector's edge, two nearest objects
at about the same distance) is not asked.
"""

from __future__ import annotations

import math

import numpy as np

from cl3dor_ray.scenes.catalog import plural
from cl3dor_ray.scenes.pose import align_pose, yaw_quaternion
from cl3dor_ray.scenes.synth import SceneGraph, SynthObject
from cl3dor_ray.scenes.synth_annotations import refer

SEATS = ("bed", "sofa", "chair")  # where the agent sits; elsewhere it stands beside the object
STANDS = ("desk", "table", "bookshelf", "cabinet", "refrigerator")
REACH = 1.0  # metres from the agent to the nearest point of an object's box
MARGIN = math.radians(15)  # objects within this of a sector's edge are not asked about
SECTORS = {"on my left": math.pi / 2, "on my right": -math.pi / 2, "behind me": math.pi}
MAX_SITUATIONS = 3


def pose_records(pose) -> tuple[dict, dict]:
    """SQA3D's `position` and `rotation` records of a 7-number pose (scenes/pose.py)."""
    return (
        {k: round(float(v), 4) for k, v in zip("xyz", pose[:3])},
        {k: round(float(v), 6) for k, v in zip(("_x", "_y", "_z", "_w"), pose[3:])},
    )


def to_sensor_frame(annotation: dict, axis_alignment: np.ndarray) -> dict:
    """The annotation with its pose moved from the room frame to the scan's sensor frame, where SQA3D
    keeps it (prepare aligns it back with the scan's axisAlignment)."""
    pose = [*annotation["position"].values(), *annotation["rotation"].values()]
    position, rotation = pose_records(align_pose(pose, np.linalg.inv(axis_alignment)))
    return {**annotation, "position": position, "rotation": rotation}


def bearing(position: np.ndarray, yaw: float, target: np.ndarray) -> float:
    """Angle of `target` from the heading, in (-pi, pi]: positive to the left."""
    d = np.asarray(target[:2], float) - np.asarray(position[:2], float)
    a = math.atan2(d[1], d[0]) - yaw
    return math.atan2(math.sin(a), math.cos(a))


def box_distance(position: np.ndarray, obj: SynthObject) -> float:
    """Horizontal distance from the agent to the nearest point of the object's footprint."""
    lo, hi = obj.center[:2] - obj.dims[:2] / 2, obj.center[:2] + obj.dims[:2] / 2
    nearest = np.clip(np.asarray(position[:2], float), lo, hi)
    return float(np.linalg.norm(nearest - position[:2]))


def _others(graph: SceneGraph, *exclude: SynthObject) -> list[SynthObject]:
    ids = {o.object_id for o in exclude}
    return [o for o in graph.objects if o.object_id not in ids]


def _sector_answer(graph, position, yaw, anchor, sector) -> SynthObject | None:
    """The nearest object within 45 degrees of the sector's direction, when that is unambiguous."""
    inside = []
    for o in _others(graph, anchor):
        off = abs(
            math.atan2(
                math.sin(bearing(position, yaw, o.center) - sector), math.cos(bearing(position, yaw, o.center) - sector)
            )
        )
        if off < math.pi / 4 - MARGIN:
            inside.append((float(np.linalg.norm(o.center[:2] - position[:2])), o))
        elif off < math.pi / 4 + MARGIN:
            return None  # something on the sector's edge: the answer would hang on a few degrees
    if not inside:
        return None
    inside.sort(key=lambda t: (t[0], t[1].object_id))
    if len(inside) > 1 and inside[1][0] - inside[0][0] < 0.3 and inside[1][1].label != inside[0][1].label:
        return None
    return inside[0][1]


def situations(graph: SceneGraph, rng: np.random.Generator) -> list[tuple[str, np.ndarray, float, SynthObject, bool]]:
    """(description, position, yaw, the object it is at, sitting) for up to MAX_SITUATIONS poses."""
    out = []
    anchors = [o for o in graph.objects if o.label in SEATS + STANDS and o.support is None and refer(graph, o)]
    for k in rng.permutation(len(anchors))[:MAX_SITUATIONS]:
        anchor = anchors[int(k)]
        facing = [
            o
            for o in _others(graph, anchor)
            if o.support is None and refer(graph, o) and np.linalg.norm(o.center[:2] - anchor.center[:2]) > 1.0
        ]
        if not facing:
            continue
        target = facing[int(rng.integers(len(facing)))]
        sitting = anchor.label in SEATS
        position = np.array([anchor.center[0], anchor.center[1], 0.0])
        if not sitting:  # standing in front of it, on the side towards what it faces
            d = target.center[:2] - anchor.center[:2]
            position[:2] = anchor.center[:2] + d / np.linalg.norm(d) * (max(anchor.dims[:2]) / 2 + 0.4)
        d = target.center[:2] - position[:2]
        yaw = math.atan2(d[1], d[0])
        verb = f"sitting on {refer(graph, anchor)}" if sitting else f"standing by {refer(graph, anchor)}"
        out.append((f"I am {verb} facing {refer(graph, target)}.", position, yaw, anchor, sitting))
    return out


def sqa_questions(graph: SceneGraph, rng: np.random.Generator) -> list[tuple[dict, dict]]:
    """(question record, annotation record) pairs in SQA3D's schema; question_id is set by the caller."""
    pairs = []
    for situation, position, yaw, anchor, sitting in situations(graph, rng):
        asked = []
        for phrase, sector in SECTORS.items():
            if (found := _sector_answer(graph, position, yaw, anchor, sector)) is not None:
                asked.append((f"What is {phrase}?", found.label, "other", [found]))
        for o in _others(graph, anchor):
            name = refer(graph, o)
            b = bearing(position, yaw, o.center)
            if name is None:
                continue
            if abs(abs(b) - math.pi / 4) > MARGIN:
                asked.append((f"Is {name} in front of me?", "yes" if abs(b) < math.pi / 4 else "no", "yes/no", [o]))
            if math.pi / 6 < abs(b) < math.pi - MARGIN:
                asked.append((f"Which way should I turn to face {name}?", "left" if b > 0 else "right", "other", [o]))
            if sitting and abs(box_distance(position, o) - REACH) > 0.2:
                asked.append(
                    (
                        f"Can I reach {name} without standing up?",
                        "yes" if box_distance(position, o) < REACH else "no",
                        "yes/no",
                        [o],
                    )
                )
        for label in sorted({o.label for o in _others(graph, anchor)}):
            same = [o for o in _others(graph, anchor) if o.label == label]
            bearings = [abs(bearing(position, yaw, o.center)) for o in same]
            if all(abs(b - math.pi / 2) > MARGIN for b in bearings):
                asked.append(
                    (
                        f"How many {plural(label)} are in front of me?",
                        str(sum(b < math.pi / 2 for b in bearings)),
                        "number",
                        same,
                    )
                )
        position_record, rotation = pose_records([position[0], position[1], 0.0, *yaw_quaternion(yaw)])
        for k in rng.permutation(len(asked))[:8]:  # a handful per situation, as SQA3D has
            question, answer, answer_type, about = asked[int(k)]
            pairs.append(
                (
                    {
                        "scene_id": graph.scene_id,
                        "situation": situation,
                        "alternative_situation": [],
                        "question": question,
                    },
                    {
                        "scene_id": graph.scene_id,
                        "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": 1}],
                        "position": position_record,
                        "rotation": rotation,
                        "answer_type": answer_type,
                        "question_type": "N/A",
                        # ours, beside SQA3D's fields (its release has none): the objects the question is about,
                        # known when the room is generated, for the grounding head
                        "object_ids": [o.object_id for o in about],
                    },
                )
            )
    return pairs
