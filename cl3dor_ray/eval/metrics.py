"""The metrics papers in this field report.

- ScanQA: EM and EM-refined (one answer contains the other) after `normalize_answer`; CIDEr,
  BLEU-4, METEOR and ROUGE-L through pycocoevalcap with its PTB tokenizer (Java).
- Scan2Cap: the same n-gram metrics of captions against all ScanRefer descriptions of the object.
- POPE-style existence: accuracy, precision, recall, F1 and yes-ratio, "yes" as the positive class.

`compute_metrics` turns the evaluation's predictions into the flat keys of EVAL/metrics.json; QA and
captions are also split by the size of the object they are about (SMALL_OBJECT_M).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

from cl3dor_ray.console import captured
from cl3dor_ray.data.objects import SMALL_OBJECT_M
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.text.normalize import normalize_answer, spell_numbers


def exact_match(prediction: str, answers: list[str]) -> bool:
    """Equal to one answer after the normaliser; an empty prediction (or one the normaliser empties) never is."""
    pred = normalize_answer(prediction)
    return bool(pred) and any(pred == normalize_answer(a) for a in answers)


def exact_match_refined(prediction: str, answers: list[str]) -> bool:
    """EM-refined: exact on any answer first; else right when the prediction or an answer contains the
    other with spaces removed and numbers in words (LEO's `answer_match`: "trashcan" and "trash can"
    agree, "2" and "12" do not). Empty never matches."""
    pred = normalize_answer(prediction)
    golds = [normalize_answer(a) for a in answers]
    if not pred or pred in golds:
        return bool(pred)
    squeezed = spell_numbers(pred).replace(" ", "")
    return any(g and ((s := spell_numbers(g).replace(" ", "")) in squeezed or squeezed in s) for g in golds)


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """pycocoevalcap's BLEU-4, METEOR, ROUGE-L and CIDEr, PTB-tokenised, over ids present in both."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = sorted(set(predictions) & set(references))
    if not ids:
        return {}
    tokenizer = PTBTokenizer()
    with captured():  # its Java process reports every call on stderr
        res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})
        gts = tokenizer.tokenize({i: [{"caption": r} for r in references[i]] for i in ids})
    # PTB tokenisation can empty a prediction (e.g. only punctuation); scorers need one token
    res = {i: [c if c.strip() else "<empty>" for c in caps] for i, caps in res.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    meteor, _ = Meteor().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "meteor": float(meteor), "rouge_l": float(rouge), "cider": float(cider)}


def pope_metrics(predictions: list[str], labels: list[str]) -> dict[str, float]:
    """predictions and labels are "yes"/"no" strings (anything else in predictions counts as "no")."""
    pred = [normalize_answer(p).startswith("yes") for p in predictions]
    gold = [normalize_answer(g) == "yes" for g in labels]
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(not p and g for p, g in zip(pred, gold))
    tn = sum(not p and not g for p, g in zip(pred, gold))
    n = max(len(gold), 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
        "n": len(gold),
    }


SIZE_CLASSES = ("small_objects", "large_objects")


def object_centers(prepared: Prepared) -> dict[tuple[str, int], list[float]]:
    """(scene_id, object_id) -> the centre of the object's box, in the prepared (axis-aligned) frame."""
    t = prepared.object_table(["scene_id", "object_id", "center"]).to_pydict()
    return {(s, i): c for s, i, c in zip(t["scene_id"], t["object_id"], t["center"])}


def object_sizes(prepared: Prepared) -> dict[tuple[str, int], float]:
    """(scene_id, object_id) -> the longest side of the object's box, in metres."""
    t = prepared.object_table(["scene_id", "object_id", "size"]).to_pydict()
    return {(s, i): max(size) for s, i, size in zip(t["scene_id"], t["object_id"], t["size"])}


def size_class(row: dict, sizes: dict[tuple[str, int], float]) -> str | None:
    ids = row.get("object_ids") or []
    extent = sizes.get((row["scene_id"], ids[0])) if ids else None
    return None if extent is None else SIZE_CLASSES[0] if extent < SMALL_OBJECT_M else SIZE_CLASSES[1]


def compute_metrics(rows: list[dict], sizes: dict[tuple[str, int], float] | None = None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    sizes = sizes or {}
    qa = [r for r in rows if r["task"] == "qa"]
    if qa:
        metrics["scanqa.em"] = sum(exact_match(r["prediction"], r["answers"]) for r in qa) / len(qa)
        metrics["scanqa.em_refined"] = sum(exact_match_refined(r["prediction"], r["answers"]) for r in qa) / len(qa)
        by_type = defaultdict(list)
        for r in qa:
            by_type[r["question_type"] or "unknown"].append(exact_match(r["prediction"], r["answers"]))
        metrics.update({f"scanqa.em.{t}": sum(v) / len(v) for t, v in sorted(by_type.items())})
        metrics.update({f"scanqa.n.{t}": len(v) for t, v in sorted(by_type.items())})
        for cls in SIZE_CLASSES:
            mine = [exact_match(r["prediction"], r["answers"]) for r in qa if size_class(r, sizes) == cls]
            if mine:
                metrics[f"scanqa.em.{cls}"], metrics[f"scanqa.n.{cls}"] = sum(mine) / len(mine), len(mine)
        ngram = caption_metrics(
            {r["sample_id"]: r["prediction"] for r in qa}, {r["sample_id"]: r["answers"] for r in qa}
        )
        metrics.update({f"scanqa.{k}": v for k, v in ngram.items()})
        metrics["scanqa.n"] = len(qa)
    caps = [r for r in rows if r["task"] == "caption"]
    if caps:
        ngram = caption_metrics(
            {r["sample_id"]: r["prediction"] for r in caps}, {r["sample_id"]: r["answers"] for r in caps}
        )
        metrics.update({f"scan2cap.{k}": v for k, v in ngram.items()})
        metrics["scan2cap.n"] = len(caps)
        for cls in SIZE_CLASSES:
            mine = [r for r in caps if size_class(r, sizes) == cls]
            if mine:
                metrics[f"scan2cap.cider.{cls}"] = caption_metrics(
                    {r["sample_id"]: r["prediction"] for r in mine}, {r["sample_id"]: r["answers"] for r in mine}
                )["cider"]
                metrics[f"scan2cap.n.{cls}"] = len(mine)
    sqa = [r for r in rows if r["task"] == "sqa"]
    if sqa:  # LEO's split by the question's first word (text/sqa3d.question_type)
        metrics["sqa3d.em"] = sum(exact_match(r["prediction"], r["answers"]) for r in sqa) / len(sqa)
        metrics["sqa3d.em_refined"] = sum(exact_match_refined(r["prediction"], r["answers"]) for r in sqa) / len(sqa)
        metrics["sqa3d.n"] = len(sqa)
        for t in sorted({r["question_type"] for r in sqa}):
            mine = [r for r in sqa if r["question_type"] == t]
            metrics[f"sqa3d.em.{t}"] = sum(exact_match(r["prediction"], r["answers"]) for r in mine) / len(mine)
            metrics[f"sqa3d.em_refined.{t}"] = sum(
                exact_match_refined(r["prediction"], r["answers"]) for r in mine
            ) / len(mine)
            metrics[f"sqa3d.n.{t}"] = len(mine)
    pope = [r for r in rows if r["task"] == "existence"]
    for split in sorted({r["question_type"] for r in pope}) + (["all"] if pope else []):
        mine = [r for r in pope if split == "all" or r["question_type"] == split]
        for k, v in pope_metrics([r["prediction"] for r in mine], [r["answers"][0] for r in mine]).items():
            metrics[f"existence.{split}.{k}"] = v
    return metrics
