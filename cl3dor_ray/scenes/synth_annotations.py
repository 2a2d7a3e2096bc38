"""Annotations derived from a synthetic scene graph, in the public datasets' JSON schemas.

Every answer is computed from the graph, so it is true of the scan:
  ScanQA    {scene_id, question_id, question, answers, object_ids, object_names}  (+ question_type)
  ScanRefer {scene_id, object_id, object_name, ann_id, description, token}       (ids as strings)
  existence {scene_id, question_id, question, answer, object_name, pope_type}     (POPE-style yes/no)
`question_type` is our extension (colour, category, counting, relation, location, existence) so
results can be split by type; real ScanQA files simply lack it.
Relations use a fixed viewpoint: standing at the front wall (y = -depth/2) facing the back wall.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from cl3dor_ray.scenes.catalog import CATEGORIES, CO_OCCURRENCE, COLORS, plural
from cl3dor_ray.scenes.synth import SceneGraph, SynthObject
from cl3dor_ray.text.vocab import masking_pattern, question_template, question_text

NEAR, FAR = 1.0, 2.5  # metres between centres for "near" and "far"
POPE_PER_TYPE = 3
MAX_PAIR_QUESTIONS = 12  # location questions per scene, and as many above/below ones
VERTICAL_GAP = 0.05  # metres between one object's bottom and the other's top for "above" / "below"
MAX_ANSWER_SHARE = 0.2  # after balancing, no answer is more than this share of its template (1/2 for yes/no)
MAX_COUNT_SHARE = 1 / 3  # counts: "1" is most rooms' answer; a tighter cap would leave too few to learn from


def refer(graph: SceneGraph, obj: SynthObject, avoid: tuple[str, ...] = ()) -> str | None:
    """A phrase that picks out `obj` alone ("the cup", "the cup on the desk", "the red cup"), or None.

    `avoid` names the attributes the phrase must not mention because the question asks for them.
    """
    same = [o for o in graph.objects if o.label == obj.label]
    if len(same) == 1:
        return f"the {obj.label}"
    if "support" not in avoid and obj.support is not None:
        where = graph.get(obj.support).label
        if sum(o.support is not None and graph.get(o.support).label == where for o in same) == 1:
            return f"the {obj.label} on the {where}"
    if "color" not in avoid and sum(o.color == obj.color for o in same) == 1:
        return f"the {obj.color} {obj.label}"
    return None


def _distance(a: SynthObject, b: SynthObject) -> float:
    return float(np.linalg.norm(a.center[:2] - b.center[:2]))


def _nearest(graph: SceneGraph, obj: SynthObject) -> SynthObject | None:
    """The closest other object, if it is clearly closer than the runner-up (else "next to" is ambiguous)."""
    others = sorted(
        (o for o in graph.objects if o is not obj and o.support != obj.object_id and obj.support != o.object_id),
        key=lambda o: _distance(obj, o),
    )
    if not others:
        return None
    if len(others) > 1 and _distance(obj, others[1]) < 1.25 * _distance(obj, others[0]):
        return None
    return others[0]


def _qa(graph, kind, question, answers, objs) -> dict:
    return {
        "scene_id": graph.scene_id,
        "question": question,
        "answers": answers,
        "object_ids": [o.object_id for o in objs],
        "object_names": [o.label for o in objs],
        "question_type": kind,
    }


def scanqa_questions(graph: SceneGraph, rng: np.random.Generator) -> list[dict]:
    out = []
    objs = graph.objects
    for obj in objs:
        if (ref := refer(graph, obj, avoid=("color",))) is not None:
            out.append(_qa(graph, "color", f"What color is {ref}?", [obj.color], [obj]))
        if obj.support is not None and (ref := refer(graph, obj, avoid=("support",))) is not None:
            support = graph.get(obj.support)
            out.append(_qa(graph, "relation", f"Where is {ref} placed?", [f"on the {support.label}"], [obj, support]))
        items = graph.on_top_of(obj.object_id)
        if items and (ref := refer(graph, obj)) is not None:
            if len(items) == 1:
                # the answer's object first, then the one the question names: the grounding head finds both
                out.append(_qa(graph, "category", f"What is on {ref}?", [items[0].label], [items[0], obj]))
            labels = sorted({i.label for i in items})
            for label in labels:
                n = sum(i.label == label for i in items)
                out.append(
                    _qa(
                        graph,
                        "counting",
                        f"How many {plural(label)} are on {ref}?",
                        [str(n)],
                        [i for i in items if i.label == label],
                    )
                )
            present = labels[rng.integers(len(labels))]
            out.append(
                _qa(
                    graph,
                    "existence",
                    f"Is there a {present} on {ref}?",
                    ["yes"],
                    [i for i in items if i.label == present],
                )
            )
            absent = [c for c in CATEGORIES.values() if obj.label in c.on and c.label not in labels]
            if absent:
                label = absent[rng.integers(len(absent))].label
                out.append(_qa(graph, "existence", f"Is there a {label} on {ref}?", ["no"], [obj]))
        if obj.support is None and (near := _nearest(graph, obj)) is not None:
            if (ref := refer(graph, obj)) is not None and near.support is None:
                out.append(_qa(graph, "category", f"What is next to {ref}?", [near.label], [near, obj]))

    for label in sorted({o.label for o in objs}):
        group = [o for o in objs if o.label == label]
        out.append(_qa(graph, "counting", f"How many {plural(label)} are in the room?", [str(len(group))], group))

    out += _vertical_pairs(graph, rng)
    floor = [o for o in objs if o.support is None]
    pairs = []
    for a in floor:
        for b in floor:
            if a is b or (ra := refer(graph, a)) is None or (rb := refer(graph, b)) is None:
                continue
            dx, dy = a.center[:2] - b.center[:2]
            if _distance(a, b) < 3.0 and abs(dx) > max(0.3, 2 * abs(dy)):
                side = "right" if dx > 0 else "left"
                pairs.append(
                    _qa(graph, "location", f"Facing the back wall, which side of {rb} is {ra} on?", [side], [a, b])
                )
            d = _distance(a, b)
            if a.object_id < b.object_id and (d < NEAR or d > FAR):
                pairs.append(
                    _qa(graph, "location", f"Is {ra} near or far from {rb}?", ["near" if d < NEAR else "far"], [a, b])
                )
    # pairs grow quadratically with the room; keep them from swamping the other question types
    keep = sorted(rng.choice(len(pairs), size=min(len(pairs), MAX_PAIR_QUESTIONS), replace=False)) if pairs else []
    return out + [pairs[i] for i in keep]


def _vertical_pairs(graph: SceneGraph, rng: np.random.Generator) -> list[dict]:
    """ "Is A above or below B?" for two objects on different supports, one clear of the other: which one
    is higher depends on the furniture they rest on, which only the room tells (an object is never asked
    about against its own support, which the categories alone would answer)."""
    raised = [o for o in graph.objects if o.support is not None and refer(graph, o) is not None]
    pairs = []
    for a in raised:
        for b in raised:
            if a.support == b.support:
                continue
            a_lo, a_hi = a.center[2] - a.dims[2] / 2, a.center[2] + a.dims[2] / 2
            b_lo, b_hi = b.center[2] - b.dims[2] / 2, b.center[2] + b.dims[2] / 2
            answer = "above" if a_lo > b_hi + VERTICAL_GAP else "below" if a_hi < b_lo - VERTICAL_GAP else None
            if answer:
                pairs.append(
                    _qa(graph, "relation", f"Is {refer(graph, a)} above or below {refer(graph, b)}?", [answer], [a, b])
                )
    keep = sorted(rng.choice(len(pairs), size=min(len(pairs), MAX_PAIR_QUESTIONS), replace=False)) if pairs else []
    return [pairs[i] for i in keep]


def _place_phrase(graph: SceneGraph, obj: SynthObject) -> str:
    if obj.support is not None:
        return f"on the {graph.get(obj.support).label}"
    half = graph.room[:2] / 2
    gaps = half - np.abs(obj.center[:2]) - obj.dims[:2] / 2
    if np.all(gaps < 0.3):
        return "in the corner of the room"
    if np.any(gaps < 0.3):
        return "against the wall"
    if np.all(np.abs(obj.center[:2]) < half / 2):
        return "in the middle of the room"
    return "on the floor"


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w']+|[.,!?;]", text)


def scanrefer_descriptions(graph: SceneGraph) -> list[dict]:
    out = []
    for obj in graph.objects:
        place = _place_phrase(graph, obj)
        size = "" if obj.size == "medium" else f"{obj.size} "
        near = _nearest(graph, obj)
        texts = [f"this is a {obj.color} {obj.label}. it is {place}."]
        second = f"there is a {size}{obj.color} {obj.label} {place}."
        if near is not None:
            second += f" it is next to a {near.label}."
        texts.append(second)
        for ann_id, text in enumerate(texts):
            out.append(
                {
                    "scene_id": graph.scene_id,
                    "object_id": str(obj.object_id),
                    "object_name": obj.label,
                    "ann_id": str(ann_id),
                    "description": text,
                    "token": _tokens(text),
                }
            )
    return out


def _popular_order() -> list[str]:
    return sorted(CATEGORIES, key=lambda c: (-CATEGORIES[c].prior, c))


def existence_questions(graph: SceneGraph, rng: np.random.Generator) -> list[dict]:
    """POPE: for each sampling type, k present categories ("yes") and k absent ones ("no")."""
    present = sorted({o.label for o in graph.objects})
    absent = [c for c in CATEGORIES if c not in present]
    candidates = {
        "random": list(rng.permutation(absent)),
        "popular": [c for c in _popular_order() if c in absent],
        # most co-occurring first; ties by name, never by set order (which follows PYTHONHASHSEED)
        "adversarial": sorted(
            {c for p in present for c in CO_OCCURRENCE.get(p, ()) if c in absent},
            key=lambda c: (-sum(c in CO_OCCURRENCE.get(p, ()) for p in present), c),
        ),
    }
    out = []
    for pope_type, negatives in candidates.items():
        k = min(POPE_PER_TYPE, len(present), len(negatives))
        yes = rng.choice(present, size=k, replace=False).tolist() if k else []
        for label, answer in [(y, "yes") for y in yes] + [(n, "no") for n in negatives[:k]]:
            out.append(
                {
                    "scene_id": graph.scene_id,
                    "question": f"Is there a {label} in the room?",
                    "answer": answer,
                    "object_name": str(label),
                    "pope_type": pope_type,
                    "object_ids": [o.object_id for o in graph.objects if o.label == label],
                }
            )
    return out


def _answer_cap(counts: list[int], share: float) -> int:
    """The largest per-answer count c with c <= share * sum(min(n, c)): the cap that balances a template."""
    best = 1
    for c in range(1, max(counts) + 1):
        if c <= share * sum(min(n, c) for n in counts):
            best = c
    return best


def _cap_answers(questions: list[dict], key, share_of, rng: np.random.Generator) -> list[int]:
    """The indices kept: within each group of questions with the same key, each answer keeps at most the
    cap of `_answer_cap` (share: `share_of(question_type, answer counts)`), chosen at random; in order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        groups[key(q["question"])].append(i)
    keep: list[int] = []
    for name in sorted(groups):  # sorted: never set or hash order
        members = groups[name]
        counts = Counter(questions[i]["answers"][0] for i in members)
        cap = _answer_cap(list(counts.values()), share_of(questions[members[0]].get("question_type"), counts))
        taken: Counter = Counter()
        for i in rng.permutation(members).tolist():
            answer = questions[i]["answers"][0]
            if taken[answer] < cap:
                taken[answer] += 1
                keep.append(i)
    return sorted(keep)


def _share(question_type: str | None, counts: Counter) -> float:
    if len(counts) <= 2:
        return 0.5
    return MAX_COUNT_SHARE if question_type == "counting" else max(MAX_ANSWER_SHARE, 1 / len(counts))


def balance_answers(questions: list[dict], rng: np.random.Generator) -> list[dict]:
    """Drop questions until no answer dominates its template, so the question's form does not answer it.

    A template is the question with category and colour words masked ("what color is the _ on the _?"),
    a key the text-only prior (eval/prior.py) answers from. Counts keep up to a third each ("1" is most
    rooms' answer: a fifth would leave too few to learn from).
    """
    pattern = masking_pattern(list(CATEGORIES) + list(COLORS))
    return [questions[i] for i in _cap_answers(questions, lambda q: question_template(q, pattern), _share, rng)]


def balance_question_words(splits: dict[str, list[dict]], rng: np.random.Generator) -> dict[str, list[dict]]:
    """Drop questions until the question's own words, its categories kept, do not give the answer.

    Grouped by the exact question text ("where is the pillow placed?"). A text with one answer in the
    whole world keeps one question, in one split, so what its words imply is never learned and then
    asked again. A text with several keeps them balanced within each split (at most half each for two
    answers, a fifth or 1/n for more), so its training answers say nothing about its validation ones,
    neither for them nor against them. Counting questions are left to the template balance (their prior
    is reported, not bounded).
    """
    answers: dict[str, set] = defaultdict(set)
    where: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split in sorted(splits):
        for i, q in enumerate(splits[split]):
            if q.get("question_type") != "counting":
                answers[question_text(q["question"])].add(q["answers"][0])
                where[question_text(q["question"])].append((split, i))
    dropped = set()
    for text in sorted(where):  # one answer in the world: one question of it survives, anywhere
        if len(answers[text]) == 1 and len(where[text]) > 1:
            keep = int(rng.integers(len(where[text])))
            dropped |= {at for j, at in enumerate(where[text]) if j != keep}
    out = {}
    for split in sorted(splits):
        rest = [q for i, q in enumerate(splits[split]) if (split, i) not in dropped]
        words = [i for i, q in enumerate(rest) if q.get("question_type") != "counting"]
        kept = {
            words[j]
            for j in _cap_answers([rest[i] for i in words], question_text, lambda t, counts: _share(None, counts), rng)
        }
        out[split] = [q for i, q in enumerate(rest) if q.get("question_type") == "counting" or i in kept]
    return out
