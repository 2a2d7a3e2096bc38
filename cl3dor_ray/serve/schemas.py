"""Request and response models of the HTTP API, validated with pydantic against the configured limits.

Limits come from ServeConfig through the validation context, so the same models serve HTTP and
the in-cluster handle, and a bad request names its field and what was expected.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from cl3dor_ray.config import ServeConfig
from cl3dor_ray.text.sqa3d import check_pose


def _limits(info: ValidationInfo) -> ServeConfig:
    """The deployment's ServeConfig; its defaults when validating without one."""
    return (info.context or {}).get("limits") or ServeConfig()


class UploadedObject(BaseModel):
    points: list[list[float]] = Field(description="N x [x, y, z], scene frame, metres")
    colors: list[list[float]] | None = Field(None, description="N x [r, g, b] in 0..255; grey if absent")
    label: str | None = None

    @field_validator("points")
    @classmethod
    def _points(cls, points, info: ValidationInfo):
        limit = _limits(info).max_points_per_object
        if not points:
            raise ValueError("expected at least one point")
        if len(points) > limit:
            raise ValueError(f"{len(points)} points; at most {limit} per object")
        for i, p in enumerate(points):
            if len(p) != 3:
                raise ValueError(f"point {i} has {len(p)} values; expected N x 3 ([x, y, z])")
            if not all(math.isfinite(v) for v in p):
                raise ValueError(f"point {i} is not finite (NaN or inf)")
        return points

    @model_validator(mode="after")
    def _colors(self):
        if self.colors is not None:
            if len(self.colors) != len(self.points):
                raise ValueError(f"colors has {len(self.colors)} rows; expected one per point ({len(self.points)})")
            if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.colors):
                raise ValueError("colors must be N x [r, g, b] with values in 0..255")
        return self


class _SceneQuery(BaseModel):
    scene_id: str | None = Field(None, description="a prepared scene (GET /v1/scenes)")
    objects: list[UploadedObject] | None = Field(None, description="uploaded object point clouds instead")
    question: str
    situation: str | None = Field(
        None,
        description="SQA3D: where the agent is, in its words "
        '("I am sitting on the bed facing the desk."); it leads the instruction',
    )
    pose: list[float] | None = Field(
        None,
        description="SQA3D: the agent's x, y, z, qx, qy, qz, qw in the "
        "prepared scene's axis-aligned frame (or the uploaded objects' frame); the "
        "model then reads the room in the agent's frame",
    )

    @field_validator("pose")
    @classmethod
    def _pose(cls, pose):
        return None if pose is None else check_pose(pose)

    @field_validator("question", "situation")
    @classmethod
    def _question(cls, q, info: ValidationInfo):
        if q is None:
            return q
        limit = _limits(info).max_question_chars
        if not q.strip():
            raise ValueError("expected a non-empty question")
        if len(q) > limit:
            raise ValueError(f"{len(q)} characters; at most {limit}")
        return q

    @field_validator("objects")
    @classmethod
    def _objects(cls, objects, info: ValidationInfo):
        limit = _limits(info).max_objects
        if objects is not None and not 1 <= len(objects) <= limit:
            raise ValueError(f"{len(objects)} objects; expected 1 to {limit}")
        return objects

    @model_validator(mode="after")
    def _one_source(self):
        if (self.scene_id is None) == (self.objects is None):
            raise ValueError("give exactly one of scene_id or objects")
        return self


class _Generation(BaseModel):
    max_new_tokens: int | None = None
    num_beams: int = Field(1, ge=1, le=4)

    @field_validator("max_new_tokens")
    @classmethod
    def _tokens(cls, n, info: ValidationInfo):
        limit = _limits(info).max_new_tokens
        if n is not None and not 1 <= n <= limit:
            raise ValueError(f"{n} is out of range; expected 1 to {limit}")
        return n


class AnswerRequest(_SceneQuery, _Generation):
    pass


class CaptionRequest(_Generation):
    scene_id: str
    object_id: int


class ScoreRequest(_SceneQuery):
    candidates: list[str]
    object_id: int | None = Field(
        None,
        description="score the candidates as descriptions of this object of the "
        "prepared scene (a caption's target; the question is then not read)",
    )

    @model_validator(mode="after")
    def _target_in_a_scene(self):
        if self.object_id is not None and self.scene_id is None:
            raise ValueError("object_id names an object of a prepared scene: give scene_id with it")
        return self

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, cands, info: ValidationInfo):
        lim = _limits(info)
        n, chars = lim.max_candidates, lim.max_candidate_chars
        if not 1 <= len(cands) <= n:
            raise ValueError(f"{len(cands)} candidates; expected 1 to {n}")
        for i, c in enumerate(cands):
            if not c.strip() or len(c) > chars:
                raise ValueError(f"candidate {i} must be 1 to {chars} characters")
        return cands


class AnswerResponse(BaseModel):
    answer: str
    objects: list[int] = Field(
        default_factory=list,
        description="the objects the model read the question as "
        "being about (its grounding head's choice), most relevant first; for uploaded "
        "objects, their indices",
    )
    latency_ms: float


class CaptionResponse(BaseModel):
    caption: str
    latency_ms: float


class ScoredCandidate(BaseModel):
    text: str
    logp: float = Field(description="mean per-token log-probability")
    log_odds: float


class ScoreResponse(BaseModel):
    ranked: list[ScoredCandidate]
    latency_ms: float
