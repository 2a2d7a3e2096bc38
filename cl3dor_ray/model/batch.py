"""`SceneBatch`: what the model eats, and `SceneCollator`, which builds it from prepared rows.

A batch holds, per sample, its scene's object clouds (at most `max_objects`: the objects the
sample is about first, as LEO keeps them within its budget, then the rest nearest the room's centre
first), which of them the sample is about, the instruction tokens, and C candidate answers (the
gold answer first, then the hard negatives) as right-padded token ids. A situated question (SQA3D)
carries the agent's situation, which leads its instruction, and its pose: the object boxes are then
given in the agent's frame, so "on my left" is a direction the model can read. Every tensor is checked
on construction, so a bad batch fails with the field, the expected shape and dtype, and what it got.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cl3dor_ray.data.clouds import cloud_array
from cl3dor_ray.model.prompt import prompt_for
from cl3dor_ray.scenes.pose import to_agent_frame, yaw_quaternion
from cl3dor_ray.text.sqa3d import situated_instruction

SECONDARY = 0.75  # the relevance of an object a question names beside its subject: ranked after it, still chosen


class BatchError(ValueError):
    """A SceneBatch field has the wrong shape or dtype."""


def _expect(name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple) -> None:
    """shape: ints fix a size, strings name sizes that must agree across fields."""
    ok = (
        isinstance(t, torch.Tensor)
        and t.dtype == dtype
        and t.dim() == len(shape)
        and all(isinstance(s, str) or t.shape[i] == s for i, s in enumerate(shape))
    )
    if not ok:
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise BatchError(f"SceneBatch.{name} must be {dtype} of shape {tuple(shape)}, got {got}")


@dataclass
class SceneBatch:
    points: torch.Tensor  # (B, N, P, 6) float32: xyz (scene frame) + rgb 0..255
    object_mask: torch.Tensor  # (B, N) bool, False where a scene has fewer than N objects
    centers: torch.Tensor  # (B, N, 3) float32
    sizes: torch.Tensor  # (B, N, 3) float32
    instruction_ids: torch.Tensor  # (B, La) long, right-padded " USER: {instruction}" (the model adds " ASSISTANT:")
    instruction_mask: torch.Tensor  # (B, La) long
    cand_ids: torch.Tensor  # (B, C, Lc) long, right-padded " answer</s>"; C = 0 when only generating
    cand_mask: torch.Tensor  # (B, C, Lc) long; a sample with fewer candidates has all-zero rows after its last
    # (B, N, D) precomputed point-encoder features (a serving cache); when given, points may be (B, N, 1, 6) zeros
    features: torch.Tensor | None = None
    # (B, N) for the objects the sample is about (the annotation's object_ids, a caption's target): 1.0 for
    # the first one and those of its category, SECONDARY for the others ("the cup" before "the table" in
    # "Is the cup above or below the table?"), 0 elsewhere
    relevant: torch.Tensor | None = None
    # (B,) True where `relevant` is known and used as is (a caption's target; the teacher-forced share of
    # training samples); elsewhere the model's grounding head decides
    given: torch.Tensor | None = None
    # (B,) True for a situated question: the boxes are in its agent's frame, the agent at the origin
    situated: torch.Tensor | None = None
    # (B,) True where the question finds its subject through the anchor it names, without naming the subject's
    # category ("what is on the nightstand?"): the grounding head's answer hop learns from these
    hop: torch.Tensor | None = None

    def __post_init__(self):
        _expect("points", self.points, torch.float32, ("B", "N", "P", 6))
        b, n = self.points.shape[:2]
        _expect("object_mask", self.object_mask, torch.bool, (b, n))
        _expect("centers", self.centers, torch.float32, (b, n, 3))
        _expect("sizes", self.sizes, torch.float32, (b, n, 3))
        _expect("instruction_ids", self.instruction_ids, torch.long, (b, "La"))
        _expect("instruction_mask", self.instruction_mask, torch.long, tuple(self.instruction_ids.shape))
        _expect("cand_ids", self.cand_ids, torch.long, (b, "C", "Lc"))
        _expect("cand_mask", self.cand_mask, torch.long, tuple(self.cand_ids.shape))
        if not self.object_mask.any(dim=1).all():
            raise BatchError("SceneBatch.object_mask: every sample needs at least one object")
        if self.features is not None:
            _expect("features", self.features, torch.float32, (b, n, "D"))
        if self.relevant is None:
            self.relevant = torch.zeros((b, n), dtype=torch.float32, device=self.points.device)
        if self.given is None:
            self.given = torch.zeros(b, dtype=torch.bool, device=self.points.device)
        if self.situated is None:
            self.situated = torch.zeros(b, dtype=torch.bool, device=self.points.device)
        if self.hop is None:
            self.hop = torch.zeros(b, dtype=torch.bool, device=self.points.device)
        _expect("relevant", self.relevant, torch.float32, (b, n))
        _expect("given", self.given, torch.bool, (b,))
        _expect("situated", self.situated, torch.bool, (b,))
        _expect("hop", self.hop, torch.bool, (b,))
        if self.cand_ids.shape[1] and not (self.cand_mask[:, 0, 0] == 1).all():
            raise BatchError("SceneBatch.cand_mask: every sample's first candidate (the gold answer) needs a token")

    def to(self, device) -> "SceneBatch":
        return SceneBatch(
            **{k: None if getattr(self, k) is None else getattr(self, k).to(device) for k in self.__dataclass_fields__}
        )

    def select(self, rows: list[int]) -> "SceneBatch":
        """The batch of these samples only."""
        idx = torch.tensor(rows, dtype=torch.long)
        return SceneBatch(
            **{k: None if getattr(self, k) is None else getattr(self, k)[idx] for k in self.__dataclass_fields__}
        )

    @property
    def num_candidates(self) -> int:
        return self.cand_ids.shape[1]

    @property
    def cand_present(self) -> torch.Tensor:
        """(B, C) bool: which candidate slots hold an answer (samples carry 1 to K negatives)."""
        return self.cand_mask[..., 0] == 1


def select_objects(objects: list[dict], relevant: list[int], budget: int) -> list[dict]:
    """Relevant objects first (so they fit the budget), then the rest nearest the room's centre first.

    The rest are not ordered by distance to the relevant objects: at inference nobody knows them, and
    an order that depends on them would tell the model where they are.
    """
    first = [o for oid in relevant for o in objects if o["object_id"] == oid]
    rest = [o for o in objects if o["object_id"] not in set(relevant)]
    anchor = np.mean([o["center"] for o in objects], axis=0)
    rest.sort(key=lambda o: (float(np.linalg.norm(np.asarray(o["center"]) - anchor)), o["object_id"]))
    return (first + rest)[:budget]


def subject_roles(object_ids: list[int], objects: list[dict]) -> dict[int, float]:
    """object id -> its relevance: 1.0 for the question's subject (the first of its object_ids, and the
    others of that category: "How many cups ...?"), SECONDARY for the rest it names."""
    labels = {o["object_id"]: o.get("label") for o in objects}
    subject = labels.get(object_ids[0]) if object_ids else None
    return {
        oid: 1.0 if k == 0 or (subject and labels.get(oid) == subject) else SECONDARY
        for k, oid in enumerate(object_ids)
    }


def finds_subject_by_hop(question: str, object_ids: list[int], objects: list[dict]) -> bool:
    """Whether a question names an anchor but not its subject's category, so only the anchor leads to the
    subject: "what is on the nightstand?" (the lamp), not "where is the lamp placed?" nor "what is on my left?"."""
    labels = {o["object_id"]: o.get("label") for o in objects}
    subject = labels.get(object_ids[0]) if object_ids else None
    # an anchor is an object of another category: "how many bookshelves ...?" names several of one
    anchored = any(labels.get(oid) != subject for oid in object_ids[1:])
    return bool(subject) and anchored and subject.lower() not in question.lower()


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class SceneCollator:
    """Prepared rows -> SceneBatch. `objects_by_scene` maps scene_id to its object rows.

    A caption's target is always given (the request names it). `teacher_forcing` is the share of the
    other samples whose annotated objects are given too, as LEO trains (drawn per sample from `seed`); at
    inference (0) the grounding head finds them.
    """

    def __init__(
        self,
        tokenizer,
        objects_by_scene: dict[str, list[dict]],
        num_points: int,
        max_objects: int,
        max_answer_tokens: int = 96,
        teacher_forcing: float = 0.0,
        view_heading_deg: float = 0.0,
        seed: int = 0,
    ):
        self.tok = tokenizer
        self.objects = objects_by_scene
        self.num_points = num_points
        self.max_objects = max_objects
        self.max_answer_tokens = max_answer_tokens
        self.teacher_forcing = float(teacher_forcing)
        self.rng = np.random.default_rng(seed)
        # a question without a pose is read from a viewer at the room's origin facing this heading
        self.view = [0.0, 0.0, 0.0, *yaw_quaternion(math.radians(view_heading_deg))]
        self.prompt = prompt_for(tokenizer)

    @classmethod
    def for_model(cls, model, objects_by_scene: dict[str, list[dict]], teacher_forcing: float = 0.0, seed: int = 0):
        """The collator a Scene3DLM reads: its point and object budgets, its view, its tokenizer."""
        cfg = model.cfg
        return cls(
            model.tokenizer,
            objects_by_scene,
            cfg.num_points,
            cfg.max_objects,
            teacher_forcing=teacher_forcing,
            view_heading_deg=cfg.view_heading_deg,
            seed=seed,
        )

    def _cloud(self, obj: dict) -> np.ndarray:
        return cloud_array(obj, self.num_points)

    def encode_answer(self, text: str) -> list[int]:
        ids = self.tok(self.prompt.answer(text), add_special_tokens=False).input_ids[: self.max_answer_tokens - 1]
        return ids + [self.tok.eos_token_id]

    def __call__(self, samples: list[dict], candidates: list[list[str]] | None = None) -> SceneBatch:
        """`candidates[i]` are sample i's answers to score; default: gold answer then its negatives. Samples
        may bring different numbers of them: the missing slots are empty (SceneBatch.cand_present)."""
        if candidates is None:
            candidates = [[s["answers"][0], *s["negatives"]] for s in samples]
        chosen = []
        for s in samples:
            if s["scene_id"] not in self.objects:
                raise KeyError(f"scene {s['scene_id']!r} has no objects in the prepared data")
            chosen.append(select_objects(self.objects[s["scene_id"]], list(s["object_ids"]), self.max_objects))
        b, n = len(samples), max(len(c) for c in chosen)
        # objects that carry a cached point-encoder feature need no points
        cached = all("feature" in o for objs in chosen for o in objs)
        points = np.zeros((b, n, 1 if cached else self.num_points, 6), np.float32)
        features = np.zeros((b, n, len(chosen[0][0]["feature"])), np.float32) if cached else None
        centers, sizes = np.zeros((b, n, 3), np.float32), np.zeros((b, n, 3), np.float32)
        mask = np.zeros((b, n), bool)
        relevant = np.zeros((b, n), np.float32)
        hop = np.zeros(b, bool)
        for i, (s, objs) in enumerate(zip(samples, chosen)):
            roles = subject_roles(list(s["object_ids"]), objs)
            hop[i] = finds_subject_by_hop(s["question"], list(s["object_ids"]), objs)
            for j, o in enumerate(objs):
                if cached:
                    features[i, j] = o["feature"]
                else:
                    points[i, j] = self._cloud(o)
                centers[i, j], sizes[i, j], mask[i, j] = o["center"], o["size"], True
                relevant[i, j] = roles.get(o["object_id"], 0.0)
            # the layout as the agent sees it (a situated question), else as the view does (scenes/pose.py)
            centers[i, : len(objs)], sizes[i, : len(objs)] = to_agent_frame(
                centers[i, : len(objs)], sizes[i, : len(objs)], s.get("pose") or self.view
            )
        share = self.teacher_forcing
        forced = self.rng.random(b) < share if 0 < share < 1 else [share == 1.0] * b  # draws only for a share
        given = torch.tensor([s.get("task") == "caption" or bool(f) for s, f in zip(samples, forced)])
        instr = [
            self.tok(
                self.prompt.instruction(situated_instruction(s["question"], s.get("situation") or "")),
                add_special_tokens=False,
            ).input_ids
            for s in samples
        ]
        instr_ids, instr_mask = _pad(instr, self.tok.pad_token_id)
        n_cand = max((len(c) for c in candidates), default=0)
        if n_cand and not all(candidates):
            raise BatchError("a sample with candidates to score needs at least one (the gold answer first)")
        if n_cand:
            flat = [self.encode_answer(c[j]) if j < len(c) else [] for c in candidates for j in range(n_cand)]
            ids, cmask = _pad(flat, self.tok.pad_token_id)
            cand_ids, cand_mask = ids.view(b, n_cand, -1), cmask.view(b, n_cand, -1)
        else:
            cand_ids = cand_mask = torch.zeros((b, 0, 1), dtype=torch.long)
        return SceneBatch(
            torch.from_numpy(points),
            torch.from_numpy(mask),
            torch.from_numpy(centers),
            torch.from_numpy(sizes),
            instr_ids,
            instr_mask,
            cand_ids,
            cand_mask,
            None if features is None else torch.from_numpy(features),
            torch.from_numpy(relevant),
            given,
            torch.tensor([bool(s.get("pose")) for s in samples]),
            torch.from_numpy(hop),
        )
