"""Triangle-mesh PLY files, as ScanNet writes them (`*_vh_clean_2.ply`), through plyfile.

plyfile is what ScanNet's own scripts read their meshes with. It reads binary (either endianness)
and ASCII PLY, and raises on a truncated or malformed file (open3d returns an empty mesh instead);
here every such error becomes a `ScanFormatError` that names the file and what was wrong. Written in
ScanNet's own layout: float x,y,z; uchar red,green,blue,alpha; face list uchar int.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from cl3dor_ray.scenes.errors import ScanFormatError

FACE_LISTS = ("vertex_indices", "vertex_index")  # ScanNet's name, and the other one in use


@dataclass
class Mesh:
    vertices: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    faces: np.ndarray  # (F, 3) int32


def _parse(path: Path) -> PlyData:
    with open(path, "rb") as fh:
        if fh.read(3) != b"ply":
            raise ScanFormatError(path, "not a PLY file: it does not start with 'ply'")
        fh.seek(0)
        try:  # faces as one (F, 3) array, read at numpy's speed; another length is an error, not a quad
            return PlyData.read(fh, known_list_len={"face": {name: 3 for name in FACE_LISTS}})
        except PlyHeaderParseError as e:
            raise ScanFormatError(path, f"bad PLY header: {e}") from None
        except PlyElementParseError as e:
            if "end-of-file" in str(e):
                raise ScanFormatError(path, f"truncated PLY: {e}") from None
            if "list length" in str(e):
                raise ScanFormatError(path, f"{e}; expected triangles (3 vertex indices per face)") from None
            raise ScanFormatError(path, f"malformed PLY: {e}") from None
        except (ValueError, TypeError, KeyError) as e:  # plyfile's own checks of types and counts
            raise ScanFormatError(path, f"malformed PLY: {e}") from None


def _faces(path: Path, ply: PlyData, n_vertices: int) -> np.ndarray:
    if "face" not in ply:
        return np.zeros((0, 3), dtype=np.int32)
    face = ply["face"]
    names = [p.name for p in face.properties if p.name in FACE_LISTS] or [
        p.name for p in face.properties if hasattr(p, "len_dtype")
    ]
    if not names:
        raise ScanFormatError(path, "face element has no vertex index list")
    lists = face[names[0]]
    if lists.dtype == object:  # ASCII: one array per face, of any length
        lengths = np.array([len(x) for x in lists])
        bad = np.flatnonzero(lengths != 3)
        if bad.size:
            raise ScanFormatError(path, f"face {bad[0]} has {lengths[bad[0]]} vertices; expected triangles")
        lists = np.stack(lists) if len(lists) else np.zeros((0, 3))
    faces = np.asarray(lists).astype(np.int32).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ScanFormatError(path, f"face indices span [{faces.min()}, {faces.max()}]; expected [0, {n_vertices - 1}]")
    return faces


def read_ply(path: str | Path) -> Mesh:
    """Read a coloured triangle mesh. Raises ScanFormatError naming the file on any defect."""
    path = Path(path)
    if not path.is_file():
        raise ScanFormatError(path, "missing file")
    ply = _parse(path)
    if "vertex" not in ply:
        raise ScanFormatError(path, "PLY has no 'vertex' element")
    v = ply["vertex"].data
    missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in v.dtype.names]
    if missing:
        raise ScanFormatError(path, f"vertex element lacks properties {missing}; expected x,y,z,red,green,blue")
    vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
    return Mesh(vertices, colors, _faces(path, ply, len(vertices)))


def ply_data(mesh: Mesh, binary: bool = True) -> PlyData:
    """The mesh as plyfile's PlyData in ScanNet's vh_clean_2 layout (binary little endian by default)."""
    vertex = np.zeros(
        len(mesh.vertices),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("alpha", "u1"),
        ],
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = mesh.vertices[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = mesh.colors[:, i]
    vertex["alpha"] = 255
    face = np.zeros(len(mesh.faces), dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = mesh.faces
    return PlyData(
        [
            PlyElement.describe(vertex, "vertex"),
            PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"}),
        ],
        text=not binary,
        byte_order="<",
    )


def write_ply(path: str | Path, mesh: Mesh, binary: bool = True) -> None:
    """Write ScanNet's vh_clean_2 layout (binary little endian by default)."""
    ply = ply_data(mesh, binary)
    if not binary:
        ply.write(str(path))
        return
    # the same bytes as plyfile's binary writer, which packs the face lists one face at a time in Python
    # (half of `cl3dor synth`'s time); every list here holds 3 indices, so one structured array does it
    lists = np.empty(len(mesh.faces), dtype=[("n", "u1"), ("vertex_indices", "<i4", (3,))])
    lists["n"], lists["vertex_indices"] = 3, mesh.faces
    with open(path, "wb") as fh:
        fh.write(ply.header.encode("ascii") + b"\n")
        fh.write(ply["vertex"].data.tobytes())
        fh.write(lists.tobytes())
