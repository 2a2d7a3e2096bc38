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


CAPTION_SCORERS = ("bleu4", "meteor", "rouge_l", "cider")


def ptb_tokenized(
    predictions: dict[str, str], references: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The predictions and references of the ids present in both, PTB-tokenised as pycocoevalcap's scorers
    expect: (res, gts). One Java run for both (the tokeniser reads one sentence per line)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = sorted(set(predictions) & set(references))
    both = {("res", i): [{"caption": predictions[i]}] for i in ids}
    both.update({("gts", i): [{"caption": r} for r in references[i]] for i in ids})
    with captured():  # its Java process reports every call on stderr
        tokens = PTBTokenizer().tokenize(both) if ids else {}
    # PTB tokenisation can empty a prediction (e.g. only punctuation); scorers need one token
    res = {i: [c if c.strip() else "<empty>" for c in tokens[("res", i)]] for i in ids}
    return res, {i: tokens[("gts", i)] for i in ids}


_METEOR = None  # one METEOR Java process per Python process, see _meteor


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """METEOR through a Java process kept for the later calls: starting one loads its paraphrase table
    (about 6 s here), and one evaluation scores ScanQA's answers and Scan2Cap's captions."""
    global _METEOR
    from pycocoevalcap.meteor.meteor import Meteor

    if _METEOR is None or _METEOR.meteor_p.poll() is not None:
        _METEOR = Meteor()
    try:
        return float(_METEOR.compute_score(gts, res)[0])
    except Exception:
        _METEOR = None  # its lock may still be held and its output out of step: the next call starts afresh
        raise


def caption_scores(
    res: dict[str, list[str]], gts: dict[str, list[str]], scorers: tuple[str, ...] = CAPTION_SCORERS
) -> dict[str, float]:
    """pycocoevalcap's BLEU-4, METEOR, ROUGE-L and CIDEr (or the `scorers` asked for) of tokenised captions.
    A split that reports only CIDEr asks for it alone."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not res:
        return {}
    out = {}
    if "bleu4" in scorers:
        with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its internals
            out["bleu4"] = float(Bleu(4).compute_score(gts, res)[0][3])
    if "meteor" in scorers:
        out["meteor"] = _meteor(gts, res)
    if "rouge_l" in scorers:
        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    if "cider" in scorers:
        out["cider"] = float(Cider().compute_score(gts, res)[0])
    return out


def caption_metrics(
    predictions: dict[str, str], references: dict[str, list[str]], scorers: tuple[str, ...] = CAPTION_SCORERS
) -> dict[str, float]:
    """caption_scores of the ids present in both, PTB-tokenised."""
    return caption_scores(*ptb_tokenized(predictions, references), scorers)


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
        res, gts = ptb_tokenized(
            {r["sample_id"]: r["prediction"] for r in caps}, {r["sample_id"]: r["answers"] for r in caps}
        )
        metrics.update({f"scan2cap.{k}": v for k, v in caption_scores(res, gts).items()})
        metrics["scan2cap.n"] = len(caps)
        for cls in SIZE_CLASSES:
            mine = [r["sample_id"] for r in caps if size_class(r, sizes) == cls]
            if mine:  # CIDEr's document frequencies are the split's own, as if it were scored alone
                split = caption_scores({i: res[i] for i in mine}, {i: gts[i] for i in mine}, ("cider",))
                metrics[f"scan2cap.cider.{cls}"] = split["cider"]
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
