"""The negative generators by name (`prepare.negative_generator`): what the data stage builds in each
Ray Data task or actor."""

from __future__ import annotations

from cl3dor_ray.text.negatives import NegativeGenerator, RandomNegatives, RuleBasedNegatives, Vocabulary


def _llm(vocabulary: Vocabulary, **options) -> NegativeGenerator:
    from cl3dor_ray.text.llm_negatives import LLMNegatives  # torch and transformers: only where it runs

    return LLMNegatives(vocabulary, **options)


_llm.needs_actor = True  # it holds a model: Ray Data runs it in a pool of actors
GENERATORS: dict = {"rule": RuleBasedNegatives, "random": RandomNegatives, "llm": _llm}


def make_generator(name: str, vocabulary: Vocabulary, **options) -> NegativeGenerator:
    """`options` go to generators that take them (the LLM's folder); the rule-based ones take none."""
    if name not in GENERATORS:
        raise ValueError(f"unknown negative generator {name!r}; expected one of {sorted(GENERATORS)}")
    return GENERATORS[name](vocabulary, **options) if name == "llm" else GENERATORS[name](vocabulary)
