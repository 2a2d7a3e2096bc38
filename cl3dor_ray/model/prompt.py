"""The prompt template and the tokenizer.

With [obj_i] the object-token embeddings (not vocabulary tokens), marked objects first. An LM
whose tokenizer has a chat template gets the prompt in that template (LEO does the same with
Vicuna's "USER: ... ASSISTANT:"), the objects at the start of the user's turn, and answers end with
its end-of-turn token; e.g. SmolLM2:

    <|im_start|>system\nYou are an assistant situated in a 3D scene.<|im_end|>\n<|im_start|>user\nSCENE:[obj_1]...[obj_N]
    {instruction}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>

Without a chat template (a tokenizer trained from the corpus) it is the fixed PROMPT_VERSION one:

    <s>SYSTEM: You are an assistant situated in a 3D scene. SCENE:[obj_1]...[obj_N] USER: {instruction} ASSISTANT: {answer}</s>

Everything before the answer is the prefix that the answer and all its hard negatives share.
When the LM folder brings no tokenizer, a byte-level BPE is trained from the corpus with
`tokenizers` (nothing is downloaded) and saved in Hugging Face format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PROMPT_VERSION = "cl3dor-prompt-v2"
SYSTEM = "You are an assistant situated in a 3D scene."
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


_OBJECTS, _QUESTION, _ANSWER = "\x00OBJECTS\x00", "\x00QUESTION\x00", "\x00ANSWER\x00"


@dataclass(frozen=True)
class Prompt:
    """The text around the object tokens, the instruction and the answer."""

    before: str  # up to the object tokens
    between: str  # object tokens -> instruction
    after: str  # instruction -> answer
    answer_prefix: str  # before the answer's words (a space in the plain template)
    bos: bool  # start with the tokenizer's BOS token

    def instruction(self, text: str) -> str:
        """The instruction as the model reads it; the focus tokens and then `after` follow it."""
        return f"{self.between}{text}"

    def answer(self, text: str) -> str:
        return f"{self.answer_prefix}{text}"


PLAIN = Prompt(f"SYSTEM: {SYSTEM} SCENE:", " USER: ", " ASSISTANT:", " ", True)


def prompt_for(tokenizer) -> Prompt:
    """The tokenizer's chat template with placeholders split out, or the plain template without one."""
    if not getattr(tokenizer, "chat_template", None):
        return PLAIN
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"SCENE:{_OBJECTS}\n{_QUESTION}"},
        {"role": "assistant", "content": _ANSWER},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    before, rest = text.split(_OBJECTS)
    between, rest = rest.split(_QUESTION)
    after = rest.split(_ANSWER)[0]
    return Prompt(before, between, after, "", False)


def template_texts() -> list[str]:
    """Template words, so a corpus-trained tokenizer encodes them compactly."""
    return [PLAIN.before, PLAIN.instruction(""), PLAIN.after]


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
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
