"""`cl3dor train` / jobs/train.py: the three CL3DOR stages with Ray Train's TorchTrainer and DeepSpeed.

    setup   check the config and the data folder (before any worker starts), build the initial model
    train   encoder_pretraining -> grounding (train/pretrain.py: the point encoder classifies objects,
            the grounding head learns which objects a question is about), then
            object_alignment -> scene_alignment -> instruction_tuning (odds-ratio over hard negatives),
            in one TorchTrainer run, each stage starting from the previous stage's exported model
    save    RUN/model (the last stage's model folder), RUN/metrics.jsonl, RUN/curves.png

    RUN/init_model/            the starting weights and the corpus-trained tokenizer
    RUN/ray/train/             Ray Train checkpoints (DeepSpeed shards of every rank, tagged with their stage)
    RUN/stages/<stage>/model/  each stage's exported model; its presence marks the stage done

One TorchTrainer run, not one per stage: each run spent 16-19 s starting its controller, its worker
actors and their process group before the first step, even for an empty loop (measured), four times.
Re-running the same command with the same RUN skips finished stages and resumes the unfinished one
from its latest checkpoint (Ray Train restores it from RUN/ray/train); so does Ray Train itself when
a worker dies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from cl3dor_ray.config import PRETRAIN_STAGES, Config, ConfigError
from cl3dor_ray.console import captured, follow_training, quiet_frameworks, say
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.data.schema import nested
from cl3dor_ray.model.io import MODEL_FILE, build_model, read_model_folder, save_model
from cl3dor_ray.text.sqa3d import situated_instruction
from cl3dor_ray.train.curves import plot_curves
from cl3dor_ray.train.loop import train_loop_per_worker
from cl3dor_ray.train.pretrain import (
    encoder_loop_per_worker,
    grounding_loop_per_worker,
    grounding_rows,
    object_rows,
    object_vocabulary,
)
from cl3dor_ray.train.worker import stage_done, stage_model

RAY_RUN = "train"  # the Ray Train run under RUN/ray that every stage reports to

SAMPLE_COLUMNS = [
    "sample_id",
    "split",
    "task",
    "scene_id",
    "object_ids",
    "question",
    "answers",
    "negatives",
    "question_type",
    "situation",
    "pose",
]


@dataclass
class TrainResult:
    model_dir: Path
    stages_run: list[str]
    seconds: float


def check_data(data_dir: Path, cfg: Config) -> None:
    """Fail before Ray starts when the prepared data is not there or has fewer points than the model reads."""
    Prepared(data_dir).check_num_points(cfg.model.num_points)


def stage_samples(data_dir: Path, split: str, tasks: list[str]):
    return Prepared(data_dir).samples(split, tasks, columns=SAMPLE_COLUMNS)


def _initial_model(cfg: Config, data_dir: Path, run_dir: Path) -> Path:
    folder = run_dir / "init_model"
    if (folder / MODEL_FILE).is_file():
        return folder
    train = Prepared(data_dir).samples("train", columns=["question", "situation", "answers", "negatives"]).to_pydict()
    corpus = [situated_instruction(q, s) for q, s in zip(train["question"], train["situation"])] + [
        a for group in train["answers"] + train["negatives"] for a in group
    ]
    import torch

    labels, colors = object_vocabulary(data_dir)
    model_cfg = dataclasses.replace(cfg.model, object_labels=labels, object_colors=colors)
    torch.manual_seed(cfg.train.seed)
    save_model(build_model(model_cfg, corpus), folder)
    return folder


def _stage_data(name: str, stage, cfg: Config, data_dir: Path, init_model: Path):
    """The stage's training rows (a pyarrow Table) and its validation rows."""
    if name == "encoder_pretraining":
        model_cfg = read_model_folder(init_model)[1]
        rows = object_rows(data_dir, "train", model_cfg.object_labels, model_cfg.object_colors)
        table = {k: [r[k] for r in rows] for k in ("scene_id", "object_id", "label", "label_id", "color_id")}
        table["points"] = nested([r["points"] for r in rows], pa.float32())
        table["colors"] = nested([r["colors"] for r in rows], pa.uint8())
        return pa.table(table), []
    if name == "grounding":
        return grounding_rows(data_dir, "train", SAMPLE_COLUMNS), grounding_rows(
            data_dir, "val", SAMPLE_COLUMNS
        ).to_pylist()
    train_rows = stage_samples(data_dir, "train", stage.tasks)
    return train_rows, stage_samples(data_dir, "val", stage.tasks).slice(0, cfg.train.eval_samples).to_pylist()


def _shuffled(rows: pa.Table, seed: int) -> pa.Table:
    """The rows in a seeded random order, before the workers take their shares. Prepared samples come
    sorted by id, that is room by room and task by task; when a batch was a run of one room's "which
    way" questions, the LM learned the run's majority answer instead of reading the room ("which way"
    at its prior, 0.5, on its own training questions; issue 22). Each worker also draws its batches in
    a fresh order every epoch (worker.batches)."""
    return rows.take(np.random.default_rng(seed).permutation(rows.num_rows))


def _pair_samples(name: str, stage, cfg: Config, train_rows: pa.Table) -> list[dict]:
    """A contrastive stage's fixed set of training samples with hard negatives, spread over the sorted ids,
    on which it measures its preference accuracy at its start and its end."""
    if name in PRETRAIN_STAGES or not stage.contrastive or not cfg.train.pair_samples:
        return []
    with_negatives = [i for i, n in enumerate(train_rows.column("negatives").to_pylist()) if n]
    if not with_negatives:
        return []
    picks = sorted({with_negatives[int(j)] for j in np.linspace(0, len(with_negatives) - 1, cfg.train.pair_samples)})
    return train_rows.take(picks).to_pylist()


def _resume_step(run_dir: Path, name: str) -> int:
    """The step of the run's latest Ray Train checkpoint when it is the stage's (fit() resumes from it);
    0 for a fresh start."""
    snapshot = run_dir / "ray" / RAY_RUN / "checkpoint_manager_snapshot.json"
    try:
        metrics = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]
        return int(metrics["step"]) if metrics.get("stage") == name else 0
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return 0


def _stage_summary(run_dir: Path, name: str) -> str:
    """The stage's last training loss and, for the pretraining stages, their validation figures."""
    rows = (
        [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if (run_dir / "metrics.jsonl").exists()
        else []
    )
    losses = [r["loss"] for r in rows if r["stage"] == name and "loss" in r]
    out = f": loss {losses[-1]:.4f}" if losses else ""
    pairs = {k: r[k] for r in rows if r["stage"] == name for k in ("train_pairs.start", "train_pairs.end") if k in r}
    if "train_pairs.end" in pairs:
        out += (
            f", hard pairs ranked right {pairs.get('train_pairs.start', float('nan')):.2f} -> "
            f"{pairs['train_pairs.end']:.2f}"
        )
    figures = run_dir / "stages" / name / "metrics.json"
    if figures.is_file():
        m = json.loads(figures.read_text())
        if "accuracy" in m:
            out += f", val accuracy {m['accuracy']:.3f} (majority class {m['majority_baseline']:.3f})"
        if "all.exact" in m:
            out += f", val exact-set {m['all.exact']:.3f}, recall {m['all.recall']:.3f}"
    return out


# each stage's per-worker loop
LOOPS = {
    "encoder_pretraining": encoder_loop_per_worker,
    "grounding": grounding_loop_per_worker,
    "object_alignment": train_loop_per_worker,
    "scene_alignment": train_loop_per_worker,
    "instruction_tuning": train_loop_per_worker,
}


def stages_per_worker(config: dict) -> None:
    """What Ray Train runs on every worker: the stages still to do, in order. A stage's exported model marks
    it done, so after a restart the finished ones are skipped and the unfinished one resumes from its
    checkpoint."""
    import torch.distributed as dist

    for stage in config["stages"]:
        if stage_done(stage["run_dir"], stage["name"]):
            continue
        LOOPS[stage["name"]](stage)
        dist.barrier()  # rank 0's export is the next stage's starting model


def train(
    cfg: Config,
    data_dir: str | Path,
    run_dir: str | Path,
    only_stage: str | None = None,
    init_model: str | Path | None = None,
) -> TrainResult:
    """Run (or resume) the enabled stages on the Ray this process is connected to."""
    t0 = time.perf_counter()
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    check_data(data_dir, cfg)
    stages = [(n, s) for n, s in cfg.train.stages if s.enabled and (only_stage is None or n == only_stage)]
    if not stages:
        raise ConfigError(
            f"no stage to run (only_stage={only_stage!r}; enabled: {[n for n, s in cfg.train.stages if s.enabled]})"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    with captured():  # transformers imports DeepSpeed to save a model, and DeepSpeed announces its accelerator
        import deepspeed  # noqa: F401
    quiet_frameworks()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    previous = Path(init_model).resolve() if init_model else _initial_model(cfg, data_dir, run_dir)

    todo = []
    for name, stage in stages:
        export = stage_model(run_dir, name)
        if stage_done(run_dir, name):
            say(f"[{name}] already done: {export}")
        else:
            todo.append((name, stage, previous))
        previous = export
    if todo:
        _run_stages(todo, cfg, data_dir, run_dir)
    ran = [name for name, _, _ in todo]

    final = run_dir / "model"
    if final.resolve() != previous.resolve():
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(previous, final)
    if (run_dir / "metrics.jsonl").exists():
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    (run_dir / "train_summary.json").write_text(json.dumps({"stages_run": ran, "model": str(final)}, indent=2))
    return TrainResult(final, ran, time.perf_counter() - t0)


def _run_stages(todo: list, cfg: Config, data_dir: Path, run_dir: Path) -> None:
    """The stages in `todo` ((name, stage config, starting model) each) as one TorchTrainer run."""
    import ray.train
    from ray.train.torch import TorchTrainer

    configs = []
    for name, stage, previous in todo:
        train_rows, val = _stage_data(name, stage, cfg, data_dir, previous)
        batch = stage.batch_size if name in PRETRAIN_STAGES else cfg.train.batch_size
        if train_rows.num_rows < batch * cfg.train.workers:
            raise ConfigError(
                f"[{name}] {train_rows.num_rows} training rows; need at least "
                f"{batch} (batch size) x {cfg.train.workers} (train.workers)"
            )
        # the typed configs cross to the workers as they are
        configs.append(
            {
                "train": cfg.train,
                "name": name,
                "stage": stage,
                "run_dir": str(run_dir),
                "data_dir": str(data_dir),
                "init_model": str(previous),
                "val_samples": val,
                "pair_samples": _pair_samples(name, stage, cfg, train_rows),
                "rows": ray.put(_shuffled(train_rows, cfg.train.seed)),  # each worker takes its share
            }
        )
    env = {k: os.environ[k] for k in ("TORCH_EXTENSIONS_DIR",) if k in os.environ}
    trainer = TorchTrainer(
        stages_per_worker,
        train_loop_config={"stages": configs},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu),
        run_config=ray.train.RunConfig(
            name=RAY_RUN,
            storage_path=str(run_dir / "ray"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            worker_runtime_env={"env_vars": env},
        ),
    )
    bars = [(name, stage.steps, _resume_step(run_dir, name)) for name, stage, _ in todo]

    def started(name: str, steps: int, resume: int) -> None:
        say(
            f"[{name}] start{f', resuming at step {resume}' if resume else ''}: {steps} steps on "
            f"{cfg.train.workers} Ray Train worker(s)"
        )

    def finished(name: str, seconds: float) -> None:
        say(f"[{name}] done in {seconds:.0f} s{_stage_summary(run_dir, name)}")

    with follow_training(run_dir / "metrics.jsonl", bars, lambda name: stage_done(run_dir, name), started, finished):
        trainer.fit()
