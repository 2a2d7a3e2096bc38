"""Ray Data UDF: one scene's annotations -> training samples, each with K hard negatives.

`BuildSamples` is a callable class, so a generator that holds a model (the LLM of
text/llm_negatives.py, `needs_actor = True`) runs in a pool of actors and loads its model once per
actor, and gets a scene's questions in one call. The rule-based default is cheap to build, so it runs as plain tasks
(`build_samples`), which Ray Data fuses with the Parquet write.
"""

from __future__ import annotations

import json

import pyarrow as pa

from cl3dor_ray.data.schema import SAMPLE_SCHEMA, with_errors
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS
from cl3dor_ray.text.annotations import Annotation, caption_instruction
from cl3dor_ray.text.generators import make_generator
from cl3dor_ray.text.kinds import answer_kind
from cl3dor_ray.text.negatives import SceneContext, Vocabulary, sample_rng
from cl3dor_ray.text.sqa3d import situated_instruction
from cl3dor_ray.text.vocab import COLOR_WORDS

STAGED_SAMPLE_SCHEMA = with_errors(SAMPLE_SCHEMA)
_COLORS = set(COLOR_WORDS)


def scene_context(scene_id: str, labels: list[str], annotations: list[Annotation]) -> SceneContext:
    texts = [a for ann in annotations for a in ann.answers]
    words = {w for t in texts for w in t.lower().replace(".", " ").split()}
    short = sorted({a for ann in annotations if ann.task != "caption" for a in ann.answers})
    return SceneContext(
        scene_id, tuple(sorted(set(labels) - set(STRUCTURE_LABELS))), tuple(sorted(words & _COLORS)), tuple(short)
    )


class BuildSamples:
    """map_batches callable over rows {scene_id, annotations (JSON), objects (JSON)}."""

    def __init__(
        self,
        generator: str,
        labels: list[str],
        answers: list[str],
        negatives: int,
        seed: int,
        captions: list[str] = (),
        generator_options: dict | None = None,
    ):
        vocabulary = Vocabulary(tuple(labels), tuple(answers), tuple(captions))
        self.labels = vocabulary.labels
        self.generator = make_generator(generator, vocabulary, **(generator_options or {}))
        self.k = negatives
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for scene_id, ann_json, obj_json in zip(
            batch["scene_id"].to_pylist(), batch["annotations"].to_pylist(), batch["objects"].to_pylist()
        ):
            objects = {int(k): v for k, v in json.loads(obj_json).items()}  # id -> [label, center]
            annotations = [Annotation(**a) for a in json.loads(ann_json)]
            context = scene_context(scene_id, [label for label, _ in objects.values()], annotations)
            rows += self._scene(annotations, objects, context)
        return pa.Table.from_pylist(rows, schema=STAGED_SAMPLE_SCHEMA)

    def _scene(self, annotations: list[Annotation], objects: dict, context: SceneContext) -> list[dict]:
        """A scene's samples; their negatives in one call where the generator batches (an LLM)."""
        rows = [self._sample(ann, objects) for ann in annotations]
        todo = [(row, ann) for row, ann in zip(rows, annotations) if self.k and not row["error"]]
        requests = [
            {
                "task": ann.task,
                "answers": ann.answers,
                "scene": context,
                "k": self.k,
                "rng": sample_rng(self.seed, ann.sample_id),
                "question": situated_instruction(row["question"], ann.situation),
            }
            for row, ann in todo
        ]
        if hasattr(self.generator, "generate_many"):
            results = self.generator.generate_many(requests)
        else:
            results = [self.generator.generate(**r) for r in requests]
        for (row, _ann), negs in zip(todo, results):
            row["negatives"] = [n.text for n in negs]
            row["negative_kinds"] = [n.kind for n in negs]
        return rows

    def _sample(self, ann: Annotation, objects: dict) -> dict:
        row = {
            "sample_id": ann.sample_id,
            "split": ann.split,
            "task": ann.task,
            "scene_id": ann.scene_id,
            "object_ids": ann.object_ids,
            "question": ann.question,
            "answers": ann.answers,
            "negatives": [],
            "negative_kinds": [],
            "question_type": ann.question_type,
            "answer_kind": answer_kind(ann.answers[0], self.labels, ann.task),
            "situation": ann.situation,
            "pose": ann.pose,
            "error": "",
            "error_file": ann.source,
        }
        unknown = [i for i in ann.object_ids if i not in objects]
        if unknown:
            known = f"ids {min(objects)}..{max(objects)}" if objects else "no objects"
            row["error"] = f"{ann.sample_id}: object_ids {unknown} are not objects of {ann.scene_id} (it has {known})"
        elif ann.task == "caption":
            row["question"] = caption_instruction(objects[ann.object_ids[0]][1])
        return row


def build_samples(batch: pa.Table, **kwargs) -> pa.Table:
    """Task form of BuildSamples, for generators that are cheap to construct."""
    return BuildSamples(**kwargs)(batch)
