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

import contextlib
import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from cl3dor_ray.console import bar, say
from cl3dor_ray.data.objects import SMALL_OBJECT_M
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.eval.metrics import caption_metrics, exact_match, exact_match_refined, pope_metrics
from cl3dor_ray.eval.preference import preference_metrics, preference_table, score_pairs
from cl3dor_ray.eval.prior import box_size_prior, language_prior
from cl3dor_ray.eval.probe import pose_metrics, pose_probes, swap_metrics, swap_partners
from cl3dor_ray.serve.client import Cl3dorClient, Cl3dorRequestError
from cl3dor_ray.text.normalize import NORMALIZER_VERSION

QA_TOKENS, CAPTION_TOKENS = 16, 48
SIZE_CLASSES = ("small_objects", "large_objects")


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


def grounded_table(metrics: dict) -> list[str]:
    """ScanQA EM per question type beside the text-only prior and the EM about a swapped room, then
    existence per POPE split: the figures that say whether the model reads the room."""
    types = sorted(
        k.removeprefix("scanqa.em.")
        for k in metrics
        if k.startswith("scanqa.em.") and k.count(".") == 2 and not k.endswith("_objects")
    )
    lines = ["| question type | n | EM | text-only prior | EM, room swapped |", "|---|---:|---:|---:|---:|"]
    for t in types + ["all"]:
        key = "scanqa.em" if t == "all" else f"scanqa.em.{t}"
        prior = metrics.get("prior.scanqa.em" if t == "all" else f"prior.scanqa.em.{t}")
        swap = metrics.get("grounding.scene_swap.em" if t == "all" else f"grounding.scene_swap.em.{t}")
        n = metrics.get("scanqa.n" if t == "all" else f"scanqa.n.{t}", "")
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {t} | {n} | {fmt(metrics.get(key))} | {fmt(prior)} | {fmt(swap)} |")
    if "grounding.scene_swap.drop" in metrics:
        lines += [
            "",
            f"Scene-swap drop (EM in the true room minus EM in the swapped room): "
            f"**{metrics['grounding.scene_swap.drop']:.3f}**; answers that changed with the room: "
            f"{metrics['grounding.scene_swap.changed']:.3f}.",
        ]
    elif "scanqa.em" in metrics:  # say why the column is empty rather than leave it blank
        lines += ["", "Scene-swap probe not run: it needs at least 2 validation rooms (or it was turned off)."]
    lines += sqa_table(metrics)
    if "grounding.pose.follows" in metrics:
        per = ", ".join(
            f"{k.rsplit('.', 1)[1]} {metrics[k]:.3f}"
            for k in sorted(metrics)
            if k.startswith("grounding.pose.follows.")
        )
        lines += [
            "",
            f"Pose probe (the agent turned around; the answer the geometry then gives): "
            f"**{metrics['grounding.pose.follows']:.3f}** of {metrics['grounding.pose.n']} follow the pose"
            f" ({per}); answers that changed where the expected one did: "
            f"{metrics.get('grounding.pose.changed', float('nan')):.3f}.",
        ]
    splits = sorted({k.split(".")[1] for k in metrics if k.startswith("existence.")})
    if splits:
        lines += [
            "",
            "| existence split | n | accuracy | precision | recall | F1 | yes-ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for sp in splits:
            m = {
                k: metrics.get(f"existence.{sp}.{k}", 0)
                for k in ("n", "accuracy", "precision", "recall", "f1", "yes_ratio")
            }
            lines.append(
                f"| {sp} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['f1']:.3f} | {m['yes_ratio']:.3f} |"
            )
    return lines


def sqa_table(metrics: dict) -> list[str]:
    """SQA3D EM and EM-refined by the question's first word, beside the text-only prior."""
    if "sqa3d.em" not in metrics:
        return []
    types = sorted(k.removeprefix("sqa3d.n.") for k in metrics if k.startswith("sqa3d.n."))
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["", "| SQA3D question | n | EM | EM-refined | text-only prior |", "|:---|---:|---:|---:|---:|"]
    for t in types + ["all"]:
        suffix = "" if t == "all" else f".{t}"
        lines.append(
            f"| {t} | {metrics.get(f'sqa3d.n{suffix}', '')} | {fmt(metrics.get(f'sqa3d.em{suffix}'))} | "
            f"{fmt(metrics.get(f'sqa3d.em_refined{suffix}'))} | {fmt(metrics.get(f'prior.sqa3d.em{suffix}'))} |"
        )
    return lines


def _report(metrics: dict, out: Path, seconds: float, n: int, failed: int) -> None:
    lines = [
        "# cl3dor evaluation",
        "",
        f"{n} validation samples in {seconds:.1f} s ({failed} failed); answer normaliser `{NORMALIZER_VERSION}`.",
        "",
        "## Does it read the room?",
        "",
        *grounded_table(metrics),
        "",
        "## Does it prefer the gold answer to its hard negatives?",
        "",
        "What the odds ratio optimises, on the validation rooms: the share of (gold, hard negative) pairs whose "
        "gold answer has the higher log-odds, and the mean log-odds difference.",
        "",
        *preference_table(metrics),
        "",
        "## All metrics",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in metrics.items()
        if not isinstance(v, str)
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def deployment(
    model_dir: str | Path, data_dir: str | Path, serve_cfg, name: str = "cl3dor-eval", keep_serve: bool = False
) -> Iterator[Cl3dorClient]:
    """A model folder deployed as the Serve app `name` on the connected Ray, reached through its handle
    (no HTTP): what `cl3dor evaluate --model`, the demo and the ablation evaluate through.

    On exit the app is deleted, and Serve is shut down once no app is left, so a cluster's other apps
    keep running. `keep_serve` leaves Serve up for a caller that deploys several apps at once.
    """
    from ray import serve

    from cl3dor_ray.serve.app import build_app

    handle = serve.run(build_app(str(model_dir), str(data_dir), serve_cfg), name=name, route_prefix=None)
    try:
        yield Cl3dorClient.over_handle(handle=handle)
    finally:
        serve.delete(name)
        if not keep_serve and not serve.status().applications:
            serve.shutdown()


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
    again about a swapped room (eval/probe.py). The gold answers are scored against the hard negatives of
    `pairs_from` (another prepared folder of the same annotations, e.g. the ablation's reference, so that
    a model trained without negatives or with random ones is measured on the same hard pairs), else their own."""
    t0 = time.perf_counter()
    prepared, out = Prepared(data_dir), Path(out_dir)
    samples = prepared.samples("val").to_pylist()
    if limit is not None and limit < len(samples):  # spread over the sorted ids, so every task is represented
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    if not samples:
        raise ValueError(f"{prepared.folder / 'samples'} has no val samples to evaluate")
    qa = [s for s in samples if s["task"] == "qa"]
    if pairs_from is not None:
        theirs = {
            r["sample_id"]: r
            for r in Prepared(pairs_from)
            .samples("val", columns=["sample_id", "negatives", "negative_kinds"])
            .to_pylist()
        }
        hard = [{**s, **theirs[s["sample_id"]]} for s in samples if s["sample_id"] in theirs]
    else:
        hard = samples
    hard = [s for s in hard if s["negatives"]]
    scenes = {s["scene_id"] for s in samples}
    partner = swap_partners(sorted(scenes)) if probe and qa and len(scenes) > 1 else {}  # needs two rooms
    turned = pose_probes(samples, object_centers(prepared)) if probe else []
    say(
        f"[evaluate] start: {len(samples)} validation samples"
        f"{f', {len(qa)} questions again about a swapped room' if partner else ''}"
        f"{f', {len(turned)} situated questions again with the agent turned around' if turned else ''}"
        f"{f', {len(hard)} gold answers scored against their hard negatives' if hard else ''}"
    )
    progress = bar("[evaluate]", len(samples) + (len(qa) if partner else 0) + len(turned) + len(hard), unit="request")

    def predict(s: dict) -> dict:
        row = _predict(client, s)
        progress.update(1)
        return row

    def pairs(s: dict) -> dict | None:
        try:
            return score_pairs(client, s)
        except Cl3dorRequestError:
            return None  # counted below: the pairs it would have given are missing from preference.n
        finally:
            progress.update(1)

    with progress, ThreadPoolExecutor(max_workers=concurrency) as pool:
        rows = list(pool.map(predict, samples))
        swapped = list(pool.map(lambda s: predict({**s, "scene_id": partner[s["scene_id"]]}), qa) if partner else [])
        turned_rows = list(pool.map(predict, [s for s, _ in turned]))
        scored = list(pool.map(pairs, hard))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    metrics = compute_metrics([r for r in rows if "error" not in r], object_sizes(prepared))
    true_qa = [r for r in rows if r["task"] == "qa" and "error" not in r]
    metrics.update(swap_metrics(true_qa, [r for r in swapped if "error" not in r]))
    metrics.update(pose_metrics([r for r in rows if "error" not in r], turned_rows, [want for _, want in turned]))
    metrics.update(preference_metrics([r for r in scored if r is not None]))
    if any(s["task"] in ("qa", "sqa") for s in samples):
        metrics.update(language_prior(data_dir))
    metrics.update(box_size_prior(data_dir))
    if turned_rows:
        with open(out / "predictions_pose_turned.jsonl", "w", encoding="utf-8") as fh:
            for r, (_, want) in zip(turned_rows, turned):
                fh.write(json.dumps({**r, "expected": want}, ensure_ascii=False) + "\n")
    if swapped:
        with open(out / "predictions_scene_swap.jsonl", "w", encoding="utf-8") as fh:
            for r, s in zip(swapped, qa):
                fh.write(json.dumps({**r, "asked_about": partner[s["scene_id"]]}, ensure_ascii=False) + "\n")
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
    _report(metrics, out, seconds, len(rows), failed)
    say(f"[evaluate] done: {len(rows)} samples ({failed} failed) in {seconds:.0f} s -> {out}")
    return metrics
