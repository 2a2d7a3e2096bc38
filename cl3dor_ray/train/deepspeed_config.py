"""The DeepSpeed config, generated from TrainConfig: the one place it is written down.

CPU: fp32, gloo, a torch AdamW handed to DeepSpeed (its fused optimizers need CUDA).
GPU: bf16, NCCL, DeepSpeed's own (fused) AdamW.
"""

from __future__ import annotations

from cl3dor_ray.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, lr: float) -> dict:
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * cfg.workers,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.use_gpu},
        "steps_per_print": 10**9,  # our loop logs; DeepSpeed's own prints would duplicate it
        "wall_clock_breakdown": False,
    }
    if cfg.use_gpu:
        config["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": cfg.weight_decay}}
    else:
        config["zero_allow_untested_optimizer"] = True  # torch.optim.AdamW, passed in by the loop
    return config
