"""`cl3dor evaluate` / jobs/evaluate.py: every validation sample through the deployed app, then metrics.

    EVAL/predictions.jsonl  one line per sample: id, task, question, prediction, answers
    EVAL/metrics.json       flat keys: scanqa.em, scanqa.em_refined, scanqa.cider, ..., scan2cap.cider,
                            sqa3d.em, sqa3d.em_refined, sqa3d.em.<what|is|how|can|which|other>,
                            existence.<random|popular|adversarial|all>.<accuracy|precision|recall|f1|yes_ratio>,
                            prior.scanqa.em.<type>, prior.sqa3d.em.<type> (text-only priors, eval/prior.py),
                            grounding.scene_swap.{em,drop,...} (the scene-swap probe, eval/probe.py),
                            grounding.pose.{follows,changed,n}[.<which|is>] (the pose probe, eval/probe.py),
                            preference.{accuracy,margin,n}[.<task>|.kind.<negative kind>] (eval/preference.py)
    EVAL/report.md          the same as tables; EM per question type beside the prior and the swapped-room EM

QA and SQA3D (with the agent's situation and pose) are answered by generation, captions by generation
for the object, existence by scoring "yes" against "no" (the higher mean log-probability wins).
Requests go out concurrently so the deployment can batch them.

QA and captions are also split by the size of the object they are about (the first of the
sample's object_ids): `scanqa.em.small_objects` / `.large_objects`, `scan2cap.cider.small_objects` /
`.large_objects`. Small means the longest side of its box is under SMALL_OBJECT_M (cups, books,
bottles, lamps, keyboards): the objects that are a handful of scan vertices before densification.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cl3dor_ray.console import bar, say
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.eval.metrics import compute_metrics, object_centers, object_sizes
from cl3dor_ray.eval.preference import preference_metrics, score_pairs
from cl3dor_ray.eval.prior import box_size_prior, language_prior
from cl3dor_ray.eval.probe import pose_metrics, pose_probes, swap_metrics, swap_partners
from cl3dor_ray.eval.report import write_report
from cl3dor_ray.serve.client import Cl3dorClient, Cl3dorRequestError
from cl3dor_ray.text.normalize import NORMALIZER_VERSION

QA_TOKENS, CAPTION_TOKENS = 16, 48


def _predict(client: Cl3dorClient, s: dict) -> dict:
    row = {
        "sample_id": s["sample_id"],
        "task": s["task"],
        "scene_id": s["scene_id"],
        "question": s["question"],
        "answers": s["answers"],
        "question_type": s["question_type"],
        "object_ids": s["object_ids"],
    }
    try:
        if s["task"] in ("qa", "sqa"):
            row["prediction"] = client.answer(
                s["question"],
                scene_id=s["scene_id"],
                max_new_tokens=QA_TOKENS,
                situation=s.get("situation") or None,
                pose=s.get("pose") or None,
            )["answer"]
        elif s["task"] == "caption":
            row["prediction"] = client.caption(s["scene_id"], s["object_ids"][0], max_new_tokens=CAPTION_TOKENS)[
                "caption"
            ]
        else:
            ranked = client.score(s["question"], ["yes", "no"], scene_id=s["scene_id"])["ranked"]
            row["prediction"] = ranked[0]["text"]
    except Cl3dorRequestError as e:
        row["prediction"], row["error"] = "", f"{e.status}: {e.body}"
    return row


def evaluate(
    client: Cl3dorClient,
    data_dir: str | Path,
    out_dir: str | Path,
    concurrency: int = 16,
    limit: int | None = None,
    probe: bool = True,
    pairs_from: str | Path | None = None,
) -> dict:
    """Every validation sample (or `limit` of them) through the client; with `probe`, every QA question
    again about a swapped room and every situated question again with the agent turned (eval/probe.py).
    The gold answers are scored against the hard negatives of `pairs_from` (another prepared folder of the
    same annotations, e.g. the ablation's reference, so that a model trained without negatives or with
    random ones is measured on the same hard pairs), else their own."""
    t0 = time.perf_counter()
    prepared, out = Prepared(data_dir), Path(out_dir)
    samples = _validation_samples(prepared, limit)
    qa = [s for s in samples if s["task"] == "qa"]
    hard = _hard_pairs(samples, pairs_from)
    scenes = sorted({s["scene_id"] for s in samples})
    partner = swap_partners(scenes) if probe and qa and len(scenes) > 1 else {}  # needs two rooms
    swap_asks = [{**s, "scene_id": partner[s["scene_id"]]} for s in qa] if partner else []
    turned = pose_probes(samples, object_centers(prepared)) if probe else []
    say(
        f"[evaluate] start: {len(samples)} validation samples"
        f"{f', {len(qa)} questions again about a swapped room' if partner else ''}"
        f"{f', {len(turned)} situated questions again with the agent turned around' if turned else ''}"
        f"{f', {len(hard)} gold answers scored against their hard negatives' if hard else ''}"
    )
    rows, swapped, turned_rows, scored = _ask_all(client, samples, swap_asks, [s for s, _ in turned], hard, concurrency)
    ok = [r for r in rows if "error" not in r]
    metrics = compute_metrics(ok, object_sizes(prepared))
    metrics.update(swap_metrics([r for r in ok if r["task"] == "qa"], [r for r in swapped if "error" not in r]))
    metrics.update(pose_metrics(ok, turned_rows, [want for _, want in turned]))
    metrics.update(preference_metrics([r for r in scored if r is not None]))
    if any(s["task"] in ("qa", "sqa") for s in samples):
        metrics.update(language_prior(data_dir))
    metrics.update(box_size_prior(data_dir))
    _write_predictions(out, rows, swapped, swap_asks, turned_rows, turned)
    failed = sum("error" in r for r in rows) + sum(r is None for r in scored)
    seconds = time.perf_counter() - t0
    metrics = {
        "normalizer_version": NORMALIZER_VERSION,
        "samples": len(rows),
        "failed": failed,
        "seconds": seconds,
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(metrics, out, seconds, len(rows), failed)
    say(f"[evaluate] done: {len(rows)} samples ({failed} failed) in {seconds:.0f} s -> {out}")
    return metrics


def _validation_samples(prepared: Prepared, limit: int | None) -> list[dict]:
    samples = prepared.samples("val").to_pylist()
    if limit is not None and limit < len(samples):  # spread over the sorted ids, so every task is represented
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    if not samples:
        raise ValueError(f"{prepared.folder / 'samples'} has no val samples to evaluate")
    return samples


def _hard_pairs(samples: list[dict], pairs_from: str | Path | None) -> list[dict]:
    """The samples with hard negatives to score: their own, or those of the same ids in `pairs_from`."""
    if pairs_from is not None:
        columns = ["sample_id", "negatives", "negative_kinds"]
        theirs = {r["sample_id"]: r for r in Prepared(pairs_from).samples("val", columns=columns).to_pylist()}
        samples = [{**s, **theirs[s["sample_id"]]} for s in samples if s["sample_id"] in theirs]
    return [s for s in samples if s["negatives"]]


def _ask_all(client, samples, swap_asks, turned, hard, concurrency: int):
    """All requests, `concurrency` in flight (so the deployment can batch them), under one progress bar."""
    progress = bar("[evaluate]", len(samples) + len(swap_asks) + len(turned) + len(hard), unit="request")

    def predict(s: dict) -> dict:
        row = _predict(client, s)
        progress.update(1)
        return row

    def pairs(s: dict) -> dict | None:
        try:
            return score_pairs(client, s)
        except Cl3dorRequestError:
            return None  # counted as failed: the pairs it would have given are missing from preference.n
        finally:
            progress.update(1)

    with progress, ThreadPoolExecutor(max_workers=concurrency) as pool:
        rows = list(pool.map(predict, samples))
        swapped = list(pool.map(predict, swap_asks))
        turned_rows = list(pool.map(predict, turned))
        scored = list(pool.map(pairs, hard))
    return rows, swapped, turned_rows, scored


def _write_predictions(out: Path, rows, swapped, swap_asks, turned_rows, turned) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "predictions.jsonl", rows)
    if turned_rows:
        expected = [{**r, "expected": want} for r, (_, want) in zip(turned_rows, turned)]
        _write_jsonl(out / "predictions_pose_turned.jsonl", expected)
    if swapped:
        asked = [{**r, "asked_about": s["scene_id"]} for r, s in zip(swapped, swap_asks)]
        _write_jsonl(out / "predictions_scene_swap.jsonl", asked)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
