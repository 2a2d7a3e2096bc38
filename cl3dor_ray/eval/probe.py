"""The scene-swap grounding probe: does the answer depend on the room?

Every validation question is asked again about another validation room: the rooms, sorted by id,
are paired with the next one (the last with the first), so every question moves to a room with other
objects. A model that reads the room loses exact match there; a model that answers from the
question alone keeps it. metrics.json gets

    grounding.scene_swap.em          EM of the answers about the wrong room (against the true room's gold)
    grounding.scene_swap.drop        true-room EM minus that, over the same questions
    grounding.scene_swap.em.<type>   per question type, and .changed: the share of answers that changed
"""

from __future__ import annotations

from collections import defaultdict

from cl3dor_ray.eval.metrics import exact_match
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
        row = (exact_match(t["prediction"], t["answers"]), exact_match(s["prediction"], t["answers"]),
               normalize_answer(t["prediction"]) != normalize_answer(s["prediction"]))
        by_type["all"].append(row)
        by_type[t["question_type"] or "unknown"].append(row)
    out = {}
    for kind, rows in sorted(by_type.items()):
        n = len(rows)
        em_true, em_swap = sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n
        key = "grounding.scene_swap" if kind == "all" else f"grounding.scene_swap.em.{kind}"
        if kind == "all":
            out.update({f"{key}.em": em_swap, f"{key}.drop": em_true - em_swap, f"{key}.changed": sum(r[2] for r in rows) / n,
                        f"{key}.n": n})
        else:
            out.update({key: em_swap, f"{key}.drop": em_true - em_swap, f"{key}.changed": sum(r[2] for r in rows) / n})
    return out
