import matplotlib.image as mpimg
import numpy as np
import pytest

from cl3dor_ray.scenes.densify import densify_objects, sparse_objects
from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.render import render_sparse_vs_dense
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, Scene, SceneObject, read_scan
from tests.helpers import point_triangle_distance


def test_distance_helper_against_known_cases():
    tri = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=float)
    pts = np.array([[0.2, 0.2, 0.5], [2, 0, 0], [-1, -1, 0], [0.5, 0.5, 0], [0.5, -1, 0]])
    np.testing.assert_allclose(point_triangle_distance(pts, tri)[:, 0], [0.5, 1, np.sqrt(2), 0, 1])


@pytest.fixture(scope="module")
def scene(synth_dir):
    return read_scan(synth_dir / "scans" / "scene0001_00")


def test_every_object_gets_exactly_p_points(scene):
    clouds = densify_objects(scene, 300, seed=0)
    assert [c.object_id for c in clouds] == [o.object_id for o in scene.objects]
    for c in clouds:
        assert c.points.shape == (300, 3) and c.points.dtype == np.float32
        assert c.colors.shape == (300, 3) and c.colors.dtype == np.uint8
    skipped = densify_objects(scene, 10, skip_labels=STRUCTURE_LABELS)
    assert {c.label for c in skipped}.isdisjoint(STRUCTURE_LABELS)


def test_densified_points_lie_on_their_own_objects_surface(scene):
    tol = 1e-4 * scene.extent
    face_ids = scene.face_instance_ids()
    for cloud in densify_objects(scene, 256, seed=3, skip_labels=STRUCTURE_LABELS):
        tri = scene.vertices[scene.faces[face_ids == cloud.object_id]].astype(np.float64)
        dist = point_triangle_distance(cloud.points.astype(np.float64), tri).min(axis=1)
        assert dist.max() < tol, (cloud.label, dist.max(), tol)


def test_center_and_size_are_the_box_of_the_objects_vertices(scene):
    for cloud in densify_objects(scene, 16):
        v = scene.vertices[scene.instance_ids == cloud.object_id]
        np.testing.assert_allclose(cloud.center, (v.min(0) + v.max(0)) / 2, atol=1e-6)
        np.testing.assert_allclose(cloud.size, v.max(0) - v.min(0), atol=1e-6)
        assert cloud.num_source_vertices == len(v)
        assert np.all(cloud.points >= v.min(0) - 1e-5) and np.all(cloud.points <= v.max(0) + 1e-5)


def _one_object_scene(vertices, faces, colors=None) -> Scene:
    n = len(vertices)
    colors = np.zeros((n, 3), np.uint8) if colors is None else colors
    return Scene(
        "scene9999_00",
        np.asarray(vertices, np.float32),
        colors,
        np.asarray(faces, np.int32),
        np.zeros(n, np.int32),
        [SceneObject(0, "thing")],
    )


def test_coverage_is_uniform_across_faces_of_very_different_size():
    # one big triangle (area 2) next to a strip of 200 tiny ones (area 0.005 each, 1.0 in all)
    verts = [[0, 0, 0], [2, 0, 0], [0, 2, 0]]
    faces = [[0, 1, 2]]
    for i in range(100):
        x = 3 + i * 0.1
        base = len(verts)
        verts += [[x, 0, 0], [x + 0.1, 0, 0], [x + 0.1, 0.1, 0], [x, 0.1, 0]]
        faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    scene = _one_object_scene(verts, faces)
    n = 300_000
    points = densify_objects(scene, n, seed=1)[0].points
    on_big = points[:, 0] < 2.5
    # density (points per unit area) on the big face and on the tiny faces agree
    big_density, small_density = on_big.sum() / 2.0, (~on_big).sum() / 1.0
    assert abs(big_density / small_density - 1) < 0.02
    # and each tiny square gets its share: a chi-square over the 100 squares stays within ~5 sigma
    square = ((points[~on_big, 0] - 3) / 0.1).astype(int).clip(0, 99)
    counts = np.bincount(square, minlength=100)
    expected = (~on_big).sum() / 100
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 99 + 5 * np.sqrt(2 * 99)
    # within the big triangle, equal-area halves (split by x + y = sqrt(2)) get equal shares
    big = points[on_big]
    inner = (big[:, 0] + big[:, 1]) < np.sqrt(2)
    assert abs(inner.mean() - 0.5) < 0.01


def test_colours_are_interpolated_barycentrically():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    colors = np.array([[0, 0, 0], [250, 0, 100], [0, 250, 100]], np.uint8)
    cloud = densify_objects(_one_object_scene(verts, [[0, 1, 2]], colors), 2000, seed=0)[0]
    expected = 250 * cloud.points[:, :2]  # red = 250 x, green = 250 y, blue = 100 (x + y)
    np.testing.assert_allclose(cloud.colors[:, :2], expected, atol=0.51)
    np.testing.assert_allclose(cloud.colors[:, 2], 100 * cloud.points[:, :2].sum(1), atol=0.51)


def test_deterministic_per_seed(scene):
    a, b, c = (densify_objects(scene, 64, seed=s) for s in (4, 4, 5))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.points, y.points)
        assert not np.array_equal(x.points, z.points)


def test_zero_area_object_is_a_scan_format_error():
    scene = _one_object_scene([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]])  # collinear
    with pytest.raises(ScanFormatError, match="object 0 \\('thing'\\) has no surface area"):
        densify_objects(scene, 8)


def test_sparse_baseline_draws_scan_vertices_like_leo(scene):
    for cloud in sparse_objects(scene, 200, seed=0, skip_labels=STRUCTURE_LABELS):
        own = {tuple(v) for v in scene.vertices[scene.instance_ids == cloud.object_id]}
        assert all(tuple(p) in own for p in cloud.points)
    # 300 distinct vertices: P = 200 draws without replacement, P = 500 must repeat some
    rng = np.random.default_rng(0)
    thing = _one_object_scene(rng.normal(size=(300, 3)), rng.integers(0, 300, (50, 3)))
    (fewer,), (more,) = sparse_objects(thing, 200), sparse_objects(thing, 500)
    assert len(np.unique(fewer.points, axis=0)) == 200
    assert len(np.unique(more.points, axis=0)) <= 300 and len(more.points) == 500


def test_render_writes_a_two_panel_png(scene, tmp_path):
    dense = densify_objects(scene, 200, skip_labels=STRUCTURE_LABELS)
    sparse = sparse_objects(scene, 200, skip_labels=STRUCTURE_LABELS)
    path = render_sparse_vs_dense(sparse, dense, tmp_path / "scene.png")
    image = mpimg.imread(path)
    assert image.shape[:2] == (600, 1200)
    left, right = image[:, :600, :3], image[:, 600:, :3]
    # both panels drew coloured points, and the dense panel drew more non-background pixels
    assert (left < 0.9).any() and (right < 0.9).any()
    assert (right.sum(-1) < 2.5).sum() > (left.sum(-1) < 2.5).sum()
