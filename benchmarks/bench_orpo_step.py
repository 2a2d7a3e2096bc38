"""One ORPO training step (forward + backward), shared-prefix against naive concatenation.

    python benchmarks/bench_orpo_step.py [--configs configs/tiny.yaml configs/smollm2.yaml] [--batch 4]
                                         [--objects 20] [--repeats 5]

For K = 1, 2, 4, 8 negatives, on each config (the tiny LM, and SmolLM2-135M when its folder has been
converted: make smollm2) and toy scenes of `--objects` objects each, the same batch is stepped both
ways in one run: the naive path encodes the scene and runs the prompt once per answer (K + 1 times),
as TRL-style concatenated batches do; the shared path does it once and expands the prefix's KV cache
over the K + 1 answers. What trains is the config's contrastive stage (LoRA on the LM; a frozen point
encoder's features computed once, as the training loop does). Median of `--repeats` timed steps
after one warm-up. The last line is one JSON object with the speed-ups per config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import build_model
from cl3dor_ray.train.orpo import orpo_loss

ANSWERS = [
    "red",
    "blue",
    "green",
    "on the table",
    "under the table",
    "2",
    "3",
    "yes",
    "no",
    "the brown chair",
    "this is a small red cup. it is on the desk.",
    "left",
    "right",
    "near",
    "far",
]


def toy_batch(collate_cfg, model, batch: int, objects: int, k: int, rng, frozen_encoder: bool):
    scenes = {
        f"scene{i:04d}_00": [
            {
                "object_id": j,
                "points": rng.normal(size=(1024, 3)).astype(np.float32),
                "colors": rng.integers(0, 255, (1024, 3)),
                "center": rng.normal(size=3),
                "size": rng.random(3),
            }
            for j in range(objects)
        ]
        for i in range(batch)
    }
    if frozen_encoder:
        for rows in scenes.values():
            for row, feat in zip(rows, model.point_features(rows, collate_cfg.num_points)):
                row["feature"] = feat.numpy()
    samples = [
        {
            "scene_id": s,
            "object_ids": [0],
            "question": "What color is the chair next to the desk?",
            "answers": [ANSWERS[i % len(ANSWERS)]],
            "negatives": [ANSWERS[(i + 1 + j) % len(ANSWERS)] for j in range(k)],
        }
        for i, s in enumerate(scenes)
    ]
    return SceneCollator(model.tokenizer, scenes, collate_cfg.num_points, collate_cfg.max_objects)(samples)


def step_seconds(model, batch, shared: bool, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        model.zero_grad()
        t = time.perf_counter()
        loss, _ = orpo_loss(model.candidate_logps(batch, shared=shared)[0], lam=0.1, present=batch.cand_present)
        loss.backward()
        if i:  # the first step warms up allocator and kernels
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_config(path: str, args) -> dict:
    torch.manual_seed(0)
    cfg = load_config(path)
    model = build_model(cfg.model, ANSWERS * 20 + ["What color is the chair next to the desk?"] * 20)
    trainable = dataclasses.asdict(cfg.train.instruction_tuning.trainable)
    model.set_trainable(grounding="freeze", object_classifier="freeze", **trainable)
    model.train()
    rng = np.random.default_rng(0)
    frozen = trainable["point_encoder"] == "freeze"
    hidden = model.lm.get_input_embeddings().embedding_dim
    print(
        f"{path}: {args.batch} samples x {args.objects} objects x {cfg.model.num_points} points, LM hidden "
        f"{hidden}, LM {trainable['lm']}, point encoder {'frozen (features once)' if frozen else 'trained'}, "
        f"{torch.get_num_threads()} threads"
    )
    figures = {}
    for k in (1, 2, 4, 8):
        batch = toy_batch(cfg.model, model, args.batch, args.objects, k, rng, frozen)
        naive = step_seconds(model, batch, shared=False, repeats=args.repeats)
        shared = step_seconds(model, batch, shared=True, repeats=args.repeats)
        figures[f"K{k}"] = {"naive_s": naive, "shared_s": shared, "speedup": naive / shared}
        print(
            f"  K = {k}: naive {naive * 1000:7.1f} ms (baseline)  shared {shared * 1000:7.1f} ms  "
            f"speed-up {naive / shared:.2f}x"
        )
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.yaml", "configs/smollm2.yaml"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    out = {}
    for path in args.configs:
        lm_path = load_config(path).model.lm.path
        if lm_path and not Path(lm_path, "config.json").is_file():
            print(f"{path}: skipped, {lm_path} is missing (make smollm2 converts it)")
            continue
        figures = bench_config(path, args)
        out[Path(path).stem] = {"speedup": {k: round(v["speedup"], 3) for k, v in figures.items()}, "steps": figures}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
