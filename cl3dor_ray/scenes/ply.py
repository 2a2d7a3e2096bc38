"""Triangle-mesh PLY files, as ScanNet writes them (`*_vh_clean_2.ply`).

Reads binary (little or big endian) and ASCII PLY with per-vertex colours and triangle faces, and
writes ScanNet's own layout: float x,y,z; uchar red,green,blue,alpha; face list uchar int.
A hand-written reader rather than open3d's, because a truncated or odd file must fail with a
message that names the file and what was wrong, not come back as an empty mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl3dor_ray.scenes.errors import ScanFormatError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass
class Mesh:
    vertices: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    faces: np.ndarray  # (F, 3) int32


@dataclass
class _Element:
    name: str
    count: int
    # (name, dtype) for scalars; (name, count dtype, item dtype) for lists
    properties: list[tuple]


def _parse_header(path: Path, data: bytes) -> tuple[str, list[_Element], int]:
    if not data.startswith(b"ply"):
        raise ScanFormatError(path, "not a PLY file: it does not start with 'ply'")
    end = data.find(b"end_header")
    if end < 0:
        raise ScanFormatError(path, "PLY header has no 'end_header' line (file truncated?)")
    body_start = data.index(b"\n", end) + 1
    fmt = None
    elements: list[_Element] = []
    for raw in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise ScanFormatError(path, f"PLY property before any element: {raw!r}")
            try:
                if words[1] == "list":
                    elements[-1].properties.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
                else:
                    elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            except (KeyError, IndexError):
                raise ScanFormatError(path, f"unsupported PLY property line {raw!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ScanFormatError(path, f"unsupported PLY format {fmt!r}; expected ascii or binary_*_endian")
    return fmt, elements, body_start


def _record_dtype(element: _Element, endian: str) -> np.dtype:
    # Faces are fixed-size records once every list holds 3 indices; that is checked after reading.
    fields = []
    for prop in element.properties:
        if len(prop) == 2:
            fields.append((prop[0], endian + prop[1]))
        else:
            fields.append((prop[0] + "__count", endian + prop[1]))
            fields.append((prop[0], endian + prop[2], (3,)))
    return np.dtype(fields)


def _read_binary(path, data, offset, elements, endian) -> dict[str, np.ndarray]:
    arrays = {}
    for el in elements:
        dtype = _record_dtype(el, endian)
        need = dtype.itemsize * el.count
        if len(data) - offset < need:
            raise ScanFormatError(
                path,
                f"truncated PLY: element '{el.name}' needs {need} bytes for {el.count} records, "
                f"only {len(data) - offset} remain",
            )
        arrays[el.name] = np.frombuffer(data, dtype=dtype, count=el.count, offset=offset)
        offset += need
    return arrays


def _read_ascii(path, data, offset, elements) -> dict[str, np.ndarray]:
    lines = data[offset:].decode("ascii", errors="replace").splitlines()
    arrays, row = {}, 0
    for el in elements:
        dtype = _record_dtype(el, "<")
        width = sum(1 if len(p) == 2 else 4 for p in el.properties)
        chunk = lines[row: row + el.count]
        if len(chunk) < el.count:
            raise ScanFormatError(
                path, f"truncated PLY: element '{el.name}' declares {el.count} lines, found {len(chunk)}"
            )
        try:
            table = np.array([ln.split() for ln in chunk], dtype=np.float64).reshape(el.count, width)
        except ValueError:
            raise ScanFormatError(
                path, f"malformed ASCII PLY element '{el.name}': expected {width} numbers per line "
                "(faces must be triangles)"
            ) from None
        out = np.zeros(el.count, dtype=dtype)
        col = 0
        for prop in el.properties:
            if len(prop) == 2:
                out[prop[0]] = table[:, col]
                col += 1
            else:
                out[prop[0] + "__count"] = table[:, col]
                out[prop[0]] = table[:, col + 1: col + 4]
                col += 4
        arrays[el.name] = out
        row += el.count
    return arrays


def read_ply(path: str | Path) -> Mesh:
    """Read a coloured triangle mesh. Raises ScanFormatError naming the file on any defect."""
    path = Path(path)
    if not path.is_file():
        raise ScanFormatError(path, "missing file")
    data = path.read_bytes()
    fmt, elements, offset = _parse_header(path, data)
    if fmt == "ascii":
        arrays = _read_ascii(path, data, offset, elements)
    else:
        arrays = _read_binary(path, data, offset, elements, "<" if fmt == "binary_little_endian" else ">")

    if "vertex" not in arrays:
        raise ScanFormatError(path, "PLY has no 'vertex' element")
    v = arrays["vertex"]
    missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in v.dtype.names]
    if missing:
        raise ScanFormatError(path, f"vertex element lacks properties {missing}; expected x,y,z,red,green,blue")
    vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)

    faces = np.zeros((0, 3), dtype=np.int32)
    if "face" in arrays:
        f = arrays["face"]
        list_props = [n for n in f.dtype.names if n + "__count" in f.dtype.names]
        if not list_props:
            raise ScanFormatError(path, "face element has no vertex index list")
        counts = f[list_props[0] + "__count"]
        bad = np.flatnonzero(counts != 3)
        if bad.size:
            raise ScanFormatError(path, f"face {bad[0]} has {counts[bad[0]]} vertices; expected triangles")
        faces = f[list_props[0]].astype(np.int32)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise ScanFormatError(
                path, f"face indices span [{faces.min()}, {faces.max()}]; expected [0, {len(vertices) - 1}]"
            )
    return Mesh(vertices, colors, faces)


def write_ply(path: str | Path, mesh: Mesh, binary: bool = True) -> None:
    """Write ScanNet's vh_clean_2 layout (binary little endian by default)."""
    n, f = len(mesh.vertices), len(mesh.faces)
    header = (
        "ply\n"
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0\n"
        f"element vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {f}\n"
        "property list uchar int vertex_indices\n"
        "end_header\n"
    )
    vrec = np.zeros(n, dtype=[("xyz", "<f4", (3,)), ("rgba", "u1", (4,))])
    vrec["xyz"] = mesh.vertices
    vrec["rgba"][:, :3] = mesh.colors
    vrec["rgba"][:, 3] = 255
    frec = np.zeros(f, dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    frec["n"] = 3
    frec["idx"] = mesh.faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        if binary:
            fh.write(vrec.tobytes())
            fh.write(frec.tobytes())
        else:
            # repr-exact float32 text so ASCII files round-trip bit for bit
            for xyz, rgba in zip(vrec["xyz"], vrec["rgba"]):
                fh.write((" ".join(repr(float(c)) for c in xyz) + " " + " ".join(map(str, rgba)) + "\n").encode())
            for idx in frec["idx"]:
                fh.write(("3 " + " ".join(map(str, idx)) + "\n").encode())
