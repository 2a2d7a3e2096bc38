import numpy as np
import pytest

from cl3dor_ray.text.generators import make_generator
from cl3dor_ray.text.negatives import FALLBACK_KINDS, RuleBasedNegatives, SceneContext, Vocabulary, sample_rng
from cl3dor_ray.text.normalize import normalize_answer

VOCAB = Vocabulary(("table", "desk", "chair", "cup", "book", "trash can", "bed", "lamp"),
                   ("yes", "no", "1", "2", "red", "table", "left", "on the desk"))
SCENE = SceneContext("scene0000_00", ("table", "cup", "chair"), ("red", "brown"),
                     ("brown", "on the table", "3", "yes", "cup"))


def negatives(task, answers, k=4, seed=0, sample_id="s"):
    return RuleBasedNegatives(VOCAB).generate(task, answers, SCENE, k, sample_rng(seed, sample_id))


@pytest.mark.parametrize("task, answers", [
    ("qa", ["brown"]), ("qa", ["on the table"]), ("qa", ["2"]), ("qa", ["0"]), ("existence", ["yes"]),
    ("qa", ["cup"]), ("qa", ["left"]), ("qa", ["The Cup", "cup", "a cup"]), ("qa", ["two"]),
    ("caption", ["this is a small red cup. it is on the table.", "there is a red cup on the table."]),
])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_exactly_k_distinct_negatives_never_a_gold_answer(task, answers, k):
    negs = negatives(task, answers, k)
    assert len(negs) == k
    normed = [normalize_answer(n.text) for n in negs]
    assert len(set(normed)) == k
    assert not set(normed) & {normalize_answer(a) for a in answers}


def test_hardest_kinds_come_first():
    assert [n.kind for n in negatives("qa", ["cup"], k=2)] == ["category_swap_present"] * 2
    assert {n.text for n in negatives("qa", ["cup"], k=2)} == {"table", "chair"}  # both really in the room
    assert negatives("qa", ["cup"], k=3)[2].kind == "category_swap_absent"
    assert [(n.text, n.kind) for n in negatives("existence", ["yes"], k=1)] == [("no", "existence_flip")]
    assert negatives("qa", ["left"], k=1)[0].text == "right"
    assert {n.text for n in negatives("qa", ["on the table"], k=3)} >= {"under the table"}
    counts = negatives("qa", ["2"], k=2)
    assert {n.text for n in counts} == {"1", "3"} and {n.kind for n in counts} == {"count_change"}
    assert negatives("qa", ["brown"], k=1)[0].text == "red"  # the other colour said about this room


def test_falls_back_to_easier_kinds_and_records_them():
    negs = negatives("existence", ["yes"], k=6)
    assert negs[0].kind == "existence_flip"
    assert all(n.kind in FALLBACK_KINDS for n in negs[1:])


def test_caption_corruption_changes_one_fact():
    ref = "this is a small red cup. it is on the table."
    for n in negatives("caption", [ref], k=6):
        assert n.kind == "caption_corruption"
        changed = [(a, b) for a, b in zip(ref.split(), n.text.split()) if a != b]
        assert len(n.text.split()) == len(ref.split()) and len(changed) == 1, n.text


def test_deterministic_per_seed_and_sample():
    a = negatives("qa", ["cup"], k=4, seed=1, sample_id="q1")
    assert a == negatives("qa", ["cup"], k=4, seed=1, sample_id="q1")
    others = [negatives("qa", ["cup"], k=4, seed=s, sample_id="q1") for s in range(2, 8)]
    assert any(o != a for o in others)


def test_generator_registry_names_the_choices():
    assert make_generator("rule", VOCAB).name == "rule"
    with pytest.raises(ValueError, match="unknown negative generator 'gpt'; expected one of \\['llm', 'random', 'rule'\\]"):
        make_generator("gpt", VOCAB)
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):  # llm needs its model's folder
        make_generator("llm", VOCAB, llm_path="/nonexistent")


def test_too_small_vocabulary_is_a_clear_error():
    tiny = RuleBasedNegatives(Vocabulary((), ()))
    with pytest.raises(ValueError, match="only 1 distinct negatives"):
        tiny.generate("existence", ["yes"], SceneContext("s", ()), 3, np.random.default_rng(0))


def test_random_negatives_are_other_samples_answers_of_the_same_task():
    vocab = Vocabulary(VOCAB.labels, VOCAB.answers, ("this is a red cup.", "this is a bed.", "there is a lamp."))
    gen = make_generator("random", vocab)
    qa = gen.generate("qa", ["red"], SCENE, 4, sample_rng(0, "q"))
    assert len(qa) == 4 and {n.kind for n in qa} == {"random_answer"}
    assert {n.text for n in qa} <= set(VOCAB.answers) - {"red"}
    caps = gen.generate("caption", ["this is a bed."], SCENE, 2, sample_rng(0, "c"))
    assert {n.text for n in caps} == {"this is a red cup.", "there is a lamp."}
    assert gen.generate("qa", ["red"], SCENE, 4, sample_rng(0, "q")) == qa  # a function of (seed, sample_id)
    with pytest.raises(ValueError, match="need K = 3"):
        gen.generate("caption", ["this is a bed."], SCENE, 3, sample_rng(0, "c"))
