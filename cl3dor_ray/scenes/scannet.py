"""ScanNet scan folders: `scans/<scene_id>/` -> `Scene`, and back.

A scan folder holds
    <scene_id>_vh_clean_2.ply                 triangle mesh with per-vertex colours
    <scene_id>_vh_clean_2.0.010000.segs.json  {"segIndices": [...]}, one segment id per vertex
    <scene_id>.aggregation.json               {"segGroups": [{"objectId", "label", "segments"}, ...]}
    <scene_id>.txt                            "axisAlignment = m00 m01 ... m33" (row-major 4x4), optional
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.ply import Mesh, read_ply, write_ply

# The room's shell. ScanNet annotates it like any object, but it is not an "object" for questions,
# captions or object tokens.
STRUCTURE_LABELS = ("wall", "floor", "ceiling")


@dataclass(frozen=True)
class SceneObject:
    object_id: int
    label: str


@dataclass
class Scene:
    """A scan in the axis-aligned frame. `instance_ids[i]` is the object of vertex i, or -1."""

    scene_id: str
    vertices: np.ndarray  # (N, 3) float32, axis-aligned
    colors: np.ndarray  # (N, 3) uint8
    faces: np.ndarray  # (F, 3) int32
    instance_ids: np.ndarray  # (N,) int32
    objects: list[SceneObject]
    axis_alignment: np.ndarray = field(default_factory=lambda: np.eye(4))  # (4, 4) float64
    # False when <scene_id>.txt (or its axisAlignment line) was absent and the identity was used.
    axis_alignment_found: bool = True

    def object_faces(self, object_id: int) -> np.ndarray:
        """Triangles whose three vertices all belong to the object."""
        return self.faces[self.face_instance_ids() == object_id]

    def face_instance_ids(self) -> np.ndarray:
        """Object id per face (all three vertices agree), else -1."""
        ids = np.take(self.instance_ids, self.faces)
        same = (ids[:, 0] == ids[:, 1]) & (ids[:, 1] == ids[:, 2])
        return np.where(same, ids[:, 0], -1)

    @property
    def extent(self) -> float:
        """Length of the scene's bounding-box diagonal, the scale for geometric tolerances."""
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))


def scan_files(scan_dir: Path, scene_id: str) -> dict[str, Path]:
    return {
        "mesh": scan_dir / f"{scene_id}_vh_clean_2.ply",
        "segs": scan_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json",
        "aggregation": scan_dir / f"{scene_id}.aggregation.json",
        "meta": scan_dir / f"{scene_id}.txt",
    }


def apply_alignment(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[points.astype(np.float64), np.ones(len(points))]
    return (homogeneous @ matrix.T)[:, :3].astype(np.float32)


def _load_json(path: Path, key: str):
    if not path.is_file():
        raise ScanFormatError(path, "missing file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScanFormatError(path, f"invalid JSON: {e}") from None
    if not isinstance(doc, dict) or key not in doc:
        raise ScanFormatError(path, f"expected a JSON object with a '{key}' field")
    return doc[key]


def read_alignment(path: Path) -> tuple[np.ndarray, bool]:
    if not path.is_file():
        return np.eye(4), False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip().startswith("axisAlignment"):
            try:
                values = [float(x) for x in line.split("=", 1)[1].split()]
            except ValueError:
                values = []
            if len(values) != 16 or not np.all(np.isfinite(values)):
                raise ScanFormatError(path, "axisAlignment must be 16 finite numbers (a row-major 4x4 matrix)")
            return np.array(values, dtype=np.float64).reshape(4, 4), True
    return np.eye(4), False


def read_scan(scan_dir: str | Path) -> Scene:
    """Read `scans/<scene_id>/` into a Scene; raises ScanFormatError naming the file and the defect."""
    scan_dir = Path(scan_dir)
    scene_id = scan_dir.name
    files = scan_files(scan_dir, scene_id)

    mesh = read_ply(files["mesh"])
    if not np.all(np.isfinite(mesh.vertices)):
        bad = int(np.flatnonzero(~np.isfinite(mesh.vertices).all(1))[0])
        raise ScanFormatError(files["mesh"], f"vertex {bad} has a NaN or infinite coordinate")

    seg_indices = _load_json(files["segs"], "segIndices")
    if not isinstance(seg_indices, list) or not all(isinstance(s, int) for s in seg_indices):
        raise ScanFormatError(files["segs"], "segIndices must be a list of integers")
    seg_indices = np.asarray(seg_indices, dtype=np.int64)
    if len(seg_indices) != len(mesh.vertices):
        raise ScanFormatError(
            files["segs"],
            f"segIndices has {len(seg_indices)} entries but the mesh has {len(mesh.vertices)} vertices; "
            "expected one segment id per vertex",
        )

    groups = _load_json(files["aggregation"], "segGroups")
    present_segments = np.unique(seg_indices)
    segment_ids, segment_objects, objects = [], [], []
    for i, group in enumerate(groups):
        try:
            object_id, label, segments = int(group["objectId"]), str(group["label"]), list(group["segments"])
        except (KeyError, TypeError, ValueError):
            raise ScanFormatError(
                files["aggregation"], f"segGroups[{i}] needs integer 'objectId', string 'label' and list 'segments'"
            ) from None
        if any(o.object_id == object_id for o in objects):
            raise ScanFormatError(files["aggregation"], f"objectId {object_id} appears twice in segGroups")
        segments = np.asarray(segments, dtype=np.int64)
        absent = segments[~np.isin(segments, present_segments)]
        if absent.size:
            raise ScanFormatError(
                files["aggregation"],
                f"object {object_id} ({label!r}) lists segments {absent[:5].tolist()} that no vertex has in "
                f"{files['segs'].name}",
            )
        objects.append(SceneObject(object_id, label))
        segment_ids.append(segments)
        segment_objects.append(np.full(len(segments), object_id))

    # Vertex -> segment -> object, vectorised. As in ScanNet's own export, a later group wins a shared segment.
    instance_ids = np.full(len(seg_indices), -1, dtype=np.int32)
    if objects:
        seg_keys = np.concatenate(segment_ids)
        seg_vals = np.concatenate(segment_objects)
        _, last = np.unique(seg_keys[::-1], return_index=True)
        keep = len(seg_keys) - 1 - last
        seg_keys, seg_vals = seg_keys[keep], seg_vals[keep]
        order = np.argsort(seg_keys)
        seg_keys, seg_vals = seg_keys[order], seg_vals[order]
        pos = np.clip(np.searchsorted(seg_keys, seg_indices), 0, len(seg_keys) - 1)
        hit = seg_keys[pos] == seg_indices
        instance_ids[hit] = seg_vals[pos[hit]]

    alignment, found = read_alignment(files["meta"])
    scene = Scene(
        scene_id=scene_id,
        vertices=apply_alignment(mesh.vertices, alignment),
        colors=mesh.colors,
        faces=mesh.faces,
        instance_ids=instance_ids,
        objects=objects,
        axis_alignment=alignment,
        axis_alignment_found=found,
    )
    face_ids = scene.face_instance_ids()
    faceless = [o for o in objects if not np.any(face_ids == o.object_id)]
    if faceless:
        o = faceless[0]
        raise ScanFormatError(
            files["aggregation"],
            f"object {o.object_id} ({o.label!r}) has no faces: no triangle has all three vertices in its segments",
        )
    return scene


def write_scan(
    scene: Scene,
    scans_root: str | Path,
    segments: np.ndarray | None = None,
    scene_type: str = "Apartment",
    binary: bool = True,
) -> Path:
    """Write `scans_root/<scene_id>/` in ScanNet's format; returns the folder.

    `segments` is the per-vertex over-segmentation; without it each object is one segment and the
    unlabelled vertices another.
    """
    out = Path(scans_root) / scene.scene_id
    out.mkdir(parents=True, exist_ok=True)
    files = scan_files(out, scene.scene_id)
    raw = apply_alignment(scene.vertices, np.linalg.inv(scene.axis_alignment))
    write_ply(files["mesh"], Mesh(raw, scene.colors, scene.faces), binary=binary)

    if segments is None:
        segments = scene.instance_ids.astype(np.int64) + 1  # 0 = unlabelled
    segments = np.asarray(segments, dtype=np.int64)
    files["segs"].write_text(
        json.dumps(
            {
                "params": {
                    "kThresh": "0.0001",
                    "segMinVerts": "20",
                    "minPoints": "750",
                    "maxPoints": "5000",
                    "sfmThresh": "0.005",
                },
                "sceneId": scene.scene_id,
                "segIndices": segments.tolist(),
            }
        )
    )

    seg_groups = []
    for i, obj in enumerate(scene.objects):
        segs = np.unique(segments[scene.instance_ids == obj.object_id]).tolist()
        seg_groups.append({"id": i, "objectId": obj.object_id, "segments": segs, "label": obj.label})
    files["aggregation"].write_text(
        json.dumps(
            {
                "sceneId": f"scannet.{scene.scene_id}",
                "appId": "Aggregator.v2",
                "segGroups": seg_groups,
                "segmentsFile": f"scannet.{files['segs'].name}",
            }
        )
    )

    if scene.axis_alignment_found:
        matrix = " ".join(repr(float(x)) for x in scene.axis_alignment.ravel())
        files["meta"].write_text(f"axisAlignment = {matrix}\nsceneType = {scene_type}\n")
    return out
