"""Procedural indoor rooms written as ScanNet scans.

A room is a floor, four walls and 8-25 objects laid out with support relations (a cup on a
table, a pillow on a bed). `generate_scene` returns both the scene graph (the ground truth that
annotations are derived from) and the `Scene` mesh with its over-segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cl3dor_ray.scenes import primitives as prim
from cl3dor_ray.scenes.catalog import CATEGORIES, COLORS, Category
from cl3dor_ray.scenes.scannet import Scene, SceneObject, apply_alignment

OBJECT_DENSITY = 600.0  # scan vertices per m^2 on furniture; ScanNet's decimated meshes are of this order
STRUCTURE_DENSITY = 120.0  # floors and walls are decimated harder
# the surface is built this many times denser (small objects, large ones), then decimated to OBJECT_DENSITY;
# large furniture is mostly flat and costs most of the decimation's time, so it starts coarser
FINE = (4.0, 1.5)
SCAN_NOISE = 0.003  # metres: the reconstruction's error on every vertex
SEGMENT_TILE = 0.5  # metres: an object's over-segmentation, like ScanNet's graph-cut segments
MIN_OBJECTS, MAX_OBJECTS = 8, 25
_GAP = 0.08  # metres between floor-standing footprints


@dataclass
class SynthObject:
    object_id: int
    label: str
    color: str
    size: str  # "small", "medium" or "big" for its category
    center: np.ndarray  # (3,) centre of the axis-aligned box, aligned frame
    dims: np.ndarray  # (3,) box size
    support: int | None = None  # the object it rests on; None = the floor


@dataclass
class SceneGraph:
    scene_id: str
    room: np.ndarray  # (width, depth, height); the floor spans [-w/2, w/2] x [-d/2, d/2] at z = 0
    objects: list[SynthObject]

    def get(self, object_id: int) -> SynthObject:
        return next(o for o in self.objects if o.object_id == object_id)

    def on_top_of(self, object_id: int) -> list[SynthObject]:
        return [o for o in self.objects if o.support == object_id]

    def count(self, label: str) -> int:
        return sum(o.label == label for o in self.objects)


# ----------------------------------------------------------------------------------------- layout


def _pick(rng: np.random.Generator, categories: list[Category]) -> Category:
    weights = np.array([c.prior for c in categories])
    return categories[rng.choice(len(categories), p=weights / weights.sum())]


_ROUND = ("glass", "can", "bottle", "cylinder", "plant", "lamp")


def _sample_dims(rng, cat: Category) -> tuple[np.ndarray, str]:
    """A box within the category's range. Small objects draw each side on its own (round ones one
    diameter), so their sizes fill the overlapping ranges instead of lying on one line per category."""
    s = rng.uniform(size=3)
    if not cat.small and cat.label not in ("trash can", "plant"):
        s[:] = s[0]  # large furniture scales as a whole, as before
    if cat.shape in _ROUND:
        s[1] = s[0]
    dims = np.array(cat.size_min) + s * (np.array(cat.size_max) - np.array(cat.size_min))
    t = s.mean()
    return dims, "small" if t < 1 / 3 else "big" if t > 2 / 3 else "medium"


def _overlaps(lo, hi, boxes, gap) -> bool:
    return any(np.all(lo < b_hi + gap) and np.all(hi > b_lo - gap) for b_lo, b_hi in boxes)


def _place_on_floor(rng, cat, dims, room, placed, anchor=None):
    """Footprint centre (x, y) and possibly rotated dims, or None when the room has no space."""
    half_room = room[:2] / 2
    for _ in range(60):
        d = dims.copy()
        if cat.against_wall:
            wall = rng.integers(4)
            if wall >= 2:  # on the left/right wall the long side runs along y
                d[[0, 1]] = d[[1, 0]]
            xy = rng.uniform(-half_room + d[:2] / 2, half_room - d[:2] / 2)
            axis, sign = (1 if wall < 2 else 0), (1 if wall in (1, 3) else -1)
            xy[axis] = sign * (half_room[axis] - d[axis] / 2 - 0.02)
        elif anchor is not None:  # a chair pulled up to a table or desk
            side = rng.integers(4)
            axis, sign = side % 2, 1 if side < 2 else -1
            xy = anchor.center[:2].copy()
            xy[axis] += sign * (anchor.dims[axis] / 2 + d[axis] / 2 + 0.1)
            xy[1 - axis] += rng.uniform(-0.3, 0.3) * anchor.dims[1 - axis]
        else:
            xy = rng.uniform(-half_room + d[:2] / 2 + 0.1, half_room - d[:2] / 2 - 0.1)
        lo, hi = xy - d[:2] / 2, xy + d[:2] / 2
        if np.all(lo > -half_room) and np.all(hi < half_room) and not _overlaps(lo, hi, placed, _GAP):
            return xy, d
    return None


def surface_height(obj: SynthObject) -> float:
    """Height of the surface small objects rest on (a sofa's seat, not its back)."""
    top = obj.center[2] + obj.dims[2] / 2
    return obj.center[2] - obj.dims[2] / 2 + 0.5 * obj.dims[2] if obj.label == "sofa" else top


def _place_on_support(rng, dims, support: SynthObject, items_on_support):
    lo_s = support.center[:2] - support.dims[:2] / 2 + 0.03
    hi_s = support.center[:2] + support.dims[:2] / 2 - 0.03
    if np.any(hi_s - lo_s < dims[:2]):
        return None
    for _ in range(25):
        xy = rng.uniform(lo_s + dims[:2] / 2, hi_s - dims[:2] / 2)
        lo, hi = xy - dims[:2] / 2, xy + dims[:2] / 2
        if not _overlaps(lo, hi, items_on_support, 0.02):
            return xy
    return None


def layout_room(scene_id: str, rng: np.random.Generator) -> SceneGraph:
    room = np.array([rng.uniform(4.0, 8.0), rng.uniform(3.5, 7.0), rng.uniform(2.5, 2.9)])
    target = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    large = [c for c in CATEGORIES.values() if not c.small]
    small = [c for c in CATEGORIES.values() if c.small]
    surfaces = [c for c in large if c.holds and c.label != "sofa"]
    objects: list[SynthObject] = []
    footprints: list[tuple[np.ndarray, np.ndarray]] = []

    def add_floor_object(cat: Category) -> bool:
        dims, size = _sample_dims(rng, cat)
        anchors = [o for o in objects if o.label in ("table", "desk")]
        anchor = (
            anchors[rng.integers(len(anchors))] if cat.label == "chair" and anchors and rng.uniform() < 0.7 else None
        )
        spot = _place_on_floor(rng, cat, dims, room, footprints, anchor)
        if spot is None:
            return False
        xy, dims = spot
        footprints.append((xy - dims[:2] / 2, xy + dims[:2] / 2))
        color = cat.colors[rng.integers(len(cat.colors))]
        objects.append(SynthObject(len(objects), cat.label, color, size, np.r_[xy, dims[2] / 2], dims))
        return True

    n_large = int(np.clip(round(target * rng.uniform(0.35, 0.6)), 3, 12))
    add_floor_object(_pick(rng, surfaces))  # every room has somewhere to put small things
    for _ in range(4 * n_large):
        if len(objects) >= n_large:
            break
        add_floor_object(_pick(rng, large))

    for _ in range(6 * target):
        if len(objects) >= target:
            break
        cat = _pick(rng, small)
        supports = [o for o in objects if o.support is None and o.label in cat.on]
        if not supports:
            continue
        support = supports[rng.integers(len(supports))]
        dims, size = _sample_dims(rng, cat)
        if rng.uniform() < 0.5:  # turned a quarter: a keyboard or a mug's handle may run along either axis
            dims = dims[[1, 0, 2]]
        taken = [
            (o.center[:2] - o.dims[:2] / 2, o.center[:2] + o.dims[:2] / 2)
            for o in objects
            if o.support == support.object_id
        ]
        xy = _place_on_support(rng, dims, support, taken)
        if xy is None:
            continue
        z = surface_height(support) + dims[2] / 2
        color = cat.colors[rng.integers(len(cat.colors))]
        objects.append(SynthObject(len(objects), cat.label, color, size, np.r_[xy, z], dims, support.object_id))

    # Crowded rooms can fall short; top up with small floor-standing things.
    fillers = [CATEGORIES[c] for c in ("trash can", "plant", "chair")]
    for _ in range(50):
        if len(objects) >= MIN_OBJECTS:
            break
        add_floor_object(fillers[rng.integers(len(fillers))])
    return SceneGraph(scene_id, room, objects)


# ----------------------------------------------------------------------------------------- meshes


def _scanned(obj: SynthObject, rng) -> prim.Part:
    """The object as a reconstruction has it: its surface built finely, every vertex moved by the scan's
    noise, then decimated to the scan's vertex budget for its area (the decimation, not the modeller,
    decides which parts keep vertices), as ScanNet's fused meshes are decimated into `vh_clean_2`."""
    density = OBJECT_DENSITY * rng.uniform(0.6, 1.4)
    fine_density = FINE[0 if CATEGORIES[obj.label].small else 1] * density
    fine = prim.jitter(prim.merge(_object_parts(obj, fine_density, rng)), SCAN_NOISE, rng)
    return prim.decimate(fine, max(8, int(round(prim.area(fine) * density))))


def _object_parts(obj: SynthObject, d: float, rng) -> list[prim.Part]:
    """The object's parts at `d` vertices per m^2, small objects turned about the vertical."""
    parts = _upright_parts(obj, d, rng)
    if CATEGORIES[obj.label].small:  # small things stand at any angle, within a quarter turn's third
        yaw = rng.uniform(-0.5, 0.5)
        rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        parts = [((v - obj.center) @ rot.T + obj.center, f) for v, f in parts]
    return parts


def _upright_parts(obj: SynthObject, d: float, rng) -> list[prim.Part]:
    """The object's mesh parts, axis-aligned in its box."""
    c, (dx, dy, dz) = obj.center, obj.dims
    base = c - np.array([0, 0, dz / 2])
    shape = CATEGORIES[obj.label].shape
    if shape in ("table", "chair"):
        seat = dz if shape == "table" else 0.45
        t = 0.04
        parts = [prim.box(base + [0, 0, seat - t / 2], (dx, dy, t), d, rng)]
        leg = 0.05
        for sx in (-1, 1):
            for sy in (-1, 1):
                at = base + [sx * (dx - leg) / 2, sy * (dy - leg) / 2, (seat - t) / 2]
                parts.append(prim.box(at, (leg, leg, seat - t), d, rng, bottom=False))
        if shape == "chair":
            parts.append(prim.box(base + [0, (dy - leg) / 2, (seat + dz) / 2], (dx, leg, dz - seat), d, rng))
        return parts
    if shape == "sofa":
        seat_h, back = 0.5 * dz, 0.2
        depth_axis = 1 if dx >= dy else 0  # the back runs along the long side, on the wall side
        back_offset = np.zeros(3)
        back_offset[depth_axis] = np.sign(c[depth_axis] or 1.0) * (obj.dims[depth_axis] - back) / 2
        back_dims = np.array([dx, dy, dz - seat_h])
        back_dims[depth_axis] = back
        return [
            prim.box(base + [0, 0, seat_h / 2], (dx, dy, seat_h), d, rng, bottom=False),
            prim.box(base + [0, 0, seat_h + (dz - seat_h) / 2] + back_offset, back_dims, d, rng),
        ]
    if shape == "bed":
        frame = 0.6 * dz
        return [
            prim.box(base + [0, 0, frame / 2], (dx, dy, frame), d, rng, bottom=False),
            prim.box(base + [0, 0, frame + (dz - frame) / 2], (dx * 0.96, dy * 0.96, dz - frame), d, rng, bottom=False),
        ]
    if shape == "shelf":
        parts = [prim.box(c, (dx, dy, dz), d, rng, bottom=False)]
        for level in (0.33, 0.66):  # shelf boards stick out a little, like a scanned shelf front
            parts.append(prim.box(base + [0, -0.01, level * dz], (dx * 0.98, dy + 0.02, 0.02), d, rng))
        return parts
    if shape == "cylinder":
        r = min(dx, dy) / 2
        return [prim.frustum(base, r * 0.9, r, dz, d, rng)]
    if shape in _SMALL_SHAPES:
        return _SMALL_SHAPES[shape](base, obj.dims, d, rng)
    if shape == "plant":
        r = min(dx, dy) / 2
        return [
            prim.frustum(base, 0.5 * r, 0.6 * r, 0.35 * dz, d, rng),
            prim.ellipsoid(base + [0, 0, 0.35 * dz + 0.325 * dz], (r, r, 0.325 * dz), d, rng),
        ]
    if shape == "pillow":
        return [prim.ellipsoid(c, (dx / 2, dy / 2, dz / 2), d, rng)]
    if shape == "monitor":
        screen = 0.75 * dz
        thin = min(dy, 0.05)
        return [
            prim.box(base + [0, 0, 0.01], (0.4 * dx, dy, 0.02), d, rng),
            prim.box(base + [0, 0, 0.02 + (dz - screen - 0.02) / 2], (0.08, 0.04, dz - screen - 0.02), d, rng),
            prim.box(base + [0, 0, dz - screen / 2], (dx, thin, screen), d, rng),
        ]
    return [prim.box(c, (dx, dy, dz), d, rng)]


# ------------------------------------------------------------------ small objects: shape, not size


def _mug(base, dims, d, rng) -> list[prim.Part]:
    """An open cylinder with a handle sticking out along the footprint's long axis."""
    axis = 0 if dims[0] >= dims[1] else 1
    long, dz = dims[axis], dims[2]
    handle = float(np.clip(0.25 * long, 0.018, 0.03))
    r = min(long - handle, dims[1 - axis]) / 2
    side = rng.choice([-1.0, 1.0])
    out = np.zeros(3)
    out[axis] = side
    body = base - out * handle / 2  # body plus handle span the footprint
    width = np.zeros(3)
    width[1 - axis] = 0.014
    rim = body + out * r
    loop = [
        rim + [0, 0, 0.8 * dz],
        rim + out * handle + [0, 0, 0.75 * dz],
        rim + out * handle + [0, 0, 0.3 * dz],
        rim + [0, 0, 0.25 * dz],
    ]
    return [
        prim.frustum(body, 0.92 * r, r, dz, d, rng, top_cap=False, bottom_cap=True),
        prim.strip(loop, width, rng, density=d),
    ]


def _glass(base, dims, d, rng) -> list[prim.Part]:
    r = min(dims[0], dims[1]) / 2
    return [prim.frustum(base, 0.72 * r, r, dims[2], d, rng, top_cap=False, bottom_cap=True)]  # tapered, open


def _can(base, dims, d, rng) -> list[prim.Part]:
    r, dz = min(dims[0], dims[1]) / 2, dims[2]
    return [
        prim.frustum(base, 0.9 * r, r, 0.08 * dz, d, rng, top_cap=False),  # the bottom's bevel
        prim.frustum(base + [0, 0, 0.08 * dz], r, r, 0.84 * dz, d, rng, top_cap=False),
        prim.frustum(base + [0, 0, 0.92 * dz], r, 0.85 * r, 0.08 * dz, d, rng),
    ]  # shoulder and lid


def _bottle(base, dims, d, rng) -> list[prim.Part]:
    r, dz = min(dims[0], dims[1]) / 2, dims[2]
    return [
        prim.frustum(base, r, r, 0.55 * dz, d, rng, top_cap=False, bottom_cap=True),
        prim.frustum(base + [0, 0, 0.55 * dz], r, 0.35 * r, 0.15 * dz, d, rng, top_cap=False),
        prim.frustum(base + [0, 0, 0.70 * dz], 0.35 * r, 0.35 * r, 0.30 * dz, d, rng),
    ]  # the neck


def _book(base, dims, d, rng) -> list[prim.Part]:
    """A page block between two covers that overhang it, and the spine that joins them."""
    dx, dy, dz = dims
    spine = rng.choice([-1.0, 1.0]) * dy / 2
    block = (0.94 * dx, 0.92 * dy, 0.8 * dz)
    return [
        prim.box(base + [0, -0.04 * spine, 0.5 * dz], block, d, rng, bottom=False),
        prim.quad(base + [-dx / 2, -dy / 2, 0.1 * dz], (dx, 0, 0), (0, dy, 0), d, rng),
        prim.quad(base + [-dx / 2, -dy / 2, dz], (dx, 0, 0), (0, dy, 0), d, rng),
        prim.quad(base + [-dx / 2, spine, 0.1 * dz], (dx, 0, 0), (0, 0, 0.9 * dz), d, rng),
    ]


def _keyboard(base, dims, d, rng) -> list[prim.Part]:
    """A thin slab with rows of keys raised across its long axis."""
    axis = 0 if dims[0] >= dims[1] else 1
    long, short, dz = dims[axis], dims[1 - axis], dims[2]
    along, across = np.zeros(3), np.zeros(3)
    along[axis], across[1 - axis] = 1.0, 1.0
    parts = [prim.box(base + [0, 0, 0.3 * dz], along * long + across * short + [0, 0, 0.6 * dz], d, rng)]
    rows = 5
    for k in range(rows):  # each row of keys is a raised strip with a gap to the next
        at = base + across * short * ((k + 0.5) / rows - 0.5) + [0, 0, dz]
        ends = [at - along * 0.45 * long, at, at + along * 0.45 * long]
        parts.append(prim.strip(ends, across * 0.6 * short / rows, rng, density=d))
    return parts


def _carton(base, dims, d, rng) -> list[prim.Part]:
    """A closed carton with its lid flaps standing a little open."""
    dx, dy, dz = dims
    flap = 0.25 * min(dx, dy)
    parts = [prim.box(base + [0, 0, 0.9 * dz / 2], (dx, dy, 0.9 * dz), d, rng)]
    for sign in (-1.0, 1.0):
        edge = base + [0, sign * dy / 2, 0.9 * dz]
        parts.append(prim.quad(edge - [dx / 2, 0, 0], (dx, 0, 0), (0, -sign * flap * 0.3, 0.1 * dz), d, rng))
    return parts


def _lamp(base, dims, d, rng) -> list[prim.Part]:
    r, dz = min(dims[0], dims[1]) / 2, dims[2]
    return [
        prim.frustum(base, 0.5 * r, 0.5 * r, 0.03, d, rng),
        prim.frustum(base + [0, 0, 0.03], 0.08 * r, 0.08 * r, 0.57 * dz, d, rng, top_cap=False),
        prim.frustum(base + [0, 0, 0.6 * dz], r, 0.6 * r, 0.4 * dz, d, rng, top_cap=False, bottom_cap=True),
    ]


_SMALL_SHAPES = {
    "mug": _mug,
    "glass": _glass,
    "can": _can,
    "bottle": _bottle,
    "book": _book,
    "keyboard": _keyboard,
    "carton": _carton,
    "lamp": _lamp,
}


def _shade(rgb, verts: np.ndarray, rng, lo: float, hi: float) -> np.ndarray:
    """Per-vertex colour as a fused RGB-D scan records it: one exposure per part, light falling off
    towards the floor (within the object's own height, lo..hi), and sensor speckle per vertex."""
    tone = np.asarray(rgb, dtype=np.float64) * rng.uniform(0.78, 1.02)
    height = np.clip((verts[:, 2:3] - lo) / max(hi - lo, 1e-6), 0, 1)
    shaded = tone * (0.82 + 0.18 * height) + rng.normal(0, 12, (len(verts), 3))
    return np.clip(shaded, 0, 255).astype(np.uint8)


def _structure_parts(room, rng) -> list[tuple[str, prim.Part]]:
    w, dpt, h = room
    x0, y0 = -w / 2, -dpt / 2
    walls = [
        ((x0, y0, 0), (w, 0, 0)),
        ((x0, -y0, 0), (w, 0, 0)),
        ((x0, y0, 0), (0, dpt, 0)),
        ((-x0, y0, 0), (0, dpt, 0)),
    ]
    parts = [("floor", prim.quad((x0, y0, 0), (w, 0, 0), (0, dpt, 0), STRUCTURE_DENSITY, rng))]
    parts += [("wall", prim.quad(o, e, (0, 0, h), STRUCTURE_DENSITY, rng)) for o, e in walls]
    return parts


def build_scene(graph: SceneGraph, rng: np.random.Generator) -> tuple[Scene, np.ndarray]:
    """Mesh the scene graph. Returns the Scene and its per-vertex over-segmentation."""
    verts, faces, colors, inst, segs = [], [], [], [], []
    offset, next_segment = 0, int(rng.integers(1, 500))

    def add(part: prim.Part, rgb, object_id: int, z_range: tuple[float, float], tile: float | None = None):
        nonlocal offset, next_segment
        v, f = part
        verts.append(v)
        faces.append(f + offset)
        colors.append(_shade(rgb, v, rng, *z_range))
        inst.append(np.full(len(v), object_id, dtype=np.int32))
        if tile is None:  # a part is one segment
            seg = np.full(len(v), next_segment, dtype=np.int64)
        else:  # big flat parts are over-segmented into tiles, like ScanNet's graph-cut segments
            cell = np.floor((v - v.min(0)) / tile).astype(np.int64)
            _, seg = np.unique(cell, axis=0, return_inverse=True)
            seg = next_segment + seg.ravel()
        segs.append(seg)
        next_segment = int(seg.max()) + int(rng.integers(1, 40))
        offset += len(v)

    for obj in graph.objects:
        z_range = (obj.center[2] - obj.dims[2] / 2, obj.center[2] + obj.dims[2] / 2)
        add(_scanned(obj, rng), COLORS[obj.color], obj.object_id, z_range, tile=SEGMENT_TILE)
    objects = [SceneObject(o.object_id, o.label) for o in graph.objects]
    floor_rgb = (rng.integers(150, 210),) * 2 + (rng.integers(120, 170),)
    wall_rgb = (rng.integers(200, 240),) * 3
    for label, part in _structure_parts(graph.room, rng):
        object_id = len(objects)
        objects.append(SceneObject(object_id, label))
        add(
            prim.jitter(part, SCAN_NOISE, rng),
            floor_rgb if label == "floor" else wall_rgb,
            object_id,
            (0.0, float(graph.room[2])),
            tile=1.5,
        )

    vertices = np.vstack(verts)
    instance_ids = np.concatenate(inst)
    for obj in graph.objects:  # the scene graph's boxes are what the mesh really spans
        mine = vertices[instance_ids == obj.object_id]
        obj.center = (mine.min(0) + mine.max(0)) / 2
        obj.dims = mine.max(0) - mine.min(0)

    # Like ScanNet, the stored mesh is in the sensor frame; axisAlignment maps it to the room frame.
    theta, shift = rng.uniform(0, 2 * np.pi), np.r_[rng.uniform(-3, 3, 2), 0.0]
    align = np.eye(4)
    align[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    align[:3, 3] = shift
    raw = apply_alignment(vertices, np.linalg.inv(align))
    scene = Scene(
        scene_id=graph.scene_id,
        vertices=apply_alignment(raw, align),
        colors=np.vstack(colors),
        faces=np.vstack(faces).astype(np.int32),
        instance_ids=instance_ids,
        objects=objects,
        axis_alignment=align,
    )
    return scene, np.concatenate(segs)


def generate_scene(scene_id: str, seed: int, index: int) -> tuple[SceneGraph, Scene, np.ndarray]:
    """One room, deterministic in (seed, index) and independent of the other rooms."""
    rng = np.random.default_rng([seed, index])
    graph = layout_room(scene_id, rng)
    scene, segments = build_scene(graph, rng)
    return graph, scene, segments
