"""Mesh primitives, and the two steps that make a scan of them: decimation and noise.

Each primitive is tessellated at a given density (vertices per square metre) with jittered vertices.
synth.py builds objects finely and then treats them as a reconstruction is treated: `decimate`
(open3d's quadric decimation, as ScanNet's `vh_clean_2` meshes are decimated to a budget) and
`jitter` (the reconstruction's error on every vertex), so a cup ends up a few dozen vertices wherever
the decimation kept them, not on the parts a modeller would have placed them on. Every function
returns (vertices (V,3) float64, faces (F,3) int64).
"""

from __future__ import annotations

import numpy as np

Part = tuple[np.ndarray, np.ndarray]


def _grid_faces(nu: int, nv: int, wrap_u: bool = False) -> np.ndarray:
    """Two triangles per cell of an (nu+1) x (nv+1) vertex grid; with wrap_u the u direction closes."""
    cols = nu if wrap_u else nu + 1
    u, v = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    a = u * (nv + 1) + v
    b = ((u + 1) % cols) * (nv + 1) + v
    quads = np.stack([a, b, b + 1, a + 1], axis=-1).reshape(-1, 4)
    return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def _steps(length: float, density: float, minimum: int = 1) -> int:
    return max(minimum, int(round(length * np.sqrt(density))))


def _jittered(n: int, rng: np.random.Generator, amount: float = 0.35) -> np.ndarray:
    """n+1 values in [0, 1] with fixed ends and interior points jittered by `amount` of a cell."""
    t = np.linspace(0.0, 1.0, n + 1)
    if n > 1:
        t[1:-1] += rng.uniform(-amount, amount, n - 1) / n
    return t


def quad(origin, edge_u, edge_v, density: float, rng: np.random.Generator) -> Part:
    """A planar parallelogram origin + s*edge_u + t*edge_v, s,t in [0,1]."""
    origin, edge_u, edge_v = (np.asarray(x, dtype=np.float64) for x in (origin, edge_u, edge_v))
    nu, nv = _steps(np.linalg.norm(edge_u), density), _steps(np.linalg.norm(edge_v), density)
    s, t = np.meshgrid(_jittered(nu, rng), _jittered(nv, rng), indexing="ij")
    if nu > 1 and nv > 1:  # in-plane jitter of interior vertices: uneven triangles, as in scans
        interior = (slice(1, -1), slice(1, -1))
        s[interior] += rng.uniform(-0.3, 0.3, s[interior].shape) / nu
        t[interior] += rng.uniform(-0.3, 0.3, t[interior].shape) / nv
    verts = origin + s.reshape(-1, 1) * edge_u + t.reshape(-1, 1) * edge_v
    return verts, _grid_faces(nu, nv)


def box(center, size, density: float, rng: np.random.Generator, bottom: bool = True) -> Part:
    """An axis-aligned box as six separate faces (scans are not watertight either)."""
    c, (sx, sy, sz) = np.asarray(center, dtype=np.float64), size
    lo = c - np.array([sx, sy, sz]) / 2
    ex, ey, ez = np.array([sx, 0, 0]), np.array([0, sy, 0]), np.array([0, 0, sz])
    sides = [
        (lo + ez, ex, ey),  # top
        (lo, ex, ez),
        (lo + ey, ez, ex),  # front, back
        (lo, ez, ey),
        (lo + ex, ey, ez),  # left, right
    ]
    if bottom:
        sides.append((lo, ey, ex))
    return merge([quad(o, u, v, density, rng) for o, u, v in sides])


def frustum(
    base_center,
    r_bottom: float,
    r_top: float,
    height: float,
    density: float,
    rng: np.random.Generator,
    top_cap: bool = True,
    bottom_cap: bool = False,
) -> Part:
    """A (truncated) cone or cylinder standing on base_center, with optional fan caps."""
    base = np.asarray(base_center, dtype=np.float64)
    r_mean = max(r_bottom, r_top, 1e-3)
    n_around = _steps(2 * np.pi * r_mean, density, minimum=6)
    n_up = _steps(np.hypot(height, r_bottom - r_top), density)
    theta = (np.arange(n_around) + rng.uniform(-0.25, 0.25, n_around)) * (2 * np.pi / n_around)
    h = _jittered(n_up, rng)
    radius = r_bottom + (r_top - r_bottom) * h
    th, hh = np.meshgrid(theta, h, indexing="ij")
    rr = np.broadcast_to(radius, th.shape)
    verts = np.stack([rr * np.cos(th), rr * np.sin(th), hh * height], -1).reshape(-1, 3) + base
    faces = _grid_faces(n_around, n_up, wrap_u=True)
    parts = [(verts, faces)]
    ring = np.arange(n_around) * (n_up + 1)
    for cap, level, flip in ((top_cap, n_up, False), (bottom_cap, 0, True)):
        if cap and radius[level] > 1e-6:
            centre = base + np.array([0, 0, height * h[level]])
            rim = verts[ring + level]
            tri = np.stack(
                [np.zeros(n_around, int), 1 + np.arange(n_around), 1 + (np.arange(n_around) + 1) % n_around], -1
            )
            parts.append((np.vstack([centre, rim]), tri[:, [0, 2, 1]] if flip else tri))
    return merge(parts)


def ellipsoid(center, radii, density: float, rng: np.random.Generator) -> Part:
    """A UV ellipsoid (pillows, plant foliage) with poles closed by fans."""
    c, r = np.asarray(center, dtype=np.float64), np.asarray(radii, dtype=np.float64)
    n_lon = _steps(2 * np.pi * r[:2].mean(), density, minimum=6)
    n_lat = _steps(np.pi * r.mean(), density, minimum=3)
    lon = (np.arange(n_lon) + rng.uniform(-0.25, 0.25, n_lon)) * (2 * np.pi / n_lon)
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)[1:-1]
    lo, la = np.meshgrid(lon, lat, indexing="ij")
    ring = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    verts = np.vstack([ring * r + c, c - [0, 0, r[2]], c + [0, 0, r[2]]])
    faces = [_grid_faces(n_lon, n_lat - 2, wrap_u=True)] if n_lat > 2 else []
    south, north = len(ring), len(ring) + 1
    rows = n_lat - 1
    idx = np.arange(n_lon) * rows
    nxt = ((np.arange(n_lon) + 1) % n_lon) * rows
    faces.append(np.stack([np.full(n_lon, south), nxt, idx], -1))
    faces.append(np.stack([np.full(n_lon, north), idx + rows - 1, nxt + rows - 1], -1))
    return verts, np.concatenate(faces)


def strip(polyline, width, rng: np.random.Generator, density: float | None = None) -> Part:
    """A ribbon along a polyline, `width` (a vector) across: a mug's handle or a row of keys; with
    `density`, the polyline is resampled to that many vertices per square metre's spacing."""
    line = np.asarray(polyline, dtype=np.float64)
    if density is not None:
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        t = np.r_[0, np.cumsum(seg)]
        at = np.linspace(0, t[-1], max(len(line), _steps(t[-1], density) + 1))
        line = np.stack([np.interp(at, t, line[:, i]) for i in range(3)], axis=1)
    line = line + rng.normal(0, 0.001, line.shape)  # scan noise; keeps the strip from being perfectly planar
    half = np.asarray(width, dtype=np.float64) / 2
    verts = np.concatenate([line - half, line + half])  # vertex i and i + k face each other
    k = len(line)
    i = np.arange(k - 1)
    faces = np.concatenate([np.stack([i, i + 1, k + i + 1], -1), np.stack([i, k + i + 1, k + i], -1)])
    return verts, faces


def area(part: Part) -> float:
    """Total area of the triangles, m^2."""
    v, f = part
    return float(0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum())


def decimate(part: Part, vertices: int) -> Part:
    """Quadric-error decimation (Garland and Heckbert, open3d's) to about `vertices` vertices: edges collapse
    where the surface is flattest, so what survives is where the shape bends. Deterministic for a given mesh."""
    import open3d as o3d

    v, f = part
    if len(v) <= vertices:
        return part
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=max(2 * vertices, 4))
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)


def jitter(part: Part, sigma: float, rng: np.random.Generator) -> Part:
    """Every vertex moved by isotropic Gaussian noise of `sigma` metres: a reconstruction's error."""
    v, f = part
    return v + rng.normal(0.0, sigma, v.shape), f


def merge(parts: list[Part]) -> Part:
    """Concatenate parts into one vertex/face list, offsetting face indices."""
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.vstack(verts), np.vstack(faces)
