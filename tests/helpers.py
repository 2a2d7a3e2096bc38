"""Independent geometry and scan helpers for the tests."""

import json
import socket

import numpy as np

from cl3dor_ray.scenes.ply import read_ply, write_ply
from cl3dor_ray.scenes.scannet import scan_files

MALFORMED = [
    "truncated_ply",
    "seg_length",
    "unknown_segment",
    "nan",
    "inf",
    "missing_mesh",
    "missing_segs",
    "missing_aggregation",
    "faceless_object",
    "bad_json",
    "wrong_field",
]


def point_triangle_distance(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Distance from each point (P,3) to each triangle (T,3,3) -> (P,T).
    Ericson, Real-Time Collision Detection 5.1.5."""
    p = p[:, None, :]
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v, w = vb / denom, vc / denom
        closest = a + ab * v[..., None] + ac * w[..., None]  # interior
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        regions = [
            ((d1 <= 0) & (d2 <= 0), a),
            ((d3 >= 0) & (d4 <= d3), b),
            ((d6 >= 0) & (d5 <= d6), c),
            ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * t_ab[..., None]),
            ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * t_ac[..., None]),
            ((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), b + (c - b) * t_bc[..., None]),
        ]
    for mask, point in reversed(regions):  # first matching region wins, as in the reference
        closest = np.where(mask[..., None], np.broadcast_to(point, closest.shape), closest)
    return np.linalg.norm(p - closest, axis=-1)


def break_scan(folder, scene_id, what):
    """Damage a written scan in one of the MALFORMED ways; returns (bad file, expected message regex)."""
    files = scan_files(folder, scene_id)
    if what == "truncated_ply":
        data = files["mesh"].read_bytes()
        files["mesh"].write_bytes(data[: len(data) // 2])
        return files["mesh"], "truncated"
    if what == "seg_length":
        doc = json.loads(files["segs"].read_text())
        doc["segIndices"] = doc["segIndices"][:-7]
        files["segs"].write_text(json.dumps(doc))
        return files["segs"], "segIndices has .* entries but the mesh has .* vertices"
    if what == "unknown_segment":
        doc = json.loads(files["aggregation"].read_text())
        doc["segGroups"][2]["segments"].append(987654321)
        files["aggregation"].write_text(json.dumps(doc))
        return files["aggregation"], "segments \\[987654321\\] that no vertex has"
    if what in ("nan", "inf"):
        vertex, value = (17, np.nan) if what == "nan" else (3, np.inf)
        mesh = read_ply(files["mesh"])
        mesh.vertices = mesh.vertices.copy()
        mesh.vertices[vertex, vertex % 3] = value
        write_ply(files["mesh"], mesh)
        return files["mesh"], f"vertex {vertex} has a NaN or infinite coordinate"
    if what in ("missing_mesh", "missing_segs", "missing_aggregation"):
        key = what.split("_", 1)[1]
        files[key].unlink()
        return files[key], "missing file"
    if what == "faceless_object":
        # give one vertex of the mesh a segment of its own and make that segment an object
        doc = json.loads(files["segs"].read_text())
        doc["segIndices"][0] = 424242
        files["segs"].write_text(json.dumps(doc))
        agg = json.loads(files["aggregation"].read_text())
        agg["segGroups"].append({"id": 99, "objectId": 99, "label": "cup", "segments": [424242]})
        files["aggregation"].write_text(json.dumps(agg))
        return files["aggregation"], "object 99 \\('cup'\\) has no faces"
    if what == "bad_json":
        files["aggregation"].write_text('{"segGroups": [')
        return files["aggregation"], "invalid JSON"
    if what == "wrong_field":
        files["aggregation"].write_text(json.dumps({"groups": []}))
        return files["aggregation"], "'segGroups' field"
    raise AssertionError(what)


# ---------------------------------------------------------------- a tiny model and toy scenes

TINY_MODEL = [
    "model.lm.hidden_size=64",
    "model.lm.intermediate_size=128",
    "model.lm.num_heads=4",
    "model.lm.num_kv_heads=2",
    "model.lm.vocab_size=400",
    "model.num_points=64",
    "model.sa1=[16,8]",
    "model.sa2=[8,8]",
    "model.point_widths=[16,32,64]",
    "model.spatial_heads=4",
]


def toy_scenes(seed: int = 0):
    """Four samples over two scenes of random object clouds, each with 3 negatives."""
    rng = np.random.default_rng(seed)
    objects = {
        s: [
            {
                "object_id": i,
                "points": rng.normal(size=(128, 3)).astype(np.float32),
                "colors": rng.integers(0, 255, (128, 3)),
                "center": rng.normal(size=3),
                "size": rng.random(3),
            }
            for i in range(n)
        ]
        for s, n in (("scene0000_00", 3), ("scene0001_00", 5))
    }
    samples = [
        {
            "scene_id": "scene0000_00",
            "object_ids": [1],
            "question": "What color is the cup?",
            "answers": ["red"],
            "negatives": ["blue", "green", "yellow"],
        },
        {
            "scene_id": "scene0000_00",
            "object_ids": [2, 0],
            "question": "Where is the book placed?",
            "answers": ["on the table"],
            "negatives": ["under the table", "on the desk", "on the bed"],
        },
        {
            "scene_id": "scene0001_00",
            "object_ids": [],
            "question": "How many chairs are in the room?",
            "answers": ["2"],
            "negatives": ["3", "1", "4"],
        },
        {
            "scene_id": "scene0001_00",
            "object_ids": [4],
            "question": "Is there a lamp on the desk?",
            "answers": ["yes"],
            "negatives": ["no", "2", "red"],
        },
    ]
    corpus = [s["question"] for s in samples] + [a for s in samples for a in s["answers"] + s["negatives"]]
    return samples, objects, corpus


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
