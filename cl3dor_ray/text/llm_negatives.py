"""Hard negatives written by a local LLM, as CL3DOR has them: plausible wrong answers about this room.

`LLMNegatives` (registered as "llm") runs a Hugging Face causal LM from a local folder (the SmolLM2
folder `make smollm2` builds; on a GPU cluster any larger instruct model) inside a Ray Data actor,
so the model loads once per actor. For each question it puts the room's facts (its categories and the
colours said about it) and the correct answer in the prompt and asks for K other short answers of the
same kind, comma-separated, in one greedy generation. A scene's questions go through the LM together:
the part of the prompt they share (the instructions, a worked example, the room's facts) runs once and
its KV cache serves every question, batched.

The rules of text/negatives.py still hold: exactly K, distinct, never equal to a gold answer after
`normalize_answer`, and a function of (seed, sample_id): greedy decoding of a fixed prompt, with the
rule-based generator filling what the LLM did not give. A reply is kept only when it is of the kind
asked for (a colour for a colour, a category of the dataset for an object, a direction for one). Every negative keeps its kind: `llm_rewrite`
for the LLM's, the rule's own kind for a fallback. Yes/no and counts (whose only wrong answers are the
other word and the neighbouring numbers) and captions (long generations) are left to the rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cl3dor_ray.text.negatives import HardNegative, RuleBasedNegatives, SceneContext, Vocabulary
from cl3dor_ray.text.normalize import normalize_answer
from cl3dor_ray.text.vocab import COLOR_WORDS, RELATION_FLIPS

LLM_KIND = "llm_rewrite"
LLM_TASKS = ("qa", "sqa")
MAX_WORDS = 6  # a short answer, as ScanQA's and SQA3D's are
_SPLIT = re.compile(r"[,;\n]|\s\d+[.)]\s")
_STRIP = " \t\"'`*.-:!?()[]"
# A worked example per kind of answer, in a room of its own: the prompt shows the model what to write.
EXAMPLE_ROOM = (("sofa", "table", "tv", "plant", "lamp", "book"), ("black", "green", "white"))
EXAMPLES = {
    "colour": ("What color is the sofa?", "black", ("green", "white", "gray", "blue", "brown", "red")),
    "object": ("What is on the table?", "tv", ("plant", "lamp", "book", "sofa", "cup", "box")),
    "direction": ("Which way should you turn to face the tv?", "left", ("right", "behind you", "forward", "back")),
    "answer": ("Where is the plant?", "next to the sofa", ("on the table", "under the tv", "behind the lamp",
                                                        "beside the book", "in the corner", "on the floor")),
}
_QUESTION = "\x00QUESTION\x00"  # where the question goes in the chat template's text
KIND_WORDS = {"colour": "a colour", "object": "an object", "direction": "a direction", "answer": "a short answer"}


def answer_kind(answer: str, labels) -> str:
    """colour, object, direction or answer: what a wrong answer to this one must be."""
    norm = normalize_answer(answer)
    words = set(norm.split())
    if words & set(COLOR_WORDS):
        return "colour"
    if words & set(RELATION_FLIPS):
        return "direction"
    if any(re.search(rf"\b{re.escape(label)}\b", norm) for label in labels):
        return "object"
    return "answer"


def fits_kind(text: str, kind: str, labels) -> bool:
    """A reply is kept only when it is of the kind asked for: a colour names a colour, and so on."""
    return kind == "answer" or answer_kind(text, labels) == kind


def parse_reply(reply: str) -> list[str]:
    """"1. red, 2. blue; green." -> ["red", "blue", "green"]: the items, stripped, short ones only."""
    items = []
    for part in _SPLIT.split(" " + reply):
        part = re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", part).strip(_STRIP)
        if part and len(part.split()) <= MAX_WORDS:
            items.append(part)
    return items


class LLMNegatives:
    name = "llm"
    needs_actor = True  # holds a model: one per Ray Data actor

    def __init__(self, vocabulary: Vocabulary, llm_path: str | None = None, batch_size: int = 16,
                 max_new_tokens: int = 32):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not llm_path or not (Path(llm_path) / "config.json").is_file():
            raise ValueError(f"prepare.negative_llm_path {llm_path!r} is not a Hugging Face model folder "
                             f"(config.json missing); `make smollm2` builds the default one")
        self.rules = RuleBasedNegatives(vocabulary)
        self.labels = vocabulary.labels
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(llm_path, local_files_only=True, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(llm_path, local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def prompt(self, question: str, answer: str, scene: SceneContext, k: int) -> tuple[str, str]:
        """(shared, own): a worked example of the same kind of answer and the room's facts, which every
        question of that kind about the room shares, then this question (a 135M model copies the room's
        facts back without the example)."""
        kind = answer_kind(answer, self.labels)

        def facts(objects, colors):
            text = f"Objects in the room: {', '.join(objects) or 'unknown'}."
            return text + (f" Colours in the room: {', '.join(colors)}." if colors else "")

        def ask(q, a):
            return f"Question: {q}\nCorrect answer: {a}\nGive {k} different wrong answers, each {KIND_WORDS[kind]}, " \
                   "separated by commas."

        q, a, wrong = EXAMPLES[kind]
        messages = [{"role": "system", "content": "You write wrong but plausible answers for a quiz about a room."},
                    {"role": "user", "content": f"{facts(*EXAMPLE_ROOM)}\n{ask(q, a)}"},
                    {"role": "assistant", "content": ", ".join(wrong[:k])},
                    {"role": "user", "content": f"{facts(scene.labels, scene.colors)}\n{_QUESTION}"}]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n".join(m["content"] for m in messages) + "\n"
        shared, rest = text.split(_QUESTION)
        return shared, ask(question, answer) + rest

    def _replies(self, prompts: list[tuple[str, str]], max_new_tokens: int) -> list[str]:
        """Greedy replies. The shared part of the prompts runs through the LM once per distinct text (its
        KV cache then serves every question of the group), in batches of the questions' own parts."""
        import copy

        import torch

        replies: dict[int, str] = {}
        groups: dict[str, list[int]] = {}
        for i, (shared, _) in enumerate(prompts):
            groups.setdefault(shared, []).append(i)
        pad = self.tokenizer.pad_token_id
        for shared, members in groups.items():
            prefix = self.tokenizer(shared, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
            with torch.no_grad():
                cache = self.model(input_ids=prefix, use_cache=True).cache
            for start in range(0, len(members), self.batch_size):
                chunk = members[start: start + self.batch_size]
                own = [self.tokenizer(prompts[i][1], add_special_tokens=False).input_ids for i in chunk]
                width = max(map(len, own))
                ids = torch.full((len(chunk), prefix.shape[1] + width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                ids[:, : prefix.shape[1]], mask[:, : prefix.shape[1]] = prefix[0].cpu(), 1
                for row, tokens in enumerate(own):  # left-padded after the shared part; the gap is masked
                    ids[row, ids.shape[1] - len(tokens):], mask[row, ids.shape[1] - len(tokens):] = torch.tensor(tokens), 1
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(chunk))
                with torch.no_grad():
                    out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                              cache=batch_cache, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=pad)
                for i, text in zip(chunk, self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)):
                    replies[i] = text
        return [replies[i] for i in range(len(prompts))]

    @staticmethod
    def _asks_llm(task: str, answers: list[str]) -> bool:
        norm = normalize_answer(answers[0])
        return task in LLM_TASKS and norm not in ("yes", "no") and not norm.isdigit()

    def generate_many(self, requests: list[dict]) -> list[list[HardNegative] | ValueError]:
        """requests: {task, answers, scene, k, rng, question}. The LLM's answers first, the rules' after;
        a ValueError in place of a sample the vocabulary cannot give K negatives for."""
        asked = [i for i, r in enumerate(requests) if r["k"] and self._asks_llm(r["task"], r["answers"])]
        prompts = [self.prompt(requests[i]["question"], requests[i]["answers"][0], requests[i]["scene"], requests[i]["k"])
                   for i in asked]
        # about 6 tokens per short answer: a longer budget only lets the model repeat itself
        budget = min(self.max_new_tokens, 6 * max((requests[i]["k"] for i in asked), default=1))
        replies = dict(zip(asked, self._replies(prompts, budget)))
        out = []
        for i, r in enumerate(requests):
            seen = {normalize_answer(a) for a in r["answers"]}
            kind = answer_kind(r["answers"][0], self.labels)
            chosen: list[HardNegative] = []
            for text in parse_reply(replies.get(i, "")):
                norm = normalize_answer(text)
                if norm and norm not in seen and len(chosen) < r["k"] and fits_kind(text, kind, self.labels):
                    seen.add(norm)
                    chosen.append(HardNegative(text, LLM_KIND))
            # the rules fill the rest, each negative keeping its rule's kind
            try:
                out.append(self.rules.fill(chosen, r["task"], r["answers"], r["scene"], r["k"], r["rng"]))
            except ValueError as e:
                out.append(e)
        return out

    def generate(self, task, answers, scene, k, rng: np.random.Generator, question: str = ""):
        result = self.generate_many([{"task": task, "answers": answers, "scene": scene, "k": k, "rng": rng,
                                      "question": question}])[0]
        if isinstance(result, ValueError):
            raise result
        return result
