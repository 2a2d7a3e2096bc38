"""Per-object point clouds: dense re-sampling of the mesh surface, and LEO's sparse baseline.

CL3DOR's first idea: a small object in a decimated scan is a few dozen vertices, too few for a
point encoder. Sampling P points uniformly over the object's triangles (area-weighted, colours
interpolated barycentrically) gives every object the same, even coverage. The whole scene is
sampled in one call: faces are sorted by object (a linear radix sort of 16-bit keys), and a compiled
loop (numba) walks each object's faces once for their cumulative area, then draws its P samples by
inverse CDF, reading only the sampled triangles' corners. `benchmarks/bench_densify.py` times it
against open3d.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numba
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


def _vertex_groups(scene: Scene, object_ids: np.ndarray) -> np.ndarray:
    """Each vertex's index into `object_ids`, or -1 (unlabelled, or an object left out)."""
    object_ids = np.asarray(object_ids, np.int64)
    top = int(max(scene.instance_ids.max(initial=-1), object_ids.max(initial=-1)))
    lookup = np.full(top + 2, -1, np.int32)
    lookup[object_ids + 1] = np.arange(len(object_ids))  # +1: instance id -1 (unlabelled) maps to -1
    return lookup[scene.instance_ids + 1]


@numba.njit(cache=True, nogil=True)
def _group_boxes(vertices, vertex_group, n_groups):
    """Per group: the lowest and highest corner of its vertices' axis-aligned box, and their count."""
    lo = np.full((n_groups, 3), np.inf, np.float32)
    hi = np.full((n_groups, 3), -np.inf, np.float32)
    counts = np.zeros(n_groups, np.int64)
    for v in range(len(vertex_group)):
        g = vertex_group[v]
        if g >= 0:
            counts[g] += 1
            for d in range(3):
                lo[g, d] = min(lo[g, d], vertices[v, d])
                hi[g, d] = max(hi[g, d], vertices[v, d])
    return lo, hi, counts


def _boxes(scene: Scene, object_ids: np.ndarray, vertex_group: np.ndarray | None = None):
    """Axis-aligned box (centre, size) and vertex count of each object, in one pass over the vertices."""
    group = _vertex_groups(scene, object_ids) if vertex_group is None else vertex_group
    lo, hi, counts = _group_boxes(np.ascontiguousarray(scene.vertices, np.float32), group, len(object_ids))
    empty = counts == 0
    lo[empty], hi[empty] = 0, 0
    return ((lo + hi) / 2).astype(np.float32), (hi - lo).astype(np.float32), counts.tolist()


@numba.njit(cache=True, nogil=True)
def _group_faces(vertex_group, faces, n_groups):
    """The faces whose three corners are in one group, sorted by group (a counting sort, stable), and
    each group's [start, end) in them."""
    counts = np.zeros(n_groups + 1, np.int64)
    face_group = np.empty(len(faces), np.int64)
    for f in range(len(faces)):
        g = vertex_group[faces[f, 0]]
        face_group[f] = g if g >= 0 and vertex_group[faces[f, 1]] == g and vertex_group[faces[f, 2]] == g else -1
        if face_group[f] >= 0:
            counts[face_group[f] + 1] += 1
    starts = np.cumsum(counts)
    out = np.empty((starts[-1], 3), np.int64)
    fill = starts[:-1].copy()
    for f in range(len(faces)):
        g = face_group[f]
        if g >= 0:
            out[fill[g]] = faces[f]
            fill[g] += 1
    return out, starts[:-1], starts[1:]


@numba.njit(cache=True, nogil=True)
def _sample_groups(vertices, colors, faces, starts, ends, u, r1, r2, points, out_colors):
    """The compiled inner loop of `sample_surface`: per group, the cumulative area of its faces, then per
    sample the inverse-CDF face and its barycentric mix of corners. Returns the first group without
    surface area, or -1. Reads the corners in place (no gathered copy of every face)."""
    n_groups, per_group = u.shape
    for g in range(n_groups):
        s, n = starts[g], ends[g] - starts[g]
        cdf = np.empty(n, np.float64)  # float64: tiny faces must not vanish in a large running sum
        total = 0.0
        for i in range(n):
            a, b, c = faces[s + i, 0], faces[s + i, 1], faces[s + i, 2]
            # |e1 x e2| / 2 in scalars: a small array per face would cost an allocation each
            e1x, e1y, e1z = (
                vertices[b, 0] - vertices[a, 0],
                vertices[b, 1] - vertices[a, 1],
                vertices[b, 2] - vertices[a, 2],
            )
            e2x, e2y, e2z = (
                vertices[c, 0] - vertices[a, 0],
                vertices[c, 1] - vertices[a, 1],
                vertices[c, 2] - vertices[a, 2],
            )
            x, y, z = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
            total += 0.5 * np.sqrt(x * x + y * y + z * z)
            cdf[i] = total
        if total <= 0:
            return g
        for j in range(per_group):
            f = s + min(np.searchsorted(cdf, u[g, j] * total, side="right"), n - 1)
            k = g * per_group + j
            w1, w2 = r1[k] * (1 - r2[k]), r1[k] * r2[k]
            w0 = 1 - w1 - w2
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            for d in range(3):
                points[g, j, d] = w0 * vertices[a, d] + w1 * vertices[b, d] + w2 * vertices[c, d]
                mixed = w0 * colors[a, d] + w1 * colors[b, d] + w2 * colors[c, d]
                out_colors[g, j, d] = min(max(np.rint(mixed), 0), 255)
    return -1


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
    positive area. Returns points (n_groups, P, 3) float32 and colours (n_groups, P, 3) uint8. The
    random numbers come from `rng` (numpy), so the bytes depend on the seed alone; the loop over the
    samples is compiled (numba): numpy's gathers over every face cost 2.5x open3d's sampler here.
    """
    order = _sort_small(groups)
    groups = groups[order]
    ends = np.searchsorted(groups, np.arange(n_groups), side="right")  # one past each group's last face
    starts = np.r_[0, ends[:-1]]
    return _sample_sorted(vertices, colors, np.take(faces, order, axis=0), starts, ends, points_per_group, rng)


def _sample_sorted(vertices, colors, faces, starts, ends, points_per_group: int, rng: np.random.Generator):
    """`sample_surface` on faces already sorted by group, group g's being faces[starts[g]:ends[g]]."""
    n_groups = len(starts)
    # a face per sample, then its barycentric weights (1 - sqrt(r1), sqrt(r1)(1 - r2), sqrt(r1) r2)
    u = rng.random((n_groups, points_per_group))
    r1 = np.sqrt(rng.random(n_groups * points_per_group, dtype=np.float32))
    r2 = rng.random(n_groups * points_per_group, dtype=np.float32)
    points = np.empty((n_groups, points_per_group, 3), np.float32)
    out_colors = np.empty((n_groups, points_per_group, 3), np.uint8)
    empty = _sample_groups(
        np.ascontiguousarray(vertices, np.float32),
        np.ascontiguousarray(colors, np.float32),
        np.ascontiguousarray(faces, np.int64),
        np.asarray(starts, np.int64),
        np.asarray(ends, np.int64),
        u,
        r1,
        r2,
        points,
        out_colors,
    )
    if empty >= 0:
        raise EmptySurfaceError(int(empty))
    return points, out_colors


def densify_objects(
    scene: Scene, points_per_object: int, seed: int = 0, skip_labels: tuple[str, ...] = ()
) -> list[ObjectCloud]:
    """P points sampled uniformly over each object's surface (faces with all vertices in the object)."""
    objects = [o for o in scene.objects if o.label not in skip_labels]
    if not objects:
        return []
    ids = np.array([o.object_id for o in objects])
    # faces with all three corners in one kept object, grouped by object (unlabelled, boundary and
    # skipped faces dropped)
    vertex_group = _vertex_groups(scene, ids)
    faces, starts, ends = _group_faces(vertex_group, np.ascontiguousarray(scene.faces, np.int64), len(ids))
    try:
        points, colors = _sample_sorted(
            scene.vertices, scene.colors, faces, starts, ends, points_per_object, scene_rng(scene.scene_id, seed)
        )
    except EmptySurfaceError as e:
        o = objects[e.group]
        raise ScanFormatError(
            scene.scene_id, f"object {o.object_id} ({o.label!r}) has no surface area to sample"
        ) from None
    centers, sizes, counts = _boxes(scene, ids, vertex_group)
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
