"""Hard negatives written by the real SmolLM2 (the folder `make test` converts), in Ray Data actors."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cl3dor_ray.config import PrepareConfig
from cl3dor_ray.data.prepare import prepare
from cl3dor_ray.text.kinds import answer_kind
from cl3dor_ray.text.llm_negatives import LLM_KIND, LLM_KINDS, of_gold_kind, parse_reply, prompt_kind
from cl3dor_ray.text.normalize import normalize_answer

SMOLLM2 = Path(".cache/models/SmolLM2-135M-Instruct")
LABELS = ("chair", "trash can", "table", "lamp")
K = 3


@pytest.mark.parametrize(
    "reply, items",
    [
        ("blue, white, green", ["blue", "white", "green"]),
        ("1. red 2. blue 3. a very long answer that goes on and on and on", ["red", "blue"]),
        ('"left"; behind you.\nforward!', ["left", "behind you", "forward"]),
        ("", []),
    ],
)
def test_parse_reply(reply, items):
    assert parse_reply(reply) == items


def test_the_llm_writes_open_kinds_and_its_prompt_asks_for_the_gold_kind():
    assert set(LLM_KINDS) == {"colour", "category", "place", "other"}  # yes/no, sides, counts: the rules'
    assert prompt_kind(answer_kind("dark brown", LABELS)) == "colour"
    assert prompt_kind(answer_kind("the lamp", LABELS)) == "object"
    assert prompt_kind(answer_kind("next to the table", LABELS)) == "answer"


def test_what_the_llm_writes_is_kept_only_when_it_is_of_the_gold_answers_kind():
    """The filter between the LLM's reply and the sample: other kinds, the gold answer itself and repeats go."""
    reply = parse_reply("1. blue, 2. the chair, 3. Red, 4. blue, 5. on the desk, 6. green, 7. white")
    kept = of_gold_kind(reply, "qa", ["red"], LABELS, 3)
    assert [n.text for n in kept] == ["blue", "green", "white"] and {n.kind for n in kept} == {LLM_KIND}
    assert [n.text for n in of_gold_kind(reply, "qa", ["red"], LABELS, 1)] == ["blue"]
    places = of_gold_kind(["under the chair", "blue", "next to the lamp"], "qa", ["on the table"], LABELS, 4)
    assert [n.text for n in places] == ["under the chair", "next to the lamp"]


@pytest.fixture(scope="module")
def llm_prepared(synth_dir, local_ray, tmp_path_factory):
    """One room with a dozen ScanQA and a few SQA3D questions, its negatives written by SmolLM2."""
    if not (SMOLLM2 / "config.json").is_file():
        pytest.skip("no SmolLM2 folder: `make smollm2` (which `make test` runs) converts it")
    raw = tmp_path_factory.mktemp("llm_raw")
    scene = "scene0000_00"
    shutil.copytree(synth_dir / "scans" / scene, raw / "scans" / scene)
    (raw / "annotations").mkdir()
    qa = [
        r
        for r in json.loads((synth_dir / "annotations" / "ScanQA_v1.0_train.json").read_text())
        if r["scene_id"] == scene
    ][:12]
    (raw / "annotations" / "ScanQA_v1.0_train.json").write_text(json.dumps(qa))
    for name, key in (
        ("v1_balanced_questions_train_scannetv2.json", "questions"),
        ("v1_balanced_sqa_annotations_train_scannetv2.json", "annotations"),
    ):
        records = [r for r in json.loads((synth_dir / "annotations" / name).read_text())[key] if r["scene_id"] == scene]
        (raw / "annotations" / name).write_text(json.dumps({key: records[:6]}))
    out = tmp_path_factory.mktemp("llm_prepared")
    summary = prepare(
        raw,
        out,
        PrepareConfig(
            points_per_object=32, negatives=K, workers=2, negative_generator="llm", negative_llm_path=str(SMOLLM2)
        ),
    )
    return out, summary


@pytest.mark.slow
def test_llm_negatives_keep_the_rules_and_report_their_share(llm_prepared):
    out, summary = llm_prepared
    rows = pq.read_table(out / "samples").to_pylist()
    assert len(rows) == sum(summary.samples.values()) > 12
    for r in rows:
        gold = {normalize_answer(a) for a in r["answers"]}
        negs = [normalize_answer(n) for n in r["negatives"]]
        assert 1 <= len(negs) <= K and len(negs) == len(set(negs)) and not gold & set(negs), r
    stats = json.loads((out / "manifest.json").read_text())["summary"]["negatives"]
    written = sum(k == LLM_KIND for r in rows for k in r["negative_kinds"])
    assert stats["generator"] == "llm" and stats["kinds"][LLM_KIND] == written > 0
    assert stats["llm_share"] == pytest.approx(written / sum(len(r["negatives"]) for r in rows))
    assert stats["fallback_share"] == pytest.approx(1 - stats["llm_share"]) and stats["samples_per_s"] > 0
    # every negative, the LLM's included, is of its gold answer's kind; yes/no and counts are the rules' alone
    labels = tuple(sorted(set(pq.read_table(out / "objects", columns=["label"]).column("label").to_pylist())))
    for r in rows:
        gold = answer_kind(r["answers"][0], labels, r["task"])
        assert gold == r["answer_kind"]
        for text, kind in zip(r["negatives"], r["negative_kinds"]):
            assert answer_kind(text, labels, r["task"]) == gold, (text, r["answers"])
            if kind == LLM_KIND:
                assert gold in LLM_KINDS and r["task"] in ("qa", "sqa")


@pytest.mark.slow
def test_llm_negatives_are_the_same_in_another_process_and_batch(llm_prepared):
    """What the actors wrote, a scene at a time, is what this process writes one sample at a time."""
    from cl3dor_ray.data.samples import scene_context
    from cl3dor_ray.text.annotations import Annotation
    from cl3dor_ray.text.generators import make_generator
    from cl3dor_ray.text.negatives import Vocabulary, sample_rng
    from cl3dor_ray.text.sqa3d import situated_instruction

    out, _ = llm_prepared
    rows = sorted(pq.read_table(out / "samples").to_pylist(), key=lambda r: r["sample_id"])
    objects = pq.read_table(out / "objects", columns=["label"]).column("label").to_pylist()
    answers = sorted({a for r in rows if r["task"] != "caption" for a in r["answers"]})
    generator = make_generator("llm", Vocabulary(tuple(sorted(set(objects))), tuple(answers)), llm_path=str(SMOLLM2))
    annotations = [
        Annotation(
            r["task"],
            r["split"],
            r["scene_id"],
            r["sample_id"],
            r["question"],
            r["answers"],
            r["object_ids"],
            r["question_type"],
            "",
            r["situation"],
            list(r["pose"]),
        )
        for r in rows
    ]
    context = scene_context(rows[0]["scene_id"], objects, annotations)
    picked = [r for r in rows if r["task"] in ("qa", "sqa")][:4]
    for r in picked:
        negs = generator.generate(
            r["task"],
            r["answers"],
            context,
            K,
            sample_rng(0, r["sample_id"]),
            question=situated_instruction(r["question"], r["situation"]),
        )
        assert [n.text for n in negs] == r["negatives"] and [n.kind for n in negs] == r["negative_kinds"]
