"""`cl3dor prepare` / jobs/prepare_data.py: scans + annotations -> training-ready Parquet.

    RAW/scans/<scene_id>/...   RAW/annotations/*.json (ScanQA, ScanRefer, existence, SQA3D)
        | Ray Data map_batches, tasks:  densify_scans          -> StagedParquetSink
        | Ray Data map_batches, tasks (actors for model-based generators): BuildSamples -> StagedParquetSink
    OUT/objects/        one row per object       (schema.OBJECT_SCHEMA)
    OUT/samples/        one row per sample       (schema.SAMPLE_SCHEMA)
    OUT/errors.jsonl    one line per rejected scan or annotation: {scene_id, file, reason}
    OUT/manifest.json   counts, config, versions; written last, so its presence means complete

Outputs are written to OUT/.staging and moved into place at the end: re-running into the same
OUT replaces rather than duplicates, and an interrupted run leaves the previous result intact
and is simply re-run. On a multi-node cluster OUT must be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cl3dor_ray.config import PrepareConfig
from cl3dor_ray.console import captured
from cl3dor_ray.data.objects import densify_scans
from cl3dor_ray.data.samples import BuildSamples, build_samples
from cl3dor_ray.data.sink import StagedParquetSink
from cl3dor_ray.scenes.pose import align_pose
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, read_alignment, scan_files
from cl3dor_ray.text.annotations import Annotation, AnnotationError, load_annotations
from cl3dor_ray.text.generators import GENERATORS
from cl3dor_ray.text.kinds import answer_kind
from cl3dor_ray.text.llm_negatives import LLM_KIND
from cl3dor_ray.text.normalize import NORMALIZER_VERSION
from cl3dor_ray.text.sqa3d import load_sqa3d

OUTPUTS = ("objects", "samples", "errors.jsonl", "manifest.json")


class PrepareError(RuntimeError):
    """Nothing could be prepared (no scans, or no scan gave an object), or the config is unusable."""


@dataclass
class PrepareSummary:
    scenes: int = 0
    scenes_rejected: int = 0
    objects: int = 0
    samples: dict[str, int] = field(default_factory=dict)  # "train/qa" -> count
    annotations_rejected: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # "objects", "samples"
    # generator, kinds (count per kind), llm_share (negatives the LLM wrote), fallback_share, samples_per_s
    negatives: dict = field(default_factory=dict)

    def line(self, out) -> str:
        n_samples = sum(self.samples.values())
        llm = (
            f"; negatives by the LLM {self.negatives['llm_share']:.0%}, rule fallbacks "
            f"{self.negatives['fallback_share']:.0%}, {self.negatives['samples_per_s']:.1f} samples/s"
            if self.negatives.get("generator") == "llm"
            else ""
        )
        tasks = self.negatives.get("by_task", {}).values()
        n, negs = sum(t["samples"] for t in tasks), sum(t["samples"] * t["negatives_per_sample"] for t in tasks)
        same = sum(t["samples"] * t["negatives_per_sample"] * t["of_gold_kind"] for t in tasks)
        hard = f"; {negs / n:.1f} negatives per sample, {same / max(negs, 1):.0%} of the gold's kind" if n else ""
        return (
            f"prepared {self.scenes} scenes ({self.scenes_rejected} rejected), {self.objects} objects, "
            f"{n_samples} samples ({self.annotations_rejected} annotations rejected){hard}{llm} -> {out} "
            f"in {self.seconds:.1f} s"
        )


@dataclass
class _Objects:
    inventory: dict[str, dict[int, list]]  # scene -> object id -> [label, center], structure included
    errors: list[AnnotationError]
    count: int  # objects written (structure excluded)
    seconds: float


@contextlib.contextmanager
def _cpu_limit(cpus: int):
    """`--workers W`: Ray Data may use W CPUs in all. A global limit rather than a per-operator
    pool size, so that each map stays fused with its Parquet write in one task."""
    from ray.data import DataContext, ExecutionResources

    options = DataContext.get_current().execution_options
    previous = options.resource_limits
    options.resource_limits = ExecutionResources(cpu=cpus)
    try:
        yield
    finally:
        options.resource_limits = previous


def prepare(raw: str | Path, out: str | Path, cfg: PrepareConfig) -> PrepareSummary:
    """Run the preparation on the Ray this process is connected to (see runtime.ray_session)."""
    if cfg.negative_generator not in GENERATORS:
        raise PrepareError(
            f"unknown negative generator {cfg.negative_generator!r}; expected one of {sorted(GENERATORS)}"
        )
    if cfg.negative_generator == "llm" and cfg.negatives:
        llm = Path(cfg.negative_llm_path).resolve()  # the actors may not share this process's directory
        if not (llm / "config.json").is_file():
            raise PrepareError(
                f"prepare.negative_llm_path {llm} is not a Hugging Face model folder (no config.json); "
                f"`make smollm2` builds the default SmolLM2 one"
            )
        cfg = dataclasses.replace(cfg, negative_llm_path=str(llm))
    t0 = time.perf_counter()
    raw, out = Path(raw).resolve(), Path(out)
    scan_dirs = _scan_dirs(raw / "scans")
    annotations, ann_errors, files_read = load_annotations(raw / "annotations")
    situated, sqa_errors, sqa_files = load_sqa3d(raw / "annotations")
    annotations, ann_errors, files_read = annotations + situated, ann_errors + sqa_errors, files_read + sqa_files
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "objects").mkdir(parents=True)
    (staging / "samples").mkdir()

    with _cpu_limit(cfg.workers):
        objects = _prepare_objects(scan_dirs, raw, staging / "objects", cfg)
        by_scene, routing_errors = _route_annotations(annotations, objects.inventory, objects.errors, scan_dirs)
        samples, sample_errors, t_samples, negatives = _prepare_samples(
            by_scene, objects.inventory, staging / "samples", cfg
        )

    errors = objects.errors + ann_errors + routing_errors + sample_errors
    summary = PrepareSummary(
        scenes=len(objects.inventory),
        scenes_rejected=len({e.scene_id for e in objects.errors}),
        objects=objects.count,
        samples=samples,
        annotations_rejected=len(ann_errors) + len(routing_errors) + len(sample_errors),
        seconds=time.perf_counter() - t0,
        stage_seconds={"objects": objects.seconds, "samples": t_samples},
        negatives=negatives,
    )
    with open(staging / "errors.jsonl", "w", encoding="utf-8") as fh:
        for e in errors:
            fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    manifest = {
        "summary": asdict(summary),
        "config": asdict(cfg),
        "raw": str(raw),
        "annotation_files": files_read,
        "errors": len(errors),
        "versions": _versions(),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _publish(staging, out)
    return summary


def _scan_dirs(scans_root: Path) -> list[Path]:
    if not scans_root.is_dir():
        raise PrepareError(f"{scans_root} does not exist; expected RAW/scans/<scene_id>/ (ScanNet layout)")
    scan_dirs = sorted(p for p in scans_root.iterdir() if p.is_dir())
    if not scan_dirs:
        raise PrepareError(f"{scans_root} holds no scan folders")
    return scan_dirs


def _blocks(n_items: int, workers: int) -> int:
    # A few blocks per worker: enough to balance the load, few enough that Ray Data's per-task
    # overhead stays small next to the work (one small scan is only tens of milliseconds).
    return min(n_items, 4 * workers)


def _placement(cfg: PrepareConfig) -> dict:
    """Pin preparation to the nodes that offer cfg.node_resource (the CPU workers of cluster.yaml)."""
    return {"resources": {cfg.node_resource: 1}} if cfg.node_resource else {}


def _prepare_objects(scan_dirs: list[Path], raw: Path, path: Path, cfg: PrepareConfig) -> _Objects:
    import ray

    t = time.perf_counter()
    sink = StagedParquetSink(
        path, ["scene_id", "object_id", "label", "center", "error", "error_file"], drop_labels=STRUCTURE_LABELS
    )
    ray.data.from_items(
        [{"scene_id": p.name, "scan_dir": str(p)} for p in scan_dirs],
        override_num_blocks=_blocks(len(scan_dirs), cfg.workers),
    ).map_batches(
        densify_scans,
        batch_size=1,
        batch_format="pyarrow",
        **_placement(cfg),
        fn_kwargs={
            "points_per_object": cfg.points_per_object,
            "sparse": cfg.sparse,
            "seed": cfg.seed,
            "raw_root": str(raw),
        },
    ).write_datasink(sink)

    errors = [AnnotationError(r["scene_id"], r["error_file"], r["error"]) for r in sink.index if r["error"]]
    rejected = {e.scene_id for e in errors}
    inventory: dict[str, dict[int, list]] = {p.name: {} for p in scan_dirs if p.name not in rejected}
    for r in sink.index:
        if not r["error"]:
            inventory[r["scene_id"]][r["object_id"]] = [r["label"], list(r["center"])]
    if not any(inventory.values()):
        first = f"; first: {errors[0].file}: {errors[0].reason}" if errors else ""
        raise PrepareError(f"no scan under {raw / 'scans'} gave any object{first}")
    count = sum(1 for r in sink.index if not r["error"] and r["label"] not in STRUCTURE_LABELS)
    return _Objects(inventory, errors, count, time.perf_counter() - t)


def _route_annotations(
    annotations: list[Annotation], inventory: dict, scan_errors: list[AnnotationError], scan_dirs: list[Path]
):
    """Group annotations by scene; reject those whose scene is missing or was rejected, and duplicates.
    SQA3D poses are moved into the prepared objects' axis-aligned frame here, with the scan's
    axisAlignment (a few numbers per scene, read on the driver)."""
    rejected = {e.scene_id for e in scan_errors}
    folders = {p.name: p for p in scan_dirs}
    alignments: dict[str, np.ndarray] = {}
    by_scene: dict[str, list[dict]] = {}
    errors: list[AnnotationError] = []
    seen: set[str] = set()
    for ann in annotations:
        if ann.scene_id not in inventory:
            why = "its scan was rejected" if ann.scene_id in rejected else f"no scan {ann.scene_id} in scans/"
            errors.append(AnnotationError(ann.scene_id, ann.source, f"{ann.sample_id}: {why}"))
        elif ann.sample_id in seen:
            errors.append(AnnotationError(ann.scene_id, ann.source, f"duplicate sample id {ann.sample_id}"))
        else:
            seen.add(ann.sample_id)
            if ann.pose:
                if ann.scene_id not in alignments:
                    meta = scan_files(folders[ann.scene_id], ann.scene_id)["meta"]
                    alignments[ann.scene_id] = read_alignment(meta)[0]
                ann.pose = align_pose(ann.pose, alignments[ann.scene_id])
            by_scene.setdefault(ann.scene_id, []).append(ann.to_dict())
    return by_scene, errors


def _prepare_samples(by_scene: dict[str, list[dict]], inventory: dict, path: Path, cfg: PrepareConfig):
    import ray
    from ray.data import ActorPoolStrategy

    t = time.perf_counter()
    if not by_scene:
        return {}, [], 0.0, {}
    labels = sorted({obj[0] for objs in inventory.values() for obj in objs.values()} - set(STRUCTURE_LABELS))
    answers = sorted(
        {a for anns in by_scene.values() for ann in anns if ann["task"] != "caption" for a in ann["answers"]}
    )
    # only the random control draws from other captions; an actor's constructor arguments stay small
    captions = (
        sorted({a for anns in by_scene.values() for ann in anns if ann["task"] == "caption" for a in ann["answers"]})
        if cfg.negative_generator == "random"
        else []
    )
    kwargs = {
        "generator": cfg.negative_generator,
        "labels": labels,
        "answers": answers,
        "captions": captions,
        "negatives": cfg.negatives,
        "seed": cfg.seed,
    }
    if cfg.negative_generator == "llm":
        kwargs["generator_options"] = {"llm_path": cfg.negative_llm_path}
    if GENERATORS[cfg.negative_generator].needs_actor:
        udf = {
            "fn": BuildSamples,
            "compute": ActorPoolStrategy(size=cfg.workers),
            "fn_constructor_kwargs": kwargs,
            **({"num_gpus": cfg.negative_llm_gpus} if cfg.negative_llm_gpus else {}),
        }
    else:
        udf = {"fn": build_samples, "fn_kwargs": kwargs}
    items = [
        {"scene_id": s, "annotations": json.dumps(anns), "objects": json.dumps(inventory[s])}
        for s, anns in sorted(by_scene.items())
    ]
    sink = StagedParquetSink(
        path,
        ["scene_id", "split", "task", "answers", "answer_kind", "negatives", "negative_kinds", "error", "error_file"],
    )
    # an actor pool makes Ray's core worker warn on stderr about its constructor arguments: to the log file
    with captured() if "compute" in udf else contextlib.nullcontext():
        ray.data.from_items(items, override_num_blocks=_blocks(len(items), cfg.workers)).map_batches(
            batch_size=1, batch_format="pyarrow", **_placement(cfg), **udf
        ).write_datasink(sink)

    errors = [AnnotationError(r["scene_id"], r["error_file"], r["error"]) for r in sink.index if r["error"]]
    accepted = [r for r in sink.index if not r["error"]]
    counts = Counter(f"{r['split']}/{r['task']}" for r in accepted)
    seconds = time.perf_counter() - t
    stats = _negative_stats(accepted, cfg.negative_generator, seconds, labels) if cfg.negatives else {}
    return dict(sorted(counts.items())), errors, seconds, stats


def _negative_stats(rows: list[dict], generator: str, seconds: float, labels: list[str]) -> dict:
    """What wrote the negatives and how hard they are: per strategy; per task and per gold answer kind the
    share of negatives of the gold's kind (text/kinds.py), negatives per sample and samples with none;
    the LLM's share and the rules' fallbacks (llm only); samples/s."""
    kinds = Counter(k for r in rows for k in r["negative_kinds"])
    total = max(sum(kinds.values()), 1)
    stats = {
        "generator": generator,
        "kinds": dict(sorted(kinds.items())),
        "samples_per_s": len(rows) / max(seconds, 1e-9),
    }
    for group, key in (("by_task", "task"), ("by_answer_kind", "answer_kind")):
        tally: dict[str, list[int]] = {}  # samples, negatives, of the gold's kind, samples without any
        for r in rows:
            t = tally.setdefault(r[key], [0, 0, 0, 0])
            t[0], t[1], t[3] = t[0] + 1, t[1] + len(r["negatives"]), t[3] + (not r["negatives"])
            t[2] += sum(answer_kind(n, labels, r["task"]) == r["answer_kind"] for n in r["negatives"])
        stats[group] = {
            name: {
                "samples": n,
                "negatives_per_sample": negs / n,
                "of_gold_kind": same / max(negs, 1),
                "without_negatives": none,
            }
            for name, (n, negs, same, none) in sorted(tally.items())
        }
    if generator == "llm":
        stats["llm_share"] = kinds.get(LLM_KIND, 0) / total
        stats["fallback_share"] = 1 - stats["llm_share"] if kinds else 0.0
        # per task: the rules alone answer yes/no, counts and captions (text/llm_negatives.py)
        by_task = {}
        for r in rows:
            mine = by_task.setdefault(r["task"], Counter())
            mine.update("llm" if k == LLM_KIND else "rule" for k in r["negative_kinds"])
        stats["llm_share_by_task"] = {t: c["llm"] / max(sum(c.values()), 1) for t, c in sorted(by_task.items())}
    return stats


def _publish(staging: Path, out: Path) -> None:
    """Swap the staged outputs into place. The manifest goes first out and last in, so a reader
    never sees a half result as complete."""
    (out / "manifest.json").unlink(missing_ok=True)
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(staging / name, target)
    staging.rmdir()


def _versions() -> dict[str, str]:
    import ray

    from cl3dor_ray import __version__

    return {
        "cl3dor_ray": __version__,
        "ray": ray.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "answer_normalizer": NORMALIZER_VERSION,
    }
