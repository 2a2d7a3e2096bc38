"""Per-object point clouds: dense re-sampling of the mesh surface, and LEO's sparse baseline.

CL3DOR's first idea: a small object in a decimated scan is a few dozen vertices, too few for a
point encoder. Sampling P points uniformly over the object's triangles (area-weighted, colours
interpolated barycentrically) gives every object the same, even coverage. The whole scene is
sampled in one vectorised pass: faces are sorted by object and one inverse-CDF lookup serves all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.scannet import Scene


class EmptySurfaceError(ValueError):
    """A group of faces has zero total area (or no faces), so nothing can be sampled on it."""

    def __init__(self, group: int):
        self.group = group
        super().__init__(f"group {group} has no surface area to sample")


@dataclass
class ObjectCloud:
    scene_id: str
    object_id: int
    label: str
    points: np.ndarray  # (P, 3) float32, axis-aligned scene frame
    colors: np.ndarray  # (P, 3) uint8
    center: np.ndarray  # (3,) float32, centre of the axis-aligned box of the object's vertices
    size: np.ndarray  # (3,) float32, extent of that box
    num_source_vertices: int


def scene_rng(scene_id: str, seed: int) -> np.random.Generator:
    """Deterministic per (seed, scene), whatever order or worker the scenes are processed in."""
    return np.random.default_rng([seed, zlib.crc32(scene_id.encode())])


def _boxes(scene: Scene, object_ids: np.ndarray):
    centers, sizes, counts = [], [], []
    for oid in object_ids:
        v = scene.vertices[scene.instance_ids == oid]
        lo, hi = v.min(0), v.max(0)
        centers.append((lo + hi) / 2)
        sizes.append(hi - lo)
        counts.append(len(v))
    return np.array(centers, np.float32), np.array(sizes, np.float32), counts


def sample_surface(vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray, groups: np.ndarray,
                   n_groups: int, points_per_group: int, rng: np.random.Generator):
    """Area-weighted uniform samples on the triangles of each group.

    `groups[f]` in [0, n_groups) says which group face f belongs to; every group needs a face of
    positive area. Returns points (n_groups, P, 3) float32 and colours (n_groups, P, 3) uint8.
    """
    order = np.argsort(groups, kind="stable")
    faces, groups = faces[order], groups[order]
    tri = vertices[faces].astype(np.float64)  # (F, 3 corners, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(area)
    ends = np.searchsorted(groups, np.arange(n_groups), side="right")  # one past each group's last face
    starts = np.r_[0, ends[:-1]]
    lo = np.where(starts > 0, cdf[np.maximum(starts - 1, 0)], 0.0)
    span = cdf[ends - 1] - lo
    if np.any(span <= 0):
        raise EmptySurfaceError(int(np.flatnonzero(span <= 0)[0]))

    # inverse CDF within each group's slice of the global cumulative area
    u = rng.random((n_groups, points_per_group))
    target = lo[:, None] + u * span[:, None]
    face = np.searchsorted(cdf, target, side="right")
    face = np.clip(face, starts[:, None], ends[:, None] - 1)

    # uniform barycentric coordinates: (1 - sqrt(r1), sqrt(r1)(1 - r2), sqrt(r1) r2)
    r1, r2 = np.sqrt(rng.random(face.shape)), rng.random(face.shape)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=-1)  # (G, P, 3)
    points = np.einsum("gpk,gpkc->gpc", w, tri[face])
    rgb = colors[faces[face]].astype(np.float64)  # (G, P, 3 corners, 3)
    point_colors = np.einsum("gpk,gpkc->gpc", w, rgb)
    return points.astype(np.float32), np.clip(np.rint(point_colors), 0, 255).astype(np.uint8)


def densify_objects(scene: Scene, points_per_object: int, seed: int = 0,
                    skip_labels: tuple[str, ...] = ()) -> list[ObjectCloud]:
    """P points sampled uniformly over each object's surface (faces with all vertices in the object)."""
    objects = [o for o in scene.objects if o.label not in skip_labels]
    if not objects:
        return []
    ids = np.array([o.object_id for o in objects])
    # face -> index into `objects`, or dropped (unlabelled, boundary or skipped faces)
    order = np.argsort(ids)
    face_ids = scene.face_instance_ids()
    pos = np.clip(np.searchsorted(ids[order], face_ids), 0, len(ids) - 1)
    keep = ids[order][pos] == face_ids
    try:
        points, colors = sample_surface(scene.vertices, scene.colors, scene.faces[keep], order[pos[keep]],
                                        len(ids), points_per_object, scene_rng(scene.scene_id, seed))
    except EmptySurfaceError as e:
        o = objects[e.group]
        raise ScanFormatError(scene.scene_id, f"object {o.object_id} ({o.label!r}) has no surface area to sample") from None
    centers, sizes, counts = _boxes(scene, ids)
    return [ObjectCloud(scene.scene_id, o.object_id, o.label, points[g], colors[g], centers[g], sizes[g], counts[g])
            for g, o in enumerate(objects)]


def sparse_objects(scene: Scene, points_per_object: int, seed: int = 0,
                   skip_labels: tuple[str, ...] = ()) -> list[ObjectCloud]:
    """LEO's baseline: P of the object's scan vertices, drawn with replacement only when it has fewer than P."""
    rng = scene_rng(scene.scene_id, seed)
    objects = [o for o in scene.objects if o.label not in skip_labels]
    centers, sizes, counts = _boxes(scene, np.array([o.object_id for o in objects]))
    out = []
    for g, o in enumerate(objects):
        idx = np.flatnonzero(scene.instance_ids == o.object_id)
        pick = rng.choice(idx, size=points_per_object, replace=len(idx) < points_per_object)
        out.append(ObjectCloud(scene.scene_id, o.object_id, o.label, scene.vertices[pick],
                               scene.colors[pick], centers[g], sizes[g], counts[g]))
    return out
