"""Hard negatives written by a local LLM, as CL3DOR has them: plausible wrong answers about this room.

`LLMNegatives` (registered as "llm") runs a Hugging Face causal LM from a local folder (the SmolLM2
folder `make smollm2` builds; on a GPU cluster any larger instruct model) inside a Ray Data actor,
so the model loads once per actor. For each question it puts the room's facts (its categories and the
colours said about it) and the correct answer in the prompt and asks for K other short answers of the
same kind, comma-separated, in one greedy generation. A scene's questions go through the LM together:
the part of the prompt they share (the instructions, a worked example, the room's facts) runs once and
its KV cache serves every question, batched.

The rules of text/negatives.py still hold: at most K, of the gold answer's kind (text/kinds.py),
distinct, never equal to a gold answer after `normalize_answer`, and a function of (seed, sample_id):
greedy decoding of a fixed prompt, with the rule-based generator filling what the LLM did not give. A
reply is kept only when it is of the gold's kind (a colour for a colour, a category of the dataset for
a category, a place for a place). Every negative keeps its kind: `llm_rewrite` for the LLM's, the
rule's own kind for a fallback. Yes/no, sides, counts (whose only wrong answers are the other word and
the neighbouring numbers) and captions (long generations) are left to the rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cl3dor_ray.text.kinds import CATEGORY, COLOUR, OTHER, PLACE, answer_kind
from cl3dor_ray.text.negatives import HardNegative, RuleBasedNegatives, SceneContext, Vocabulary
from cl3dor_ray.text.normalize import normalize_answer

LLM_KIND = "llm_rewrite"
LLM_TASKS = ("qa", "sqa")
# the kinds the LLM writes; the others (yes/no, sides, counts: a known wrong answer or two) and captions
# (long generations) are the rules'
LLM_KINDS = (COLOUR, CATEGORY, PLACE, OTHER)
MAX_WORDS = 6  # a short answer, as ScanQA's and SQA3D's are
_SPLIT = re.compile(r"[,;\n]|\s\d+[.)]\s")
_STRIP = " \t\"'`*.-:!?()[]"
# A worked example per kind of answer, in a room of its own: the prompt shows the model what to write.
EXAMPLE_ROOM = (("sofa", "table", "tv", "plant", "lamp", "book"), ("black", "green", "white"))
EXAMPLES = {
    "colour": ("What color is the sofa?", "black", ("green", "white", "gray", "blue", "brown", "red")),
    "object": ("What is on the table?", "tv", ("plant", "lamp", "book", "sofa", "cup", "box")),
    "answer": (
        "Where is the plant?",
        "next to the sofa",
        ("on the table", "under the tv", "behind the lamp", "beside the book", "in the corner", "on the floor"),
    ),
}
_QUESTION = "\x00QUESTION\x00"  # where the question goes in the chat template's text
KIND_WORDS = {"colour": "a colour", "object": "an object", "answer": "a short answer"}


def prompt_kind(kind: str) -> str:
    """Which worked example and wording the prompt uses for an answer of this kind (text/kinds.py)."""
    return {COLOUR: "colour", CATEGORY: "object"}.get(kind, "answer")


def parse_reply(reply: str) -> list[str]:
    """ "1. red, 2. blue; green." -> ["red", "blue", "green"]: the items, stripped, short ones only."""
    items = []
    for part in _SPLIT.split(" " + reply):
        part = re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", part).strip(_STRIP)
        if part and len(part.split()) <= MAX_WORDS:
            items.append(part)
    return items


def of_gold_kind(items: list[str], task: str, answers: list[str], labels: list[str], k: int) -> list[HardNegative]:
    """The first k of the LLM's items that are of the gold answer's kind (text/kinds.py), not a gold answer
    and not repeated; the rest are dropped, so a colour question never gets "the chair" from the LLM."""
    seen = {normalize_answer(a) for a in answers}
    kind = answer_kind(answers[0], labels, task)
    chosen: list[HardNegative] = []
    for text in items:
        norm = normalize_answer(text)
        if norm and norm not in seen and len(chosen) < k and answer_kind(text, labels, task) == kind:
            seen.add(norm)
            chosen.append(HardNegative(text, LLM_KIND))
    return chosen


class LLMNegatives:
    name = "llm"
    needs_actor = True  # holds a model: one per Ray Data actor

    def __init__(
        self, vocabulary: Vocabulary, llm_path: str | None = None, batch_size: int = 16, max_new_tokens: int = 32
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not llm_path or not (Path(llm_path) / "config.json").is_file():
            raise ValueError(
                f"prepare.negative_llm_path {llm_path!r} is not a Hugging Face model folder "
                f"(config.json missing); `make smollm2` builds the default one"
            )
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
        kind = prompt_kind(answer_kind(answer, self.labels))

        def facts(objects, colors):
            text = f"Objects in the room: {', '.join(objects) or 'unknown'}."
            return text + (f" Colours in the room: {', '.join(colors)}." if colors else "")

        def ask(q, a):
            return (
                f"Question: {q}\nCorrect answer: {a}\nGive {k} different wrong answers, each {KIND_WORDS[kind]}, "
                "separated by commas."
            )

        q, a, wrong = EXAMPLES[kind]
        messages = [
            {"role": "system", "content": "You write wrong but plausible answers for a quiz about a room."},
            {"role": "user", "content": f"{facts(*EXAMPLE_ROOM)}\n{ask(q, a)}"},
            {"role": "assistant", "content": ", ".join(wrong[:k])},
            {"role": "user", "content": f"{facts(scene.labels, scene.colors)}\n{_QUESTION}"},
        ]
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
                chunk = members[start : start + self.batch_size]
                own = [self.tokenizer(prompts[i][1], add_special_tokens=False).input_ids for i in chunk]
                width = max(map(len, own))
                ids = torch.full((len(chunk), prefix.shape[1] + width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                ids[:, : prefix.shape[1]], mask[:, : prefix.shape[1]] = prefix[0].cpu(), 1
                for row, tokens in enumerate(own):  # left-padded after the shared part; the gap is masked
                    ids[row, ids.shape[1] - len(tokens) :], mask[row, ids.shape[1] - len(tokens) :] = (
                        torch.tensor(tokens),
                        1,
                    )
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(chunk))
                with torch.no_grad():
                    out = self.model.generate(
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        cache=batch_cache,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=pad,
                    )
                for i, text in zip(
                    chunk, self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
                ):
                    replies[i] = text
        return [replies[i] for i in range(len(prompts))]

    def _asks_llm(self, task: str, answers: list[str]) -> bool:
        return task in LLM_TASKS and answer_kind(answers[0], self.labels, task) in LLM_KINDS

    def generate_many(self, requests: list[dict]) -> list[list[HardNegative]]:
        """requests: {task, answers, scene, k, rng, question}. The LLM's answers first, the rules' after."""
        asked = [i for i, r in enumerate(requests) if r["k"] and self._asks_llm(r["task"], r["answers"])]
        prompts = [
            self.prompt(requests[i]["question"], requests[i]["answers"][0], requests[i]["scene"], requests[i]["k"])
            for i in asked
        ]
        # about 6 tokens per short answer: a longer budget only lets the model repeat itself
        budget = min(self.max_new_tokens, 6 * max((requests[i]["k"] for i in asked), default=1))
        replies = dict(zip(asked, self._replies(prompts, budget)))
        out = []
        for i, r in enumerate(requests):
            chosen = of_gold_kind(parse_reply(replies.get(i, "")), r["task"], r["answers"], self.labels, r["k"])
            # the rules fill the rest, each negative keeping its rule's kind
            out.append(self.rules.fill(chosen, r["task"], r["answers"], r["scene"], r["k"], r["rng"]))
        return out

    def generate(self, task, answers, scene, k, rng: np.random.Generator, question: str = ""):
        return self.generate_many(
            [{"task": task, "answers": answers, "scene": scene, "k": k, "rng": rng, "question": question}]
        )[0]
