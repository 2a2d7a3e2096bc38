"""The per-worker training loop of one LM stage (trainer.stages_per_worker calls it on every worker).

setup: load the stage's starting model -> set what trains -> DeepSpeed engine -> resume from
       Ray Train's latest checkpoint if it is this stage's
train: micro-batches from this worker's shard, in a seeded order -> ORPO (or plain NLL) loss -> engine.step
every eval_every: validation loss + answer exact match;  every checkpoint_every: all ranks
       save their DeepSpeed shards and report one Ray Train checkpoint
end:   rank 0 exports the stage's model folder
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from cl3dor_ray.config import StageConfig, TrainConfig
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import load_model
from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.train import worker
from cl3dor_ray.train.orpo import orpo_loss


def batch_tokens(batch) -> int:
    """Tokens the LM processes for this batch: prefix (objects + prompt) once, plus every candidate."""
    return int(batch.object_mask.sum() + batch.instruction_mask.sum() + batch.cand_mask.sum())


def train_loop_per_worker(config: dict) -> None:
    import torch.distributed as dist

    cfg: TrainConfig = config["train"]  # the typed configs, pickled across to the worker as they are
    name, stage = config["name"], config["stage"]
    run_dir = Path(config["run_dir"])
    rank, world = worker.start(cfg)

    model = load_model(config["init_model"]).train()
    # the pretrained encoder's classifier and the grounding head trained in their own stages (pretrain.py)
    model.set_trainable(object_classifier="freeze", grounding="freeze", **dataclasses.asdict(stage.trainable))
    params = [p for p in model.parameters() if p.requires_grad]
    engine, scheduler = worker.engine(model, params, cfg, stage, stage.min_lr_ratio, cfg.weight_decay)
    start = worker.restore(engine, name)
    metrics = worker.Metrics(run_dir / "metrics.jsonl", name, start, rank)
    if rank == 0:
        print(
            f"[{name}] {'resuming at step ' + str(start) if start else 'starting'}: {stage.steps} steps, "
            f"{world} workers, ZeRO-{cfg.zero_stage}, {sum(p.numel() for p in params):,} trainable parameters",
            flush=True,
        )

    objects = Prepared(config["data_dir"]).objects(model.cfg.num_points)
    if stage.trainable.point_encoder == "freeze":
        worker.cache_features(model, objects)  # it was most of a tiny-LM step
    # training reads the annotated objects as given (as LEO trains) for stage.teacher_forcing of its questions
    # and the grounding head's for the rest; validation lets the head find them all
    collate = SceneCollator.for_model(model, objects, teacher_forcing=stage.teacher_forcing, seed=cfg.seed + rank)
    val_collate = SceneCollator.for_model(model, objects)
    pair_rows = config.get("pair_samples", [])[rank::world]
    pair_collate = SceneCollator.for_model(model, objects, teacher_forcing=1.0)  # the same focus at start and end
    if config.get("pair_samples") and not start:  # what the odds ratio has to learn, before it starts
        metrics.write(0, _pair_accuracy(engine, pair_collate, pair_rows, dist, "start"))

    step = _train(
        engine,
        worker.local_shard(config["rows"], rank, world).to_pylist(),
        scheduler,
        cfg,
        stage,
        collate,
        val_collate,
        config["val_samples"][rank::world],
        metrics,
        start,
        (rank, world),
        run_dir,
    )
    if config.get("pair_samples"):
        metrics.write(step, _pair_accuracy(engine, pair_collate, pair_rows, dist, "end"))
    if rank == 0:
        export = worker.export(engine.module, run_dir, name)
        print(f"[{name}] done at step {step}; model -> {export}", flush=True)


def _train(
    engine,
    rows: list[dict],
    scheduler,
    cfg: TrainConfig,
    stage: StageConfig,
    collate,
    val_collate,
    val_rows,
    metrics,
    start: int,
    ranks: tuple[int, int],
    run_dir: Path,
) -> int:
    """Steps from `start` to stage.steps over this worker's rows; returns the last step."""
    import torch.distributed as dist

    rank, world = ranks
    if start >= stage.steps:
        return start
    step, t0, seen, tokens, last_ckpt = start, time.perf_counter(), 0, 0, start
    for idx in worker.batches(len(rows), cfg.batch_size, (cfg.seed, rank), start * cfg.grad_accum):
        chunk = [rows[i] for i in idx]
        # without the odds ratio only the gold answer is scored (plain NLL, as supervised fine-tuning)
        batch = collate(chunk, None if stage.contrastive else [[r["answers"][0]] for r in chunk]).to(engine.device)
        loss, values = orpo_loss(engine(batch), lam=stage.lam if stage.contrastive else 0.0, present=batch.cand_present)
        engine.backward(loss)
        engine.step()
        seen, tokens = seen + len(chunk), tokens + batch_tokens(batch)
        if engine.global_steps == step:  # inside a gradient-accumulation window
            continue
        step = engine.global_steps
        _maybe_fail(cfg, metrics.stage, step, rank, world, run_dir)
        if step % cfg.log_every == 0 or step == stage.steps:
            values.update(worker.grad_norm(engine))
            _log(metrics, scheduler, cfg, stage, step, values, (seen, tokens, world, time.perf_counter() - t0))
        report = {"step": step, "loss": values["loss"]}
        if step % cfg.eval_every == 0 or step == stage.steps:
            report.update(_evaluate(engine, val_collate, val_rows, dist))
            metrics.write(step, {k: v for k, v in report.items() if k.startswith("val_")})
        if step % cfg.checkpoint_every == 0 or step == stage.steps:
            worker.checkpoint(engine, metrics.stage, report)
            last_ckpt = step
        if step >= stage.steps:
            break
    if last_ckpt != step:
        worker.checkpoint(engine, metrics.stage, {"step": step})
    return step


def _log(metrics, scheduler, cfg: TrainConfig, stage: StageConfig, step: int, values: dict, counts) -> None:
    seen, tokens, world, elapsed = counts
    rate = seen * world / elapsed
    values.update({"lr": scheduler.get_last_lr()[0], "samples_per_s": rate, "tokens_per_s": tokens * world / elapsed})
    worker.progress(metrics, step, stage.steps, values, rate, cfg.batch_size * cfg.grad_accum * world)


@torch.no_grad()
def _evaluate(engine, collate, rows: list[dict], dist) -> dict:
    """Validation NLL of the gold answers and exact match of greedy answers (qa/existence), over all ranks."""
    model = engine.module
    model.eval()
    nll_sum = n = em_hits = em_n = 0.0
    for i in range(0, len(rows), 4):
        chunk = rows[i : i + 4]
        logps = model(collate(chunk, [[r["answers"][0]] for r in chunk]).to(engine.device))
        nll_sum, n = nll_sum - logps[:, 0].float().sum().item(), n + len(chunk)
        short = [r for r in chunk if r["task"] != "caption"]
        if short:
            answers = model.generate(collate(short, [[] for _ in short]).to(engine.device), max_new_tokens=12)
            for r, a in zip(short, answers):
                em_hits += normalize_answer(a) in {normalize_answer(g) for g in r["answers"]}
            em_n += len(short)
    model.train()
    totals = torch.tensor([nll_sum, n, em_hits, em_n], dtype=torch.float64, device=engine.device)
    dist.all_reduce(totals)
    nll_sum, n, em_hits, em_n = totals.tolist()
    out = {"val_loss": nll_sum / max(n, 1)}
    if em_n:
        out["val_em"] = em_hits / em_n
    return out


@torch.no_grad()
def _pair_accuracy(engine, collate, rows: list[dict], dist, when: str) -> dict:
    """The share of (gold, hard negative) pairs of these training samples whose gold answer the model
    ranks higher (teacher-forced, as it trains), over all ranks: `train_pairs.<when>` (start or end)."""
    model = engine.module
    model.eval()
    right = pairs = 0.0
    for i in range(0, len(rows), 8):
        batch = collate(rows[i : i + 8]).to(engine.device)
        logps = model(batch)
        valid = batch.cand_present[:, 1:]
        right += ((logps[:, :1] > logps[:, 1:]) & valid).sum().item()
        pairs += valid.sum().item()
    model.train()
    totals = torch.tensor([right, pairs], dtype=torch.float64, device=engine.device)
    dist.all_reduce(totals)
    right, pairs = totals.tolist()
    return {f"train_pairs.{when}": right / max(pairs, 1), "train_pairs.n": int(pairs)}


def _maybe_fail(cfg: TrainConfig, stage: str, step: int, rank: int, world: int, run_dir: Path) -> None:
    """Test-only fault injection: the last worker kills its own process, once, at cfg.fail_at_step."""
    marker = run_dir / ".injected_failure"
    if cfg.fail_at_step == step and stage == "instruction_tuning" and rank == world - 1 and not marker.exists():
        marker.touch()
        print(f"[{stage}] fault injection: worker {rank} exits at step {step}", flush=True)
        os._exit(1)
