import numpy as np
import open3d as o3d
import pytest

from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.ply import Mesh, ply_data, read_ply, write_ply


def _mesh(rng, n=50, f=80):
    return Mesh(
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.integers(0, 256, (n, 3)).astype(np.uint8),
        rng.integers(0, n, (f, 3)).astype(np.int32),
    )


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_is_exact(tmp_path, binary):
    mesh = _mesh(np.random.default_rng(0))
    write_ply(tmp_path / "m.ply", mesh, binary=binary)
    back = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.colors, mesh.colors)
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_binary_files_are_byte_for_byte_what_plyfile_writes(tmp_path):
    """write_ply packs the faces itself (plyfile does it face by face in Python); the bytes must not change."""
    mesh = _mesh(np.random.default_rng(2), n=300, f=500)
    write_ply(tmp_path / "ours.ply", mesh)
    ply_data(mesh).write(str(tmp_path / "plyfile.ply"))  # plyfile's own writer
    assert (tmp_path / "ours.ply").read_bytes() == (tmp_path / "plyfile.ply").read_bytes()


def test_open3d_reads_what_we_write(tmp_path):
    mesh = _mesh(np.random.default_rng(1))
    write_ply(tmp_path / "m.ply", mesh)
    o3 = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    np.testing.assert_allclose(np.asarray(o3.vertices), mesh.vertices, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(o3.triangles), mesh.faces)
    np.testing.assert_allclose(np.asarray(o3.vertex_colors) * 255, mesh.colors, atol=0.5)


def test_reads_big_endian_and_extra_properties(tmp_path):
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=">f4")
    header = (
        b"ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement vertex 3\n"
        b"property float x\nproperty float y\nproperty float z\nproperty float nx\n"
        b"property uchar red\nproperty uchar green\nproperty uchar blue\n"
        b"element face 1\nproperty list uchar uint vertex_indices\nend_header\n"
    )
    rec = np.zeros(3, dtype=[("xyz", ">f4", 3), ("nx", ">f4"), ("rgb", "u1", 3)])
    rec["xyz"], rec["rgb"] = verts, [[10, 20, 30]] * 3
    face = np.array([(3, [0, 1, 2])], dtype=[("n", "u1"), ("i", ">u4", 3)])
    (tmp_path / "be.ply").write_bytes(header + rec.tobytes() + face.tobytes())
    mesh = read_ply(tmp_path / "be.ply")
    np.testing.assert_array_equal(mesh.vertices, verts.astype(np.float32))
    np.testing.assert_array_equal(mesh.colors[0], [10, 20, 30])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2]])


@pytest.mark.parametrize("binary", [True, False])
def test_truncated_file_names_file_and_element(tmp_path, binary):
    path = tmp_path / "cut.ply"
    write_ply(path, _mesh(np.random.default_rng(2)), binary=binary)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ScanFormatError, match="truncated") as err:
        read_ply(path)
    assert err.value.path == str(path)
    assert "face" in str(err.value)


def test_quads_and_bad_indices_are_rejected(tmp_path):
    path = tmp_path / "quad.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
        "0 0 0 1 1 1\n1 0 0 1 1 1\n1 1 0 1 1 1\n0 1 0 1 1 1\n4 0 1 2 3\n"
    )
    with pytest.raises(ScanFormatError, match="triangles"):
        read_ply(path)
    path.write_text(path.read_text().replace("4 0 1 2 3", "3 0 1 9"))
    with pytest.raises(ScanFormatError, match=r"face indices span \[0, 9\]"):
        read_ply(path)


def test_missing_colour_properties_are_named(tmp_path):
    path = tmp_path / "nocolor.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n0 0 0\n"
    )
    with pytest.raises(ScanFormatError, match="red"):
        read_ply(path)
