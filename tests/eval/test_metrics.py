import json

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from cl3dor_ray.eval.metrics import caption_metrics, exact_match, exact_match_refined, pope_metrics

PREDS = {"a": "a brown wooden table .", "b": "the red chair is next to the desk", "c": "two"}
REFS = {
    "a": ["a brown table", "there is a wooden table in the room"],
    "b": ["a red chair beside the desk"],
    "c": ["2", "two chairs"],
}


def test_caption_metrics_equal_calling_pycocoevalcap_directly():
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in PREDS.items()})
    expected = {
        "bleu4": Bleu(4).compute_score(gts, res)[0][3],
        "meteor": Meteor().compute_score(gts, res)[0],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }
    got = caption_metrics(PREDS, REFS)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0 < got["cider"] and 0 < got["meteor"] < 1
    # a split that reports CIDEr alone computes CIDEr alone, the same figure
    assert caption_metrics(PREDS, REFS, scorers=("cider",)) == {"cider": pytest.approx(got["cider"], rel=1e-12)}


@pytest.mark.parametrize(
    "pred, golds, em, refined",
    [
        ("The brown table.", ["brown table"], True, True),
        ("two", ["2"], True, True),
        ("brown", ["dark brown"], False, True),  # prediction inside the answer
        ("on the wooden table", ["table"], False, True),  # answer inside the prediction
        ("chair", ["table", "desk"], False, False),
        ("", ["table"], False, False),  # an empty prediction contains nothing
        ("the", ["a"], False, False),  # nor does one that the normaliser empties, whatever the answer
        # v2, LEO's conventions for ScanQA's answers
        ("thirteen", ["13"], True, True),
        ("twenty-three", ["23"], True, True),
        ("trashcan", ["trash can"], False, True),  # refined across a missing space
        ("left", ["letf"], True, True),  # ScanQA's typos, corrected
        ("3 oclock", ["three o'clock"], True, True),
        ("backward", ["backwards"], True, True),
        ("mat", ["mat2"], True, True),  # a digit stuck to a word
    ],
)
def test_exact_match_and_refined(pred, golds, em, refined):
    assert exact_match(pred, golds) is em
    assert exact_match_refined(pred, golds) is refined


def test_pope_metrics_on_a_known_confusion_matrix():
    # tp = 3, fn = 1, fp = 2, tn = 4
    labels = ["yes"] * 4 + ["no"] * 6
    preds = ["yes", "yes", "yes", "no", "yes", "Yes.", "no", "no", "no", "no"]
    m = pope_metrics(preds, labels)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert m["yes_ratio"] == pytest.approx(5 / 10)


def test_metrics_split_by_object_size():
    from cl3dor_ray.eval.metrics import compute_metrics

    def row(i, task, pred, answers, obj, qtype="color"):
        return {
            "sample_id": f"s{i}",
            "task": task,
            "scene_id": "scene0000_00",
            "question": "?",
            "prediction": pred,
            "answers": answers,
            "question_type": qtype,
            "object_ids": [obj],
        }

    sizes = {("scene0000_00", 1): 0.09, ("scene0000_00", 2): 1.4}  # a cup, a table
    rows = [
        row(0, "qa", "red", ["red"], 1),
        row(1, "qa", "blue", ["red"], 1),
        row(2, "qa", "brown", ["brown"], 2),
        row(3, "caption", "a red cup", ["this is a red cup"], 1),
        row(4, "caption", "a brown table", ["this is a brown table"], 2),
    ]
    m = compute_metrics(rows, sizes)
    assert (m["scanqa.em.small_objects"], m["scanqa.n.small_objects"]) == (0.5, 2)
    assert (m["scanqa.em.large_objects"], m["scanqa.n.large_objects"]) == (1.0, 1)
    assert m["scan2cap.n.small_objects"] == m["scan2cap.n.large_objects"] == 1
    assert "scan2cap.cider.small_objects" in m
    assert "scanqa.em.small_objects" not in compute_metrics(rows)  # no sizes known: no split


def test_sqa3d_em_and_refined_by_first_word_with_its_table():
    from cl3dor_ray.eval.metrics import compute_metrics
    from cl3dor_ray.eval.report import sqa_table

    def row(i, question, pred, answers):
        from cl3dor_ray.text.sqa3d import question_type

        return {
            "sample_id": f"q{i}",
            "task": "sqa",
            "scene_id": "scene0000_00",
            "question": question,
            "prediction": pred,
            "answers": answers,
            "question_type": question_type(question),
            "object_ids": [],
        }

    rows = [
        row(0, "What is on my left?", "trash can", ["trashcan"]),  # refined only (a missing space)
        row(1, "What is behind me?", "chair", ["chair"]),
        row(2, "Is the door in front of me?", "yes", ["no"]),
        row(3, "How many chairs are in front of me?", "two", ["2"]),  # number words: exact
        row(4, "Where is the sink?", "left", ["to the left"]),
    ]  # "other"; refined only
    m = compute_metrics(rows)
    assert (m["sqa3d.em"], m["sqa3d.em_refined"], m["sqa3d.n"]) == (0.4, 0.8, 5)
    assert (m["sqa3d.em.what"], m["sqa3d.em_refined.what"], m["sqa3d.n.what"]) == (0.5, 1.0, 2)
    assert (m["sqa3d.em.is"], m["sqa3d.em.how"], m["sqa3d.em.other"], m["sqa3d.em_refined.other"]) == (0, 1, 0, 1)
    table = sqa_table({**m, "prior.sqa3d.em": 0.25, "prior.sqa3d.em.what": 0.0})
    assert "| what | 2 | 0.500 | 1.000 | 0.000 |" in table and "| all | 5 | 0.400 | 0.800 | 0.250 |" in table
    assert sqa_table({"scanqa.em": 0.3}) == []


def test_language_prior_answers_from_the_question_template(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cl3dor_ray.eval.prior import language_prior

    def qa(split, question, answer, qtype):
        return {
            "sample_id": question,
            "split": split,
            "task": "qa",
            "question": question,
            "answers": [answer],
            "question_type": qtype,
        }

    samples = [
        qa("train", "What color is the cup?", "red", "color"),
        qa("train", "What color is the book?", "red", "color"),
        qa("train", "What color is the chair?", "blue", "color"),
        qa("train", "How many cups are on the table?", "2", "counting"),
        qa("val", "What color is the lamp?", "red", "color"),  # template seen: majority "red" -> hit
        qa("val", "What color is the bed?", "white", "color"),  # same template -> "red" -> miss
        qa("val", "How many chairs are in the room?", "2", "counting"),
    ]  # unseen template -> type -> "2"
    (tmp_path / "samples").mkdir()
    (tmp_path / "objects").mkdir()
    pq.write_table(pa.Table.from_pylist(samples), tmp_path / "samples" / "part.parquet")
    pq.write_table(
        pa.table({"label": ["cup", "book", "chair", "lamp", "bed", "table"]}), tmp_path / "objects" / "part.parquet"
    )
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"points_per_object": 1}}))  # a complete folder
    prior = language_prior(tmp_path)
    assert prior["prior.scanqa.em"] == pytest.approx(2 / 3)
    assert prior["prior.scanqa.em.color"] == 0.5 and prior["prior.scanqa.em.counting"] == 1.0


def test_grounded_table_puts_em_beside_prior_and_swap_and_says_when_the_probe_did_not_run():
    from cl3dor_ray.eval.report import grounded_table

    metrics = {
        "scanqa.em": 0.6,
        "scanqa.n": 10,
        "scanqa.em.color": 0.8,
        "scanqa.n.color": 5,
        "prior.scanqa.em": 0.3,
        "prior.scanqa.em.color": 0.2,
    }
    lines = grounded_table(metrics)
    assert "| color | 5 | 0.800 | 0.200 |  |" in lines and "| all | 10 | 0.600 | 0.300 |  |" in lines
    assert any("Scene-swap probe not run" in line for line in lines)
    swapped = grounded_table(
        {
            **metrics,
            "grounding.scene_swap.em": 0.25,
            "grounding.scene_swap.em.color": 0.1,
            "grounding.scene_swap.drop": 0.35,
            "grounding.scene_swap.changed": 0.5,
        }
    )
    assert "| color | 5 | 0.800 | 0.200 | 0.100 |" in swapped
    assert any("**0.350**" in line for line in swapped) and not any("not run" in line for line in swapped)


def test_scene_swap_probe_on_a_hand_built_case():
    from cl3dor_ray.eval.probe import swap_metrics, swap_partners

    assert swap_partners(["scene0002_00", "scene0000_00", "scene0001_00", "scene0000_00"]) == {
        "scene0000_00": "scene0001_00",
        "scene0001_00": "scene0002_00",
        "scene0002_00": "scene0000_00",
    }
    with pytest.raises(ValueError, match="at least 2 validation scenes"):
        swap_partners(["scene0000_00"])

    def row(i, qtype, pred, gold):
        return {"sample_id": f"s{i}", "question_type": qtype, "answers": [gold], "prediction": pred}

    # true room: 3 of 4 right; swapped room: colour answers change (one of them becomes wrong), counting stays
    true = [
        row(0, "color", "red", "red"),
        row(1, "color", "blue", "blue"),
        row(2, "counting", "2", "2"),
        row(3, "counting", "1", "3"),
    ]
    swapped = [
        row(0, "color", "green", "red"),
        row(1, "color", "Blue.", "blue"),
        row(2, "counting", "2", "2"),
        row(3, "counting", "1", "3"),
        row(9, "color", "red", "red"),
    ]  # s9 has no true-room answer
    m = swap_metrics(true, swapped)
    assert m["grounding.scene_swap.n"] == 4
    assert m["grounding.scene_swap.em"] == pytest.approx(2 / 4)
    assert m["grounding.scene_swap.drop"] == pytest.approx(3 / 4 - 2 / 4)
    assert m["grounding.scene_swap.changed"] == pytest.approx(1 / 4)  # "Blue." normalises to "blue"
    assert m["grounding.scene_swap.em.color"] == pytest.approx(1 / 2)
    assert m["grounding.scene_swap.em.color.drop"] == pytest.approx(1 / 2)
    assert m["grounding.scene_swap.em.counting.drop"] == 0
    assert swap_metrics(true, []) == {}
