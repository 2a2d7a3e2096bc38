"""Build, save and load a Scene3DLM as one Hugging Face-style folder. Loading never unpickles.

    MODEL/cl3dor_model.json          format, prompt version, the ModelConfig, where the LM's parts are
    MODEL/scene_encoder.safetensors  point encoder, grounding head, spatial transformer, projector, ...
    MODEL/lm/                        the base LM (save_pretrained, safetensors); absent when the base is
                                     the local folder model.lm.path and no stage trained it
    MODEL/lm_adapter/                the LoRA adapter (PEFT), when a stage attached one
    MODEL/tokenizer/                 the tokenizer

LoRA is never merged into the saved base: merging rounds, and a reloaded model must give the
trained model's outputs exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from cl3dor_ray.config import ModelConfig, from_dict
from cl3dor_ray.model.prompt import PROMPT_VERSION, has_tokenizer, load_tokenizer, train_tokenizer
from cl3dor_ray.model.scene3dlm import Scene3DLM, build_lm

FORMAT = "cl3dor-scene3dlm-v2"
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
    model = Scene3DLM(cfg, build_lm(cfg, len(tokenizer)), tokenizer)
    if cfg.point_encoder_weights:
        load_point_encoder(model, cfg.point_encoder_weights)
    return model


def load_point_encoder(model: Scene3DLM, path: str | Path) -> None:
    """Given point-encoder weights: safetensors, or a torch state dict read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"model.point_encoder_weights: {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ModelFolderError(f"model.point_encoder_weights: {path} holds no state dict")
    state = {k.removeprefix("point_encoder."): v for k, v in state.items()}
    try:
        model.point_encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFolderError(
            f"model.point_encoder_weights: {path} does not fit model.sa1/sa2/point_widths: {str(e).splitlines()[0]}"
        ) from None


def base_lm_saved(model: Scene3DLM) -> bool:
    """Whether the folder must carry the base LM's weights: it was built from config, or trained."""
    return not model.cfg.lm.path or model.lm_base_trained


def save_model(model: Scene3DLM, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    save_file(encoder, folder / "scene_encoder.safetensors")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    adapter = isinstance(model.lm, PeftModel)
    if adapter:
        model.lm.save_pretrained(folder / "lm_adapter")
    if base_lm_saved(model):
        base = copy.deepcopy(model.lm).unload() if adapter else model.lm  # the base weights, LoRA layers removed
        base.save_pretrained(folder / "lm", safe_serialization=True)
    meta = {
        "format": FORMAT,
        "prompt_version": PROMPT_VERSION,
        "model": dataclasses.asdict(model.cfg),
        "lm_base": "lm" if base_lm_saved(model) else "model.lm.path",
        "lm_adapter": adapter,
    }
    (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def read_model_folder(folder: str | Path) -> tuple[dict, ModelConfig]:
    """A model folder's checked metadata and its ModelConfig, without loading any weights."""
    meta_path = Path(folder) / MODEL_FILE
    if not meta_path.is_file():
        raise ModelFolderError(f"{folder} is not a cl3dor model folder: {MODEL_FILE} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelFolderError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("prompt_version") != PROMPT_VERSION:
        raise ModelFolderError(f"{meta_path}: prompt {meta.get('prompt_version')!r}; this code uses {PROMPT_VERSION!r}")
    # a folder saved before the head's nearest-to-anchor score has no weights for it, and one saved before
    # its "none" option was trained without one, as one saved before the answer hop or the subject match has none
    grounding = meta["model"].setdefault("grounding", {})
    for flag in ("nearest", "nearest_none", "answer_hop", "subject_match"):
        grounding.setdefault(flag, False)
    return meta, from_dict(ModelConfig, meta["model"], "model")


def load_model(folder: str | Path) -> Scene3DLM:
    folder = Path(folder)
    meta, cfg = read_model_folder(folder)
    tokenizer = load_tokenizer(folder / "tokenizer")
    base_dir = folder / "lm" if meta["lm_base"] == "lm" else cfg.lm.path
    lm = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, use_safetensors=True)
    if meta["lm_adapter"]:
        lm = PeftModel.from_pretrained(lm, folder / "lm_adapter")
    model = Scene3DLM(cfg, lm, tokenizer)
    model.lm_base_trained = meta["lm_base"] == "lm" and bool(cfg.lm.path)
    missing, unexpected = model.load_state_dict(load_file(folder / "scene_encoder.safetensors"), strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]
    if missing or unexpected:
        raise ModelFolderError(
            f"{folder / 'scene_encoder.safetensors'}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()
