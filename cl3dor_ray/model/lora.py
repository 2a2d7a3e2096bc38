"""LoRA adapters on the LM, via peft."""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from cl3dor_ray.config import LoraConfig


def attach_lora(lm, cfg: LoraConfig):
    """Wrap the LM with a LoRA adapter; an LM that already has one keeps it (stages share it)."""
    if isinstance(lm, PeftModel):
        return lm
    missing = [t for t in cfg.targets if not any(name.endswith(t) for name, _ in lm.named_modules())]
    if missing:
        raise ValueError(
            f"model.lora.targets {missing} match no module of the LM "
            f"({type(lm).__name__}); e.g. q_proj, k_proj, v_proj, o_proj for Llama/Qwen2"
        )
    config = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets), task_type="CAUSAL_LM"
    )
    return get_peft_model(lm, config)
