import numpy as np
import pytest

from cl3dor_ray.text.generators import make_generator
from cl3dor_ray.text.kinds import answer_kind
from cl3dor_ray.text.negatives import HardNegative, RuleBasedNegatives, SceneContext, Vocabulary, sample_rng
from cl3dor_ray.text.normalize import normalize_answer

LABELS = ("table", "desk", "chair", "cup", "book", "trash can", "bed", "lamp")
VOCAB = Vocabulary(
    LABELS,
    ("yes", "no", "1", "2", "5", "red", "table", "left", "on the desk", "in the corner", "by the window", "above"),
)
SCENE = SceneContext(
    "scene0000_00",
    ("table", "cup", "chair"),
    ("red", "brown"),
    ("brown", "on the table", "3", "yes", "cup", "near the wall"),
)


def negatives(task, answers, k=4, seed=0, sample_id="s", generator="rule"):
    return make_generator(generator, VOCAB).generate(task, answers, SCENE, k, sample_rng(seed, sample_id))


@pytest.mark.parametrize(
    "task, answers, kind",
    [
        ("qa", ["brown"], "colour"),
        ("qa", ["on the table"], "place"),
        ("qa", ["2"], "count"),
        ("qa", ["0"], "count"),
        ("existence", ["yes"], "yes/no"),
        ("qa", ["cup"], "category"),
        ("qa", ["left"], "side"),
        ("qa", ["above"], "above/below"),
        ("qa", ["far"], "near/far"),
        ("qa", ["The Cup", "cup", "a cup"], "category"),
        ("qa", ["two"], "count"),
        ("qa", ["in the corner of the room"], "other"),
        ("caption", ["this is a small red cup. it is on the table.", "there is a red cup on the table."], "caption"),
    ],
)
@pytest.mark.parametrize("generator", ["rule", "random"])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_at_most_k_distinct_negatives_of_the_gold_kind_never_a_gold_answer(task, answers, kind, generator, k):
    if generator == "random" and task == "caption":
        pytest.skip("the random control draws captions from the vocabulary's captions, which VOCAB has none of")
    negs = negatives(task, answers, k, generator=generator)
    assert 1 <= len(negs) <= k
    normed = [normalize_answer(n.text) for n in negs]
    assert len(set(normed)) == len(negs)
    assert not set(normed) & {normalize_answer(a) for a in answers}
    assert answer_kind(answers[0], LABELS, task) == kind
    assert [answer_kind(n.text, LABELS, task) for n in negs] == [kind] * len(negs), negs


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("yes", ["no"]),
        ("no", ["yes"]),
        ("left", ["right"]),
        ("right", ["left"]),
        ("above", ["below"]),
        ("far", ["near"]),
    ],
)
def test_a_two_word_kind_has_one_negative_the_other_word(answer, expected):
    assert [n.text for n in negatives("qa", [answer], k=4)] == expected
    assert [n.text for n in negatives("qa", [answer], k=4, generator="random")] == expected


def test_hardest_first_and_from_the_room():
    assert [n.kind for n in negatives("qa", ["cup"], k=2)] == ["category_swap_present"] * 2
    assert {n.text for n in negatives("qa", ["cup"], k=2)} == {"table", "chair"}  # both really in the room
    assert negatives("qa", ["cup"], k=3)[2].kind == "category_swap_absent"
    assert [(n.text, n.kind) for n in negatives("existence", ["yes"], k=1)] == [("no", "existence_flip")]
    assert {n.text for n in negatives("qa", ["on the table"], k=3)} >= {"under the table"}
    counts = negatives("qa", ["2"], k=2)
    assert {n.text for n in counts} == {"1", "3"} and {n.kind for n in counts} == {"count_change"}
    assert {n.text for n in negatives("qa", ["0"], k=4)} == {"1", "2"}  # no negative counts
    assert negatives("qa", ["brown"], k=1)[0].text == "red"  # the other colour said about this room
    assert "grey" not in {n.text for n in negatives("qa", ["gray"], k=20)}  # one colour, two spellings
    # an answer with nothing to swap falls back to the room's answers of its kind, then the dataset's
    other = negatives("qa", ["in the corner of the room"], k=4)
    assert [(n.text, n.kind) for n in other][:1] == [("near the wall", "scene_answer")]
    assert {n.text for n in other[1:]} <= {"in the corner", "by the window"}


def test_no_filler_of_another_kind_for_a_closed_question():
    """The fillers that used to pad a yes/no question to K (`on the desk`, `cup`, `6`) are gone."""
    negs = negatives("sqa", ["yes"], k=4)
    assert [n.text for n in negs] == ["no"]


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
    with pytest.raises(
        ValueError, match="unknown negative generator 'gpt'; expected one of \\['llm', 'random', 'rule'\\]"
    ):
        make_generator("gpt", VOCAB)
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):  # llm needs its model's folder
        make_generator("llm", VOCAB, llm_path="/nonexistent")


def test_a_category_with_no_other_category_has_no_negative():
    alone = RuleBasedNegatives(Vocabulary(("cup",), ()))
    assert alone.generate("qa", ["cup"], SceneContext("s", ("cup",)), 3, np.random.default_rng(0)) == []


def test_fill_keeps_the_other_generators_negatives_and_tops_up_of_the_gold_kind():
    rules = RuleBasedNegatives(VOCAB)
    chosen = [HardNegative("purple", "llm_rewrite")]
    negs = rules.fill(chosen, "qa", ["brown"], SCENE, 3, sample_rng(0, "s"))
    assert negs[0] == chosen[0] and len(negs) == 3 and negs[1].text == "red"
    assert {answer_kind(n.text, LABELS) for n in negs} == {"colour"}


def test_random_negatives_are_of_the_gold_kind_but_blind_to_the_room():
    vocab = Vocabulary(VOCAB.labels, VOCAB.answers, ("this is a red cup.", "this is a bed.", "there is a lamp."))
    gen = make_generator("random", vocab)
    colours = gen.generate("qa", ["red"], SCENE, 4, sample_rng(0, "q"))
    assert len(colours) == 4 and {n.kind for n in colours} == {"random_answer"}
    assert {answer_kind(n.text, LABELS) for n in colours} == {"colour"}
    assert gen.generate("qa", ["red"], SCENE, 4, sample_rng(0, "q")) == colours  # a function of (seed, sample_id)
    caps = gen.generate("caption", ["this is a bed."], SCENE, 2, sample_rng(0, "c"))
    assert {n.text for n in caps} == {"this is a red cup.", "there is a lamp."}
    # the rule generator takes the categories of the room first; the control draws them from all of them
    firsts = {gen.generate("qa", ["cup"], SCENE, 1, sample_rng(0, f"q{i}"))[0].text for i in range(40)}
    assert firsts - set(SCENE.labels)
