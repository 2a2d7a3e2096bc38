"""The prompt template and the tokenizer.

The fixed template (PROMPT_VERSION), with [obj_i] the object-token embeddings (not vocabulary
tokens), relevant objects first:

    <s>SYSTEM: You are an assistant situated in a 3D scene. SCENE:[obj_1]...[obj_N] USER: {instruction} ASSISTANT: {answer}</s>

Everything up to "ASSISTANT:" is the prefix that the answer and all its hard negatives share.
When the LM folder brings no tokenizer, a byte-level BPE is trained from the corpus with
`tokenizers` (nothing is downloaded) and saved in Hugging Face format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PROMPT_VERSION = "cl3dor-prompt-v1"
SYSTEM = "You are an assistant situated in a 3D scene."
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def before_objects() -> str:
    return f"SYSTEM: {SYSTEM} SCENE:"


def after_objects(instruction: str) -> str:
    return f" USER: {instruction} ASSISTANT:"


def answer_text(answer: str) -> str:
    return f" {answer}"


def template_texts() -> list[str]:
    """Template words, so a corpus-trained tokenizer encodes them compactly."""
    return [before_objects(), after_objects("")]


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus) + template_texts() * 10, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer saved in Hugging Face format in a local folder (never fetched from a hub)."""
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:  # many LM tokenizers have none; padding is always masked anyway
        tok.pad_token = tok.eos_token
    return tok


def has_tokenizer(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
