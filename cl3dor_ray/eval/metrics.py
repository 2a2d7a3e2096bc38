"""The metrics papers in this field report.

- ScanQA: EM and EM-refined (one answer contains the other) after `normalize_answer`; CIDEr,
  BLEU-4, METEOR and ROUGE-L through pycocoevalcap with its PTB tokenizer (Java).
- Scan2Cap: the same n-gram metrics of captions against all ScanRefer descriptions of the object.
- POPE-style existence: accuracy, precision, recall, F1 and yes-ratio, "yes" as the positive class.
"""

from __future__ import annotations

import contextlib
import io

from cl3dor_ray.console import captured
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
