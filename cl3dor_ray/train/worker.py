"""What every stage's Ray Train worker does alike, whichever loop it runs (loop.py, pretrain.py).

start      the worker's rank and world size, seeded
engine     DeepSpeed around the stage's trainable parameters, with warmup + cosine decay
shard      this worker's share of the stage's rows, and its batches in a seeded order per epoch
features   a frozen point encoder's feature of every object, computed once per stage
Metrics    RUN/metrics.jsonl (rank 0), cut back to the restored step on a resume
progress   one line per log step: loss, rate and ETA (the driver's bar reads metrics.jsonl)
checkpoint every rank's DeepSpeed shards, reported as one Ray Train checkpoint tagged with its stage
restore    the run's latest checkpoint, when it is this stage's
export     the stage's model folder, which appears whole: its presence marks the stage done
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from cl3dor_ray.config import TrainConfig
from cl3dor_ray.model.io import MODEL_FILE, save_model
from cl3dor_ray.train.deepspeed_config import deepspeed_config

CKPT_TAG = "ds"
STAGE_FILE = "stage"  # in each checkpoint: the stage it belongs to (all stages report to one Ray Train run)


def start(cfg: TrainConfig) -> tuple[int, int]:
    """(rank, world size) of this worker, with torch seeded per rank."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    return rank, world


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def engine(
    module: torch.nn.Module, params: list, cfg: TrainConfig, stage, min_lr_ratio: float, weight_decay: float = 0.0
):
    """DeepSpeed's engine and scheduler for `module`. On CPU, torch's AdamW (DeepSpeed's fused one
    needs CUDA); on GPU, DeepSpeed's own from the config."""
    import deepspeed

    optimizer = None if cfg.use_gpu else torch.optim.AdamW(params, lr=stage.lr, weight_decay=weight_decay)

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, stage.warmup_steps, stage.steps, min_lr_ratio)
        )

    wrapped, _, _, scheduler = deepspeed.initialize(
        model=module,
        model_parameters=params,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(cfg, stage.lr),
        dist_init_required=False,
    )
    return wrapped, scheduler


def local_shard(rows, rank: int, world: int) -> pa.Table:
    """This worker's share of a stage's rows (every `world`-th, from `rank`), read once from the object
    store, where the driver put the whole table (`rows`: its ObjectRef, already shuffled). Its rows are
    short (questions, answers, object ids; the point clouds are read apart), a few MB even for ScanNet's
    questions. The loop then orders them itself (`batches`). Ray Data's streaming split did the same
    job at about 4.5 s per stage here (its coordinator actor, its executor), and restarting it every
    epoch stalled each epoch's first step as long (measured)."""
    import ray

    table = ray.get(rows)
    return table.take(np.arange(rank, table.num_rows, world))


def batches(num_rows: int, batch_size: int, seed: tuple[int, ...], start: int = 0):
    """Index batches of `batch_size` over `num_rows` rows, endlessly: each epoch a fresh permutation seeded
    by (seed, epoch), the last partial batch dropped. `start` skips that many batches, so a resumed stage
    sees the very batches it would have seen."""
    per_epoch = num_rows // batch_size
    if per_epoch < 1:
        raise ValueError(f"a shard of {num_rows} rows holds no batch of {batch_size}")
    epoch, first = divmod(start, per_epoch)
    while True:
        order = np.random.default_rng([*seed, epoch]).permutation(num_rows)
        for b in range(first, per_epoch):
            yield order[b * batch_size : (b + 1) * batch_size]
        epoch, first = epoch + 1, 0


def cache_features(model, objects: dict[str, list[dict]]) -> None:
    """A frozen point encoder gives every object the same feature at every step: compute it once and
    keep it on the object rows (the collator then carries features, as serving does)."""
    for rows in objects.values():
        for row, feat in zip(rows, model.point_features(rows, model.cfg.num_points)):
            row["feature"] = feat.numpy()


class Metrics:
    """metrics.jsonl on rank 0; on resume, entries past the restored step are dropped."""

    def __init__(self, path: Path, stage: str, start_step: int, rank: int):
        self.path, self.stage, self.rank = path, stage, rank
        if rank == 0 and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            keep = [r for r in rows if r["stage"] != stage or r["step"] <= start_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, step: int, values: dict) -> None:
        if self.rank == 0:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"stage": self.stage, "step": step, **values}) + "\n")


def grad_norm(engine) -> dict:
    """{"grad_norm": the global gradient norm of the engine's last step, before DeepSpeed clipped it to
    train.grad_clip}, or {} before its first step: how often the clip binds is in metrics.jsonl."""
    norm = engine.get_global_grad_norm()
    return {} if norm is None else {"grad_norm": float(norm)}


def progress(metrics: Metrics, step: int, steps: int, values: dict, rate: float, samples_per_step: int) -> None:
    """The log step's figures to metrics.jsonl, and one line to the worker's log (rank 0)."""
    metrics.write(step, values)
    if metrics.rank == 0:
        eta = (steps - step) * samples_per_step / max(rate, 1e-9)
        print(
            f"[{metrics.stage}] step {step}/{steps} loss {values['loss']:.4f} {rate:.1f} samples/s ETA {eta:.0f} s",
            flush=True,
        )


def checkpoint(wrapped, stage: str, report: dict) -> None:
    """Every rank saves its DeepSpeed shards into its own folder; Ray Train gathers them into one checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        wrapped.save_checkpoint(d, tag=CKPT_TAG)
        Path(d, STAGE_FILE).write_text(stage)
        ray.train.report({"stage": stage, **report}, checkpoint=ray.train.Checkpoint.from_directory(d))


def restore(wrapped, stage: str) -> int:
    """Load the run's latest checkpoint into `wrapped` when it is `stage`'s (after a restart); returns the
    step it resumes at. The latest may be an earlier stage's last one: that stage is done, and this one
    starts from its exported model instead."""
    import ray.train

    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            tag = Path(d, STAGE_FILE)
            if tag.is_file() and tag.read_text() == stage:
                wrapped.load_checkpoint(d, tag=CKPT_TAG)
    return wrapped.global_steps


def stage_model(run_dir: Path, stage: str) -> Path:
    """RUN/stages/<stage>/model: the stage's exported model; its presence marks the stage done."""
    return Path(run_dir) / "stages" / stage / "model"


def stage_done(run_dir: Path, stage: str) -> bool:
    return (stage_model(run_dir, stage) / MODEL_FILE).is_file()


def export(model, run_dir: Path, stage: str, figures: dict | None = None) -> Path:
    """RUN/stages/<stage>/model (and metrics.json beside it), written aside and moved into place whole."""
    folder = stage_model(run_dir, stage)
    tmp = folder.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    if figures is not None:
        (folder.parent / "metrics.json").write_text(json.dumps(figures, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
