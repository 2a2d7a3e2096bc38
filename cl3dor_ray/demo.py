"""`cl3dor demo` / `make demo`: every stage, in order, on synthetic rooms and an embedded Ray.

runs/demo/raw/              synthetic scans + annotations   (cl3dor synth)
runs/demo/prepared/         Parquet objects and samples     (cl3dor prepare)
runs/demo/prepared_sparse/  the same objects as LEO's scan vertices, to test the encoder on
runs/demo/run/              the training stages             (cl3dor train)
runs/demo/eval/             metrics through Ray Serve       (cl3dor evaluate)
runs/demo/report.md         what each stage produced, with pictures
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from cl3dor_ray.config import Config
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.runtime import prefer_loopback


def _render_first_scene(cfg: Config, raw: Path, out: Path) -> tuple[Path, Path]:
    from cl3dor_ray.scenes.densify import densify_objects, sparse_objects
    from cl3dor_ray.scenes.render import render_sparse_vs_dense
    from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, read_scan

    scene = read_scan(sorted((raw / "scans").iterdir())[0])
    args = (scene, cfg.prepare.points_per_object, cfg.prepare.seed, STRUCTURE_LABELS)
    dense, sparse = densify_objects(*args), sparse_objects(*args)
    scene_png = render_sparse_vs_dense(sparse, dense, out / "scene_sparse_vs_dense.png")
    smallest = int(np.argmin([c.num_source_vertices for c in dense]))
    object_png = render_sparse_vs_dense([sparse[smallest]], [dense[smallest]], out / "object_sparse_vs_dense.png")
    return scene_png, object_png


def _object_table(prepared: Path, points: int) -> list[str]:
    objects = Prepared(prepared).object_table(["label", "num_source_vertices"]).to_pydict()
    by_label: dict[str, list[int]] = {}
    for label, n in zip(objects["label"], objects["num_source_vertices"]):
        by_label.setdefault(label, []).append(n)
    rows = ["| category | objects | scan vertices (median) | points per object |", "|---|---:|---:|---:|"]
    for label in sorted(by_label, key=lambda k: np.median(by_label[k])):
        rows.append(f"| {label} | {len(by_label[label])} | {int(np.median(by_label[label]))} | {points} |")
    return rows


def _pick_examples(prepared: Path, n: int = 6) -> list[dict]:
    """Training samples, one per (task, strategy of the first negative), for variety; the tasks in turn,
    so each is shown."""
    by_task: dict[str, list[dict]] = {}
    seen = set()
    for s in Prepared(prepared).samples("train").to_pylist():
        key = (s["task"], s["negative_kinds"][0] if s["negative_kinds"] else "")
        if key not in seen:
            seen.add(key)
            by_task.setdefault(s["task"], []).append(s)
    turns = [
        group[i]
        for i in range(max(map(len, by_task.values()), default=0))
        for _, group in sorted(by_task.items())
        if i < len(group)
    ]
    return turns[:n]


def _examples_table(examples: list[dict], answers: list[str]) -> list[str]:
    rows = [
        "| task | question | gold answer | model's answer | hard negatives it trained against (kind) |",
        "|---|---|---|---|---|",
    ]
    for s, answer in zip(examples, answers):
        negs = "; ".join(f"{t} ({k})" for t, k in zip(s["negatives"], s["negative_kinds"]))
        question = f"{s['situation']} {s['question']}" if s.get("situation") else s["question"]
        rows.append(f"| {s['task']} | {question} | {s['answers'][0]} | {answer} | {negs} |")
    return rows


def _encoder_table(model_dir: Path, prepared: Path, sparse: Path) -> list[str]:
    """The pretrained point encoder's validation accuracy on dense and on sparse clouds of the same objects."""
    from cl3dor_ray.model.io import load_model
    from cl3dor_ray.train.pretrain import classification_metrics, object_rows

    model = load_model(model_dir)
    labels, colors = model.cfg.object_labels, model.cfg.object_colors
    figures = {
        name: classification_metrics(model, object_rows(folder, "val", labels, colors))
        for name, folder in (("dense", prepared), ("sparse", sparse))
    }
    keys = ["accuracy", "accuracy.small_objects", "accuracy.large_objects", "color_accuracy"]
    keys += sorted(k for k in figures["dense"] if k.startswith("accuracy.category."))
    rows = ["| validation objects | dense (trained on) | sparse (LEO's scan vertices) |", "|---|---:|---:|"]
    for k in keys:
        rows.append(
            f"| {k.removeprefix('accuracy.').replace('category.', '')} | "
            f"{figures['dense'].get(k, float('nan')):.3f} | {figures['sparse'].get(k, float('nan')):.3f} |"
        )
    rows.append(
        f"| majority class | {figures['dense']['majority_baseline']:.3f} | "
        f"{figures['sparse']['majority_baseline']:.3f} |"
    )
    return rows


def _grounding_table(run: Path) -> list[str]:
    path = run / "stages" / "grounding" / "metrics.json"
    if not path.is_file():
        return []
    m = json.loads(path.read_text())
    kinds = sorted(k.removesuffix(".n") for k in m if k.endswith(".n") and k != "all.n") + ["all"]
    rows = ["| question type | n | precision | recall | exact set | subject first |", "|---|---:|---:|---:|---:|---:|"]
    for kind in kinds:
        first = f"{m[f'{kind}.first']:.3f}" if f"{kind}.first" in m else ""
        rows.append(
            f"| {kind} | {m[f'{kind}.n']} | {m[f'{kind}.precision']:.3f} | {m[f'{kind}.recall']:.3f} | "
            f"{m[f'{kind}.exact']:.3f} | {first} |"
        )
    return rows


def _ask(client, s: dict) -> str:
    if s["task"] == "caption":
        return client.caption(s["scene_id"], s["object_ids"][0])["caption"]
    if s["task"] == "existence":
        return client.score(s["question"], ["yes", "no"], scene_id=s["scene_id"])["ranked"][0]["text"]
    return client.answer(
        s["question"], scene_id=s["scene_id"], situation=s.get("situation") or None, pose=s.get("pose") or None
    )["answer"]


def run_demo(cfg: Config, out: Path) -> int:
    prefer_loopback(None)
    from cl3dor_ray.console import say
    from cl3dor_ray.data.prepare import prepare
    from cl3dor_ray.eval.evaluate import evaluate
    from cl3dor_ray.eval.preference import preference_table
    from cl3dor_ray.eval.report import grounded_table
    from cl3dor_ray.runtime import ray_session
    from cl3dor_ray.scenes.synth_dataset import synthesize
    from cl3dor_ray.serve.deployment import deployment
    from cl3dor_ray.train.trainer import train

    t0 = time.perf_counter()
    raw, prepared = out / "raw", out / "prepared"
    synthesize(raw, cfg.synth.scenes, cfg.synth.seed)
    t_synth = time.perf_counter() - t0
    say(f"[synth] {cfg.synth.scenes} rooms in {t_synth:.1f} s -> {raw}")

    sparse = out / "prepared_sparse"
    with ray_session(None, num_cpus=max(cfg.prepare.workers, cfg.train.workers), log_dir=out / "logs"):
        say(f"[prepare] start: {cfg.synth.scenes} rooms on {cfg.prepare.workers} Ray Data workers")
        summary = prepare(raw, prepared, cfg.prepare)
        # the same objects as scan vertices (LEO), only to test the pretrained encoder on both
        prepare(raw, sparse, dataclasses.replace(cfg.prepare, sparse=not cfg.prepare.sparse, negatives=0))
        say(f"[prepare] done: {summary.line(prepared)}")
        # a fresh run, as the rooms and their preparation are: an earlier demo's finished stages were
        # trained on the data and code of their day, and `train` would skip them
        shutil.rmtree(out / "run", ignore_errors=True)
        trained = train(cfg, prepared, out / "run")
        say(
            f"[train] {', '.join(trained.stages_run) or 'nothing new'} in {trained.seconds:.0f} s -> "
            f"{trained.model_dir}"
        )
        # keep_serve: this embedded Ray ends right after, and Serve with it
        with deployment(trained.model_dir, prepared, cfg.serve, "cl3dor-demo", keep_serve=True) as client:
            metrics = evaluate(client, prepared, out / "eval")
            examples = _pick_examples(prepared)
            examples_table = _examples_table(examples, [_ask(client, s) for s in examples])
    grounded = grounded_table(metrics)
    dense_dir, sparse_dir = (sparse, prepared) if cfg.prepare.sparse else (prepared, sparse)
    encoder = _encoder_table(trained.model_dir, dense_dir, sparse_dir)
    table = ["| metric | value |", "|---|---:|"] + [
        f"| {k} | {metrics[k]:.3f} |"
        for k in (
            "scanqa.em",
            "scanqa.em_refined",
            "scanqa.cider",
            "scanqa.bleu4",
            "scanqa.meteor",
            "scanqa.rouge_l",
            "sqa3d.em",
            "sqa3d.em_refined",
            "scan2cap.cider",
            "scan2cap.bleu4",
            "existence.random.f1",
            "existence.popular.f1",
            "existence.adversarial.f1",
        )
        if k in metrics
    ]

    scene_png, object_png = _render_first_scene(cfg, raw, out)
    objects = _object_table(prepared, cfg.prepare.points_per_object)
    report = [
        "# cl3dor demo",
        "",
        f"- synth: {cfg.synth.scenes} ScanNet-format rooms in {t_synth:.1f} s",
        f"- prepare ({'sparse' if cfg.prepare.sparse else 'dense'}, P = {cfg.prepare.points_per_object}, "
        f"K = {cfg.prepare.negatives}, {cfg.prepare.workers} Ray Data workers): {summary.line(prepared.name)}",
        "",
        "## Objects",
        "",
        *objects,
        "",
        f"![scene, sparse beside dense]({scene_png.name})",
        "",
        f"![smallest object]({object_png.name})",
        "",
        "## Training samples, the model's answers, and the hard negatives",
        "",
        *examples_table,
        "",
        "## Training",
        "",
        f"{', '.join(trained.stages_run) or 'No stages (all finished before)'} on "
        f"{cfg.train.workers} Ray Train workers with DeepSpeed ZeRO-{cfg.train.zero_stage}: {trained.seconds:.0f} s.",
        "",
        "![training curves](run/curves.png)",
        "",
        "## Does it read the room? (validation rooms, through Ray Serve)",
        "",
        "Exact match per question type beside the text-only prior (the most frequent training answer of the "
        "same question text, else of its template) and beside the EM when the same question is asked about "
        "another room:",
        "",
        *grounded,
        "",
        "## Does it prefer the gold answer to its hard negatives? (validation rooms)",
        "",
        "What the odds ratio optimises, measured on rooms the model never saw: the share of (gold, hard negative) "
        "pairs whose gold answer has the higher log-odds, through the deployment's /v1/score.",
        "",
        *preference_table(metrics),
        "",
        "## The pretrained point encoder (validation objects)",
        "",
        *encoder,
        "",
        "## The grounding head (which objects each validation question is about)",
        "",
        *_grounding_table(out / "run"),
        "",
        "## Evaluation (validation split, through Ray Serve)",
        "",
        *table,
        "",
    ]
    (out / "report.md").write_text("\n".join(report))
    say("\n".join(grounded))
    if "preference.accuracy" in metrics:
        say(
            f"hard pairs ranked right on the validation rooms: {metrics['preference.accuracy']:.3f} of "
            f"{metrics['preference.n']} (log-odds margin {metrics['preference.margin']:+.3f})"
        )
    say(f"report: {out / 'report.md'}  ({time.perf_counter() - t0:.1f} s)")
    return 0
