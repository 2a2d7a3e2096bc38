"""The two stages before the LM stages, each one Ray Train run with DeepSpeed, like them.

    encoder_pretraining  the point encoder learns to classify the prepared objects: category, and
                         colour where the object's captions name one. LEO freezes a PointNet++
                         pretrained on ScanNet object classification; no package ships such weights,
                         so the run makes its own. Trained end to end through the LM instead, the
                         encoder collapsed (features of a nightstand, a bottle and a book at cosine
                         0.996); trained here it separates them (issue 12).
    grounding            the grounding head learns which objects a question is about, from the
                         annotations' object_ids and the object descriptions read as referring
                         expressions; the point encoder is frozen and each worker computes every
                         object's feature once.

Both export the whole model folder, like every stage, and write their validation figures to
RUN/stages/<stage>/metrics.json.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from cl3dor_ray.config import TrainConfig
from cl3dor_ray.data.clouds import cloud_array
from cl3dor_ray.data.objects import SMALL_OBJECT_M
from cl3dor_ray.data.prepared import Prepared, column_arrays
from cl3dor_ray.model.batch import SceneBatch, SceneCollator
from cl3dor_ray.model.grounding import IGNORE, classification_loss, grounding_loss, named_anchors, with_none
from cl3dor_ray.model.io import load_model
from cl3dor_ray.model.scene3dlm import PARTS
from cl3dor_ray.text.vocab import caption_color
from cl3dor_ray.train import worker

GROUNDING_TASKS = ("qa", "existence", "sqa")  # SQA3D where its annotations name objects (ours do)
REFER = "refer"  # a description read as a referring expression (ScanRefer's own task)


# ---------------------------------------------------------------------- data
def object_colors(data_dir: str | Path) -> dict[tuple[str, int], str]:
    """(scene_id, object_id) -> the colour its captions name, for objects whose captions name one."""
    t = Prepared(data_dir).samples(tasks=["caption"], columns=["scene_id", "object_ids", "answers"]).to_pydict()
    out = {}
    for scene, ids, answers in zip(t["scene_id"], t["object_ids"], t["answers"]):
        if (color := caption_color(answers)) is not None:
            out[(scene, ids[0])] = color
    return out


def object_vocabulary(data_dir: str | Path) -> tuple[list[str], list[str]]:
    """The categories of the training rooms' objects and the colours their captions name, sorted."""
    prepared = Prepared(data_dir)
    splits = prepared.scene_splits()
    t = prepared.object_table(["scene_id", "label"]).to_pydict()
    labels = sorted({lab for s, lab in zip(t["scene_id"], t["label"]) if splits.get(s) == "train"})
    colors = sorted({c for (s, _), c in object_colors(data_dir).items() if splits.get(s) == "train"})
    return labels, colors


def object_rows(data_dir: str | Path, split: str, labels: list[str], colors: list[str]) -> list[dict]:
    """Object rows of one split with their targets: label_id, color_id (IGNORE where unknown), small."""
    named = object_colors(data_dir)
    rows = []
    for r in Prepared(data_dir).object_rows(split):
        color = named.get((r["scene_id"], r["object_id"]))
        r["label_id"] = labels.index(r["label"]) if r["label"] in labels else IGNORE
        r["color_id"] = colors.index(color) if color in colors else IGNORE
        r["small"] = max(r["size"]) < SMALL_OBJECT_M
        rows.append(r)
    return rows


def grounding_rows(data_dir: str | Path, split: str, columns: list[str]) -> pa.Table:
    """What the grounding head learns from: the QA, existence and SQA3D questions that name their objects
    (SQA3D as released names none), and every object description as a referring expression for its
    object (ScanRefer's grounding task: "this is a red cup. it is on the desk." -> that cup), which
    teaches the category, colour and place words on many more objects than the questions name."""
    import pyarrow.compute as pc

    prepared = Prepared(data_dir)
    questions = prepared.samples(split, GROUNDING_TASKS, columns)
    named = pc.greater(pc.list_value_length(questions["object_ids"]), 0)
    questions = questions.filter(pc.or_(pc.not_equal(questions["task"], "sqa"), named))
    captions = prepared.samples(split, ["caption"], columns).to_pylist()
    refer = [
        {
            **c,
            "sample_id": f"{c['sample_id']}-{k}",
            "task": REFER,
            "question": text,
            "question_type": REFER,
            "answers": [],
            "negatives": [],
        }
        for c in captions
        for k, text in enumerate(c["answers"])
    ]
    return pa.concat_tables([questions, pa.Table.from_pylist(refer, schema=questions.schema)])


def _clouds(
    rows: list[dict],
    num_points: int,
    rng: np.random.Generator | None = None,
    arrays: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> torch.Tensor:
    """(B, num_points, 6); with `rng`, a random subset of each cloud turned about the vertical axis
    (training augmentation: the same object seen another way round)."""
    out = []
    for i, r in enumerate(rows):
        if rng is None:
            out.append(cloud_array(r, num_points))
            continue
        pts, rgb = arrays[i] if arrays is not None else (r["points"], r["colors"])
        pts, rgb = np.asarray(pts, np.float32).reshape(-1, 3), np.asarray(rgb, np.float32).reshape(-1, 3)
        idx = rng.choice(len(pts), num_points, replace=len(pts) < num_points)
        a = rng.uniform(0, 2 * math.pi)
        rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], np.float32)
        out.append(np.concatenate([pts[idx] @ rot.T, rgb[idx]], axis=1))
    return torch.from_numpy(np.stack(out))


def jitter_boxes(batch: SceneBatch, scale: float, rng: np.random.Generator) -> SceneBatch:
    """The batch with each object's centre moved by N(0, scale) metres per axis and its size scaled by
    exp(N(0, scale)) (train.grounding.box_jitter): the relations between objects a few decimetres apart
    stay, their exact coordinates do not."""
    shape = tuple(batch.centers.shape)
    move = torch.from_numpy(rng.normal(0.0, scale, shape).astype(np.float32))
    grow = torch.from_numpy(np.exp(rng.normal(0.0, scale, shape)).astype(np.float32))
    return dataclasses.replace(batch, centers=batch.centers + move, sizes=batch.sizes * grow)


# ---------------------------------------------------------------------- metrics
@torch.no_grad()
def classification_metrics(model, rows: list[dict], chunk: int = 64) -> dict[str, float]:
    """Accuracy of the object classifier on rows from `object_rows`: overall, per category, small vs
    large, and colour where the captions name one."""
    model.eval()
    labels = model.cfg.object_labels
    hits, color_hits = [], []
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        feats = model.point_encoder(_clouds(part, model.cfg.num_points).to(model.projector[0].weight.dtype))
        label_logits, color_logits = model.object_classifier(feats)
        for r, lab, col in zip(part, label_logits.argmax(-1).tolist(), color_logits.argmax(-1).tolist()):
            hits.append((r["label"], r["small"], lab == r["label_id"]))
            if r["color_id"] != IGNORE:
                color_hits.append(col == r["color_id"])
    out = {"accuracy": float(np.mean([h for *_, h in hits])) if hits else 0.0, "n": len(hits)}
    for name, small in (("small_objects", True), ("large_objects", False)):
        mine = [h for _, s, h in hits if s == small]
        if mine:
            out[f"accuracy.{name}"], out[f"n.{name}"] = float(np.mean(mine)), len(mine)
    by_label = defaultdict(list)
    for label, _, h in hits:
        by_label[label].append(h)
    out.update({f"accuracy.category.{k}": float(np.mean(v)) for k, v in sorted(by_label.items())})
    if color_hits:
        out["color_accuracy"], out["color_n"] = float(np.mean(color_hits)), len(color_hits)
    majority = max((sum(r["label"] == lab for r in rows) for lab in labels), default=0)
    out["majority_baseline"] = majority / max(len(rows), 1)
    return out


# what grounding_metrics counts per question type: true / false positives, false negatives, exact sets, questions;
# then each figure's right answers beside the questions it is asked of
_GROUNDING_COUNTS = (
    *("tp", "fp", "fn", "exact", "n"),
    *("first", "named", "anchor", "anchored", "hop", "hops", "match", "matched"),
)


@torch.no_grad()
def grounding_metrics(model, collate: SceneCollator, rows: list[dict], chunk: int = 32) -> dict[str, float]:
    """Per question type (QA type, or pope.<split>): precision and recall of the predicted objects, the
    share of questions whose predicted set is exactly the annotated one; of the questions that name
    objects, the share whose first focus object is their subject (`first`: what the LM reads first); and of
    those that name an anchor beside the subject, the share whose top anchor score is on it (`anchor`: the
    first hop of "what is on the nightstand?", so a miss of `first` says which hop failed); and of those
    that find their subject through the anchor (the batch's `hop`), the share whose answer hop picks it
    (`hop`: the second); and of the others that name their subject, the share whose subject match picks it
    (`match`)."""
    model.eval()
    stats = defaultdict(lambda: np.zeros(len(_GROUNDING_COUNTS)))
    matches = model.grounding.subject_match
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        batch = collate(part, [[] for _ in part])
        feats = model.point_feats(batch)
        logits, gold, mask = model.grounding_logits(batch, feats), batch.relevant.bool(), batch.object_mask
        pred = logits[..., 0] > 0
        top_anchor = logits[..., 2].masked_fill(~mask, float("-inf")).argmax(1)
        first = model.focus_order(batch, feats, logits)[0][:, 0]
        hop_pick = with_none(logits[..., 3]).argmax(1)  # N: "no hop"
        match_pick = with_none(logits[..., 4]).argmax(1) if matches else None
        for j, r in enumerate(part):
            kind = r["question_type"] or "unknown"
            key = f"pope.{kind}" if r["task"] == "existence" else kind
            p, g = pred[j] & mask[j], gold[j] & mask[j]
            named = bool(g.any())
            right = named and batch.relevant[j, first[j]].item() == 1.0
            anchors = named_anchors(batch.relevant[j]) & mask[j]
            on_anchor = bool(anchors[top_anchor[j]])
            hops = bool(batch.hop[j])
            hop_right = hops and _picks_subject(batch.relevant[j], hop_pick[j])
            matched = matches and named and not hops
            match_right = matched and _picks_subject(batch.relevant[j], match_pick[j])
            row = np.array(
                [(p & g).sum(), (p & ~g).sum(), (~p & g).sum(), bool(torch.equal(p, g)), 1, right, named]
                + [on_anchor, bool(anchors.any())]
                + [hop_right, hops, match_right, matched],
                float,
            )
            stats[key] += row
            stats["all"] += row
    out = {}
    for key, row in sorted(stats.items()):
        c = dict(zip(_GROUNDING_COUNTS, row))
        out[f"{key}.precision"] = c["tp"] / max(c["tp"] + c["fp"], 1)
        out[f"{key}.recall"] = c["tp"] / max(c["tp"] + c["fn"], 1)
        out[f"{key}.exact"] = c["exact"] / c["n"]
        out[f"{key}.n"] = int(c["n"])
        for figure, asked in (("first", "named"), ("anchor", "anchored"), ("hop", "hops"), ("match", "matched")):
            if c[asked]:
                out[f"{key}.{figure}"] = c[figure] / c[asked]
    return out


def _picks_subject(relevant: torch.Tensor, pick: torch.Tensor) -> bool:
    """Whether a softmax's pick over (N objects, "none") is the question's subject."""
    return bool(pick < len(relevant) and relevant[pick] == 1.0)


# ---------------------------------------------------------------------- the two loops
class _EncoderObjective(nn.Module):
    """What DeepSpeed drives in encoder_pretraining: the point encoder and its classifier's loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, clouds, labels, colors):
        feats = self.model.point_encoder(clouds.to(self.model.projector[0].weight.dtype))
        return classification_loss(self.model.object_classifier, feats, labels, colors)


class _GroundingObjective(nn.Module):
    """What DeepSpeed drives in grounding: the grounding head's loss over a batch of questions."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        hop = batch.hop if self.model.cfg.grounding.answer_hop else None
        logits = self.model.grounding_logits(batch)
        return grounding_loss(logits, batch.relevant, batch.object_mask, hop, self.model.grounding.subject_match)


def encoder_loop_per_worker(config: dict) -> None:
    """encoder_pretraining: the point encoder and its classifier train; everything else is frozen."""
    run = _setup(config, ("point_encoder", "object_classifier"), _EncoderObjective)
    model, rng, local = run.model, run.rng, run.local
    num_points = model.cfg.num_points
    clouds = list(zip(column_arrays(local["points"], np.float32), column_arrays(local["colors"], np.float32)))
    targets = local.select(["label_id", "color_id"]).to_pylist()

    def inputs(idx, device):
        return (
            _clouds([{}] * len(idx), num_points, rng, [clouds[i] for i in idx]).to(device),
            torch.tensor([targets[i]["label_id"] for i in idx], device=device),
            torch.tensor([targets[i]["color_id"] for i in idx], device=device),
        )

    def figures():
        labels, colors = model.cfg.object_labels, model.cfg.object_colors
        m = classification_metrics(model, object_rows(config["data_dir"], "val", labels, colors))
        return m, f"val accuracy {m['accuracy']:.3f} (majority class {m['majority_baseline']:.3f})"

    _run(config, run, inputs, figures)


def grounding_loop_per_worker(config: dict) -> None:
    """grounding: the grounding head trains on the frozen encoder's features, computed once."""
    run = _setup(config, ("grounding",), _GroundingObjective)
    model = run.model
    objects = Prepared(config["data_dir"]).objects(model.cfg.num_points)
    worker.cache_features(model, objects)
    collate = SceneCollator.for_model(model, objects)
    questions = run.local.to_pylist()

    jitter = config["stage"].box_jitter

    def inputs(idx, device):
        rows = [questions[i] for i in idx]
        batch = collate(rows, [[] for _ in rows])
        if jitter:
            batch = jitter_boxes(batch, jitter, run.rng)
        return (batch.to(device),)

    def figures():
        m = grounding_metrics(model, collate, config["val_samples"])
        return m, f"val exact-set {m.get('all.exact', 0):.3f}, recall {m.get('all.recall', 0):.3f}"

    _run(config, run, inputs, figures)


@dataclass
class _Stage:
    """One pretraining stage on this worker, as _setup leaves it for the loop."""

    model: nn.Module
    engine: object
    rank: int
    world: int
    local: pa.Table  # this worker's whole shard
    rng: np.random.Generator
    metrics: worker.Metrics


def _setup(config: dict, trains: tuple[str, ...], objective) -> _Stage:
    """The stage's model with only `trains` trainable, its DeepSpeed engine, and this worker's share of its rows."""
    cfg: TrainConfig = config["train"]  # the typed configs, pickled across to the worker as they are
    name, stage = config["name"], config["stage"]
    rank, world = worker.start(cfg)
    model = load_model(config["init_model"]).train()
    model.set_trainable(**{p: "train" if p in trains else "freeze" for p in PARTS})
    params = [p for p in model.parameters() if p.requires_grad]
    ds_cfg = dataclasses.replace(cfg, batch_size=stage.batch_size, grad_accum=1)
    engine, _ = worker.engine(objective(model), params, ds_cfg, stage, min_lr_ratio=0.1)
    if rank == 0:
        print(
            f"[{name}] starting: {stage.steps} steps, {world} workers, "
            f"{sum(p.numel() for p in params):,} trainable parameters",
            flush=True,
        )
    local = worker.local_shard(config["rows"], rank, world)
    metrics = worker.Metrics(Path(config["run_dir"]) / "metrics.jsonl", name, 0, rank)
    return _Stage(model, engine, rank, world, local, np.random.default_rng(cfg.seed + rank), metrics)


def _run(config: dict, run: _Stage, inputs, figures) -> None:
    """Batches of the local shard in a seeded order for stage.steps steps, one checkpoint at the end, then rank 0
    measures the stage on the validation split (`figures`) and exports the model."""
    cfg, name, stage = config["train"], config["name"], config["stage"]
    engine, world, local = run.engine, run.world, run.local
    step, t0, seen = 0, time.perf_counter(), 0
    for idx in worker.batches(local.num_rows, stage.batch_size, (cfg.seed, run.rank)):
        loss = engine(*inputs(idx, engine.device))
        engine.backward(loss)
        engine.step()
        step, seen = step + 1, seen + len(idx)
        if step % cfg.log_every == 0 or step == stage.steps:
            rate = seen * world / (time.perf_counter() - t0)
            worker.progress(
                run.metrics,
                step,
                stage.steps,
                {"loss": loss.item(), **worker.grad_norm(engine), "samples_per_s": rate},
                rate,
                stage.batch_size * world,
            )
        if step >= stage.steps:
            break
    worker.checkpoint(engine, name, {"step": step, "loss": loss.item()})
    if run.rank == 0:
        run.model.eval()
        values, summary = figures()
        export = worker.export(run.model, Path(config["run_dir"]), name, values)
        print(f"[{name}] done at step {step}: {summary}; model -> {export}", flush=True)
