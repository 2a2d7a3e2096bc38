"""Build, save and load a Scene3DLM as one Hugging Face-style folder. Loading never unpickles.

    MODEL/cl3dor_model.json          format, prompt version, the ModelConfig, where the LM is
    MODEL/scene_encoder.safetensors  point encoder, location encoder, spatial transformer, projector
    MODEL/lm/                        the LM (save_pretrained, safetensors), LoRA merged in
      or MODEL/lm_adapter/           only the PEFT adapter, when the base LM is a local folder left frozen
    MODEL/tokenizer/                 the tokenizer
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Iterable

from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from cl3dor_ray.config import ModelConfig, from_dict
from cl3dor_ray.model.prompt import PROMPT_VERSION, has_tokenizer, load_tokenizer, train_tokenizer
from cl3dor_ray.model.scene3dlm import Scene3DLM, build_lm

FORMAT = "cl3dor-scene3dlm"
MODEL_FILE = "cl3dor_model.json"


class ModelFolderError(ValueError):
    """A model folder is missing a file or was written by something else."""


def build_model(cfg: ModelConfig, corpus: Iterable[str] | None = None) -> Scene3DLM:
    """A fresh model. The tokenizer comes from the LM folder, or is trained from `corpus`."""
    if cfg.lm.path and has_tokenizer(cfg.lm.path):
        tokenizer = load_tokenizer(cfg.lm.path)
    elif corpus is not None:
        tokenizer = train_tokenizer(corpus, cfg.lm.vocab_size)
    else:
        raise ValueError("model.lm.path has no tokenizer and no corpus was given to train one from")
    return Scene3DLM(cfg, build_lm(cfg, len(tokenizer)), tokenizer)


def save_model(model: Scene3DLM, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    save_file(encoder, folder / "scene_encoder.safetensors")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    adapter_only = isinstance(model.lm, PeftModel) and model.cfg.lm.path and not getattr(model, "lm_base_trained", False)
    if adapter_only:
        model.lm.save_pretrained(folder / "lm_adapter")
    else:
        lm = copy.deepcopy(model.lm).merge_and_unload() if isinstance(model.lm, PeftModel) else model.lm
        lm.save_pretrained(folder / "lm", safe_serialization=True)
    meta = {"format": FORMAT, "prompt_version": PROMPT_VERSION, "model": dataclasses.asdict(model.cfg),
            "lm": "lm_adapter" if adapter_only else "lm"}
    (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load_model(folder: str | Path) -> Scene3DLM:
    folder = Path(folder)
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise ModelFolderError(f"{folder} is not a cl3dor model folder: {MODEL_FILE} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelFolderError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("prompt_version") != PROMPT_VERSION:
        raise ModelFolderError(f"{meta_path}: prompt {meta.get('prompt_version')!r}; this code uses {PROMPT_VERSION!r}")
    cfg = from_dict(ModelConfig, meta["model"], "model")
    tokenizer = load_tokenizer(folder / "tokenizer")
    if meta["lm"] == "lm":
        lm = AutoModelForCausalLM.from_pretrained(folder / "lm", local_files_only=True, use_safetensors=True)
    else:
        base = AutoModelForCausalLM.from_pretrained(cfg.lm.path, local_files_only=True, use_safetensors=True)
        lm = PeftModel.from_pretrained(base, folder / "lm_adapter")
    model = Scene3DLM(cfg, lm, tokenizer)
    missing, unexpected = model.load_state_dict(load_file(folder / "scene_encoder.safetensors"), strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]
    if missing or unexpected:
        raise ModelFolderError(f"{folder / 'scene_encoder.safetensors'}: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    return model.eval()
