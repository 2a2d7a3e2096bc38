"""Per-object point clouds: dense re-sampling of the mesh surface, and LEO's sparse baseline.

CL3DOR's first idea: a small object in a decimated scan is a few dozen vertices, too few for a
point encoder. Sampling P points uniformly over the object's triangles (area-weighted, colours
interpolated barycentrically) gives every object the same, even coverage. The whole scene is
sampled in one vectorised pass: faces are sorted by object (a linear radix sort of 16-bit keys) and
one inverse-CDF lookup over the scene's cumulative area serves every object; only the sampled
triangles' corners are gathered. `benchmarks/bench_densify.py` times it against open3d.
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


def _sort_small(keys: np.ndarray) -> np.ndarray:
    """The stable argsort of small non-negative integer keys. numpy radix-sorts 16-bit keys in linear
    time; the same order as a stable sort of the original keys."""
    if len(keys) and 0 <= keys.min() and keys.max() < 2**15:
        keys = keys.astype(np.int16)
    return np.argsort(keys, kind="stable")


def _boxes(scene: Scene, object_ids: np.ndarray):
    """Axis-aligned box (centre, size) and vertex count of each object, in one pass over the vertices."""
    lookup = np.full(int(max(scene.instance_ids.max(initial=-1), object_ids.max(initial=-1))) + 2, -1, np.int64)
    lookup[object_ids + 1] = np.arange(len(object_ids))  # +1: instance id -1 (unlabelled) maps to -1
    group = lookup[scene.instance_ids + 1]
    mine = np.flatnonzero(group >= 0)
    order = mine[_sort_small(group[mine])]
    counts = np.bincount(group[mine], minlength=len(object_ids))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    verts = scene.vertices[order]
    lo = np.minimum.reduceat(verts, starts, axis=0) if len(verts) else np.zeros((0, 3), np.float32)
    hi = np.maximum.reduceat(verts, starts, axis=0) if len(verts) else np.zeros((0, 3), np.float32)
    return ((lo + hi) / 2).astype(np.float32), (hi - lo).astype(np.float32), counts.tolist()


def sample_surface(
    vertices: np.ndarray,
    colors: np.ndarray,
    faces: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    points_per_group: int,
    rng: np.random.Generator,
):
    """Area-weighted uniform samples on the triangles of each group.

    `groups[f]` in [0, n_groups) says which group face f belongs to; every group needs a face of
    positive area. Returns points (n_groups, P, 3) float32 and colours (n_groups, P, 3) uint8.
    """
    order = _sort_small(groups)
    faces, groups = np.take(faces, order, axis=0), groups[order]
    # (F, 3 corners, xyz + rgb): one gather serves the areas now and the sampled points' mixing later
    # (np.take gathers rows far faster than fancy indexing)
    tri = np.take(np.hstack([vertices, colors], dtype=np.float32), faces, axis=0)
    e1, e2 = tri[:, 1, :3] - tri[:, 0, :3], tri[:, 2, :3] - tri[:, 0, :3]
    # |e1 x e2| / 2, written out: np.cross costs more than the rest of the area computation
    cross = np.stack(
        [
            e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
            e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
            e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0],
        ],
        axis=1,
    )
    area = 0.5 * np.sqrt((cross * cross).sum(1))
    cdf = np.cumsum(area, dtype=np.float64)  # float64: tiny faces must not vanish in a large running sum
    ends = np.searchsorted(groups, np.arange(n_groups), side="right")  # one past each group's last face
    starts = np.r_[0, ends[:-1]]
    lo = np.where(starts > 0, cdf[np.maximum(starts - 1, 0)], 0.0)
    span = cdf[ends - 1] - lo if len(cdf) else np.zeros(n_groups)
    if np.any(span <= 0):
        raise EmptySurfaceError(int(np.flatnonzero(span <= 0)[0]))

    # inverse CDF within each group's slice of the global cumulative area: one search per group, in its
    # own slice (the same index a search of the whole scene's CDF finds, at a fraction of the cost)
    u = rng.random((n_groups, points_per_group))
    targets = lo[:, None] + u * span[:, None]
    face = np.empty((n_groups, points_per_group), np.int64)
    for g in range(n_groups):
        face[g] = np.searchsorted(cdf[starts[g] : ends[g]], targets[g], side="right") + starts[g]
    face = np.minimum(face, ends[:, None] - 1).ravel()

    # uniform barycentric weights (1 - sqrt(r1), sqrt(r1)(1 - r2), sqrt(r1) r2)
    r1 = np.sqrt(rng.random(face.shape, dtype=np.float32))
    r2 = rng.random(face.shape, dtype=np.float32)
    weights = np.empty((len(face), 3), np.float32)
    weights[:, 1], weights[:, 2] = r1 * (1 - r2), r1 * r2
    weights[:, 0] = 1 - weights[:, 1] - weights[:, 2]
    # position and colour mixed in one pass over the sampled triangles' corners only
    mixed = np.einsum("nk,nkd->nd", weights, np.take(tri, face, axis=0))
    shape = (n_groups, points_per_group, 3)
    return mixed[:, :3].reshape(shape), np.clip(np.rint(mixed[:, 3:]), 0, 255).astype(np.uint8).reshape(shape)


def densify_objects(
    scene: Scene, points_per_object: int, seed: int = 0, skip_labels: tuple[str, ...] = ()
) -> list[ObjectCloud]:
    """P points sampled uniformly over each object's surface (faces with all vertices in the object)."""
    objects = [o for o in scene.objects if o.label not in skip_labels]
    if not objects:
        return []
    ids = np.array([o.object_id for o in objects])
    # face -> index into `objects` through a lookup table, or dropped (unlabelled, boundary or skipped faces)
    lookup = np.full(int(max(scene.instance_ids.max(initial=-1), ids.max())) + 2, -1, np.int32)
    lookup[ids + 1] = np.arange(len(ids))
    corners = np.take(lookup[scene.instance_ids + 1], scene.faces)  # each face corner's object, or -1
    same = (corners[:, 0] == corners[:, 1]) & (corners[:, 1] == corners[:, 2])
    keep = np.flatnonzero(same & (corners[:, 0] >= 0))
    group = corners[:, 0]
    try:
        points, colors = sample_surface(
            scene.vertices,
            scene.colors,
            np.take(scene.faces, keep, axis=0),
            group[keep],
            len(ids),
            points_per_object,
            scene_rng(scene.scene_id, seed),
        )
    except EmptySurfaceError as e:
        o = objects[e.group]
        raise ScanFormatError(
            scene.scene_id, f"object {o.object_id} ({o.label!r}) has no surface area to sample"
        ) from None
    centers, sizes, counts = _boxes(scene, ids)
    return [
        ObjectCloud(scene.scene_id, o.object_id, o.label, points[g], colors[g], centers[g], sizes[g], counts[g])
        for g, o in enumerate(objects)
    ]


def sparse_objects(
    scene: Scene, points_per_object: int, seed: int = 0, skip_labels: tuple[str, ...] = ()
) -> list[ObjectCloud]:
    """LEO's baseline: P of the object's scan vertices, drawn with replacement only when it has fewer than P."""
    rng = scene_rng(scene.scene_id, seed)
    objects = [o for o in scene.objects if o.label not in skip_labels]
    centers, sizes, counts = _boxes(scene, np.array([o.object_id for o in objects]))
    out = []
    for g, o in enumerate(objects):
        idx = np.flatnonzero(scene.instance_ids == o.object_id)
        pick = rng.choice(idx, size=points_per_object, replace=len(idx) < points_per_object)
        out.append(
            ObjectCloud(
                scene.scene_id,
                o.object_id,
                o.label,
                scene.vertices[pick],
                scene.colors[pick],
                centers[g],
                sizes[g],
                counts[g],
            )
        )
    return out
