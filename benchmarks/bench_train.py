"""Training throughput with 1 and 2 Ray Train workers, and model FLOPs utilisation, in one run.

    python benchmarks/bench_train.py [--configs configs/tiny.yaml configs/smollm2.yaml] [--scenes 12] [--steps 20]

Prepares synthetic rooms, then, for each config (the tiny LM; SmolLM2-135M with LoRA when its folder
has been converted: make smollm2), runs the contrastive stage (ORPO over K hard negatives, DeepSpeed
ZeRO-2 on gloo) with 1 and then 2 workers, `--steps` optimizer steps each, on one local Ray.
samples/s and tokens/s are the loop's own figures over the whole stage (all workers together).
MFU = (training FLOPs per sample, counted with torch's FlopCounterMode on one forward + backward)
x samples/s / (workers x the single-thread matmul peak measured here, in this run): each Ray Train
worker has one CPU and one torch thread. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").resolve()))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cl3dor_ray.config import PrepareConfig, load_config  # noqa: E402
from cl3dor_ray.data.prepare import prepare  # noqa: E402
from cl3dor_ray.data.prepared import Prepared  # noqa: E402
from cl3dor_ray.model.batch import SceneCollator  # noqa: E402
from cl3dor_ray.model.io import load_model  # noqa: E402
from cl3dor_ray.runtime import ray_session  # noqa: E402
from cl3dor_ray.scenes.synth_dataset import synthesize  # noqa: E402
from cl3dor_ray.train.orpo import orpo_loss  # noqa: E402
from cl3dor_ray.train.trainer import stage_samples, train  # noqa: E402


def matmul_peak_flops(threads: int = 1, n: int = 1024, repeats: int = 10) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = time.perf_counter() - t
    torch.set_num_threads(previous)
    return 2 * n**3 * repeats / seconds


def flops_per_sample(model_dir: Path, data_dir: Path, cfg) -> float:
    """FLOPs of one contrastive-stage forward + backward per sample, as the loop runs it: a frozen point
    encoder's features are computed once per stage, so they are not counted."""
    model = load_model(model_dir).train()
    trainable = dataclasses.asdict(cfg.train.instruction_tuning.trainable)
    model.set_trainable(grounding="freeze", object_classifier="freeze", **trainable)
    rows = stage_samples(data_dir, "train", cfg.train.instruction_tuning.tasks).slice(0, cfg.train.batch_size)
    rows = rows.to_pylist()
    objects = Prepared(data_dir).objects(model.cfg.num_points)
    if trainable["point_encoder"] == "freeze":
        for scene_rows in objects.values():
            for row, feat in zip(scene_rows, model.point_features(scene_rows, model.cfg.num_points)):
                row["feature"] = feat.numpy()
    collate = SceneCollator.for_model(model, objects, teacher_forcing=1.0)
    batch = collate(rows)
    with FlopCounterMode(display=False) as counter:
        loss, _ = orpo_loss(model(batch), lam=0.1, present=batch.cand_present)
        loss.backward()
    return counter.get_total_flops() / len(rows)


def bench_config(path: str, args, data: Path, tmp: Path) -> dict:
    figures = {}
    for workers in (1, 2):
        cfg = load_config(
            path,
            [
                f"train.workers={workers}",
                f"train.instruction_tuning.steps={args.steps}",
                "train.eval_every=100000",
                "train.checkpoint_every=100000",
                f"train.log_every={args.steps}",
            ],
        )
        run = tmp / f"{Path(path).stem}-run{workers}"
        train(cfg, data, run, only_stage="instruction_tuning")
        last = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "samples_per_s" in r][
            -1
        ]
        figures[workers] = {"samples_per_s": last["samples_per_s"], "tokens_per_s": last["tokens_per_s"]}
    per_sample = flops_per_sample(run / "init_model", data, cfg)
    peak = matmul_peak_flops(threads=1)
    out = {
        "steps": args.steps,
        "batch_size_per_worker": cfg.train.batch_size,
        "flops_per_sample": per_sample,
        "matmul_peak_flops_per_thread": peak,
    }
    print(
        f"{path}: contrastive stage, {args.steps} steps, micro-batch {cfg.train.batch_size} per worker, ZeRO-"
        f"{cfg.train.zero_stage}; {per_sample / 1e9:.2f} GFLOP per sample (fwd+bwd); matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s per thread (measured now)"
    )
    for workers, f in figures.items():
        mfu = f["samples_per_s"] * per_sample / (workers * peak)
        out[f"workers_{workers}"] = {**f, "mfu": mfu}
        print(
            f"  {workers} worker{'s' if workers > 1 else ' '}: {f['samples_per_s']:6.2f} samples/s "
            f"{f['tokens_per_s']:8.0f} tokens/s  MFU {100 * mfu:.1f}%"
        )
    out["speedup_2_vs_1"] = figures[2]["samples_per_s"] / figures[1]["samples_per_s"]
    print(f"  2 vs 1 workers (baseline 1): {out['speedup_2_vs_1']:.2f}x")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.yaml", "configs/smollm2.yaml"])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    out = {}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, num_cpus=2, quiet=True):
        tmp = Path(tmp)
        synthesize(tmp / "raw", args.scenes, seed=0)
        prepare(tmp / "raw", tmp / "data", PrepareConfig(workers=2))
        for path in args.configs:
            lm_path = load_config(path).model.lm.path
            if lm_path and not Path(lm_path, "config.json").is_file():
                print(f"{path}: skipped, {lm_path} is missing (make smollm2 converts it)")
                continue
            out[Path(path).stem] = bench_config(path, args, tmp / "data", tmp)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
