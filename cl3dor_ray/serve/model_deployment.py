"""The model replica: a Scene3DLM with the prepared objects, answering in dynamic batches.

serve/batching.py gathers concurrent requests (up to serve.max_batch_size, an idle replica waiting at
most serve.batch_wait_timeout_s) into one forward pass, formed when the model is free. The compute runs
in a worker thread so the replica keeps accepting requests, which is what fills the next batch. Each
scene is encoded once: its point-encoder features, and its prompt prefix's KV cache (serve/prefix_cache.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from ray import serve

from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.model.batch import SceneCollator, select_objects
from cl3dor_ray.model.io import load_model
from cl3dor_ray.model.odds import log_odds
from cl3dor_ray.serve.batching import Batcher
from cl3dor_ray.serve.prefix_cache import PrefixCache
from cl3dor_ray.text.annotations import caption_instruction

MODEL_DIR_ENV = "CL3DOR_MODEL_DIR"  # overrides the app's model_dir argument


class UnknownTarget(LookupError):
    """A request names a scene or object that is not in the prepared data."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")

    def __reduce__(self):  # crosses process boundaries through a DeploymentHandle
        return type(self), (self.field, self.detail)


def uploaded_objects(objects: list[dict]) -> list[dict]:
    """Request objects -> rows shaped like OUT/objects (centre and size from the points' box)."""
    rows = []
    for i, o in enumerate(objects):
        pts = np.asarray(o["points"], dtype=np.float32)
        colors = np.asarray(o["colors"], dtype=np.float32) if o.get("colors") is not None else np.full_like(pts, 128.0)
        lo, hi = pts.min(0), pts.max(0)
        rows.append(
            {
                "object_id": i,
                "label": o.get("label") or "",
                "points": pts,
                "colors": colors,
                "center": (lo + hi) / 2,
                "size": hi - lo,
            }
        )
    return rows


def model_version(model_dir: str) -> str:
    """Names a model folder's weights: its files' names, sizes and modification times, hashed."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(model_dir)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


# Serve's default of 5 ongoing requests per replica would cap every batch at 5.
@serve.deployment(max_ongoing_requests=64)
class Scene3DLMDeployment:
    def __init__(
        self,
        model_dir: str,
        data_dir: str,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
        prefix_cache_mb: float = 0.0,
    ):
        self.prepared = Prepared(data_dir)
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20))
        self._load(os.environ.get(MODEL_DIR_ENV) or model_dir)
        self.generate_batch = Batcher(self._generate, max_batch_size, batch_wait_timeout_s)
        self.score_batch = Batcher(self._score, max_batch_size, batch_wait_timeout_s)
        self._uploads = itertools.count()

    def _load(self, model_dir: str) -> None:
        """(Re)load the model; every cache of the old one goes with it."""
        self.model = load_model(model_dir)
        self.model_version = model_version(model_dir)
        self.objects = self.prepared.objects(self.model.cfg.num_points)
        self._features: dict[str, list] = {}  # scene -> point-encoder feature per object (frozen at serving)
        self.prefix_cache.clear()

    def reconfigure(self, config: dict) -> None:
        """Serve's user_config: {"model_dir": ...} swaps in another model folder without a new replica."""
        if config.get("model_dir") and model_version(config["model_dir"]) != self.model_version:
            self._load(config["model_dir"])

    def cache_stats(self) -> dict:
        return {
            **dataclasses.asdict(self.prefix_cache.stats),
            "batch_sizes": {"generate": list(self.generate_batch.sizes), "score": list(self.score_batch.sizes)},
            "max_bytes": self.prefix_cache.max_bytes,
            "model_version": self.model_version,
        }

    def scene_points(self, scene_id: str) -> dict:
        """The scene's densified objects as the page draws them: every prepared point (P per object, in
        millimetres of precision), its colour, and the object's box."""
        self._target({"scene_id": scene_id})
        return {
            "scene_id": scene_id,
            "objects": [
                {
                    "object_id": o["object_id"],
                    "label": o["label"],
                    "center": [round(float(c), 3) for c in o["center"]],
                    "size": [round(float(c), 3) for c in o["size"]],
                    "points": np.round(o["points"], 3).ravel().tolist(),
                    "colors": o["colors"].ravel().tolist(),
                }
                for o in self.prepared.scene_objects(scene_id)
            ],
        }

    def scenes(self) -> list[dict]:
        return [
            {"scene_id": s, "objects": [{"object_id": o["object_id"], "label": o["label"]} for o in objs]}
            for s, objs in sorted(self.objects.items())
        ]

    def _target(self, req: dict) -> dict | None:
        """The requested object row (captions), None otherwise; raises UnknownTarget for a scene or
        object that is not in the prepared data. Uploaded clouds need no check."""
        if req.get("objects") is not None:
            return None
        scene_id = req["scene_id"]
        if scene_id not in self.objects:
            raise UnknownTarget(
                "scene_id", f"scene {scene_id!r} is not in the prepared data; GET /v1/scenes lists them"
            )
        if req.get("object_id") is None:
            return None
        match = [o for o in self.objects[scene_id] if o["object_id"] == req["object_id"]]
        if not match:
            raise UnknownTarget(
                "object_id",
                f"scene {scene_id!r} has no object {req['object_id']} "
                f"(ids: {sorted(o['object_id'] for o in self.objects[scene_id])})",
            )
        return match[0]

    def _sample(self, req: dict) -> tuple[dict, dict]:
        """A collator sample and the objects it needs (a prepared scene, or the uploaded clouds)."""
        situated = {"situation": req.get("situation") or "", "pose": req.get("pose") or []}
        if req.get("objects") is not None:
            key = f"upload-{next(self._uploads)}"
            return (
                {"scene_id": key, "object_ids": [], "question": req["question"], **situated},
                {key: uploaded_objects(req["objects"])},
            )
        scene_id, target = req["scene_id"], self._target(req)
        if target is None:
            sample = {"scene_id": scene_id, "object_ids": [], "question": req["question"], **situated}
        else:
            sample = {
                "scene_id": scene_id,
                "object_ids": [target["object_id"]],
                "task": "caption",
                "question": caption_instruction(target["center"]),
            }
        return sample, {scene_id: self.objects[scene_id]}

    def _with_features(self, key: str, rows: list[dict]) -> list[dict]:
        """Object rows with their cached point-encoder feature: each scene is encoded once per replica."""
        if key not in self._features:
            self._features[key] = self.model.point_features(rows, self.model.cfg.num_points)
        return [{**row, "feature": f.numpy()} for row, f in zip(rows, self._features[key])]

    def _collate(self, reqs: list[dict], candidates, with_ids: bool = False):
        """The batch and each sample's object ids in the batch's column order (with `with_ids`)."""
        samples, objects = [], {}
        for r in reqs:
            sample, objs = self._sample(r)
            samples.append(sample)
            for key, rows in objs.items():
                objects[key] = self._with_features(key, rows)
                if key.startswith("upload-"):
                    del self._features[key]  # uploads are one-off
        cfg = self.model.cfg
        batch = SceneCollator.for_model(self.model, objects)(samples, candidates)
        if not with_ids:
            return batch
        # the collator's own choice and order of objects (select_objects), to name the batch's columns
        return batch, [
            [o["object_id"] for o in select_objects(objects[s["scene_id"]], s["object_ids"], cfg.max_objects)]
            for s in samples
        ]

    def _prefixes(self, reqs: list[dict], batch, column_ids: list[list[int]]):
        """Each sample's cached scene prefix, computed once per key for those not cached yet; None when the
        cache is off or a request brings its own objects (a one-off scene)."""
        if not self.prefix_cache.enabled or any(r.get("objects") is not None for r in reqs):
            return None
        keys = [
            (self.model_version, r["scene_id"], tuple(ids), tuple(r.get("pose") or ()))
            for r, ids in zip(reqs, column_ids)
        ]
        found = {k: self.prefix_cache.get(k) for k in dict.fromkeys(keys)}
        missing = [k for k, p in found.items() if p is None]
        if missing:
            rows = [keys.index(k) for k in missing]  # one sample per missing key
            for k, prefix in zip(missing, self.model.scene_prefixes(batch.select(rows))):
                found[k] = prefix
                self.prefix_cache.put(k, prefix)
        return [found[k] for k in keys]

    def _grounded(self, batch, column_ids: list[list[int]]) -> list[list[int]]:
        """Per sample, the object ids the model reads as the instruction's (a caption's target; else the
        grounding head's choice), most relevant first; [] for a model without a grounding head."""
        if self.model.grounding is None:
            return [[] for _ in column_ids]
        order, count = self.model.focus_order(batch, self.model.point_feats(batch))
        return [[ids[j] for j in order[i, : count[i]].tolist()] for i, ids in enumerate(column_ids)]

    # ---- generation: answers and captions
    async def generate(self, req: dict) -> dict:
        self._target(req)  # an unknown scene/object fails here, for this request only, not its batch
        return await self.generate_batch(req)

    @torch.no_grad()
    def _generate(self, reqs: list[dict]) -> list[dict]:
        """{"text", "objects"} per request: the generated text and the objects it was about."""
        out: list[dict] = [{} for _ in reqs]
        for beams in sorted({r["num_beams"] for r in reqs}):  # one generate call per beam width
            idx = [i for i, r in enumerate(reqs) if r["num_beams"] == beams]
            group = [reqs[i] for i in idx]
            batch, column_ids = self._collate(group, [[] for _ in group], with_ids=True)
            ids = self.model.generate_ids(
                batch,
                max_new_tokens=max(r["max_new_tokens"] for r in group),
                num_beams=beams,
                prefixes=self._prefixes(group, batch, column_ids),
            )
            for i, r, row, about in zip(idx, group, ids, self._grounded(batch, column_ids)):
                # greedy decoding is prefix-consistent: cutting at a request's own budget is exact
                out[i] = {
                    "text": self.model.tokenizer.decode(row[: r["max_new_tokens"]], skip_special_tokens=True).strip(),
                    "objects": about,
                }
        return out

    # ---- scoring candidate answers
    async def score(self, req: dict) -> list[dict]:
        self._target(req)
        return await self.score_batch(req)

    @torch.no_grad()
    def _score(self, reqs: list[dict]) -> list[list[dict]]:
        """Each request's candidates ranked by mean log-probability; requests with different numbers of
        candidates share one batch (the empty slots are never computed)."""
        batch, column_ids = self._collate(reqs, [r["candidates"] for r in reqs], with_ids=True)
        logps = self.model.candidate_logps(batch, prefixes=self._prefixes(reqs, batch, column_ids))[0]
        odds = log_odds(logps)
        out = []
        for r, lp, lo in zip(reqs, logps.tolist(), odds.tolist()):
            ranked = sorted(zip(r["candidates"], lp, lo), key=lambda t: -t[1])  # the first len(candidates) slots
            out.append([{"text": t, "logp": a, "log_odds": b} for t, a, b in ranked])
        return out
