import json

import numpy as np
import pytest

from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.scannet import read_scan, scan_files, write_scan
from cl3dor_ray.scenes.synth import SCAN_NOISE, generate_scene
from tests.helpers import MALFORMED, break_scan


@pytest.fixture
def generated(tmp_path):
    graph, scene, segments = generate_scene("scene0003_00", seed=11, index=3)
    folder = write_scan(scene, tmp_path / "scans", segments=segments)
    return scene, segments, folder


def test_generated_scan_reads_back_identically(generated):
    scene, segments, folder = generated
    back = read_scan(folder)
    assert back.scene_id == scene.scene_id
    assert back.objects == scene.objects
    np.testing.assert_array_equal(back.faces, scene.faces)
    np.testing.assert_array_equal(back.colors, scene.colors)
    np.testing.assert_array_equal(back.instance_ids, scene.instance_ids)
    np.testing.assert_array_equal(back.axis_alignment, scene.axis_alignment)
    assert back.axis_alignment_found
    # The file stores sensor-frame float32 vertices; undoing and redoing the alignment costs float32 rounding.
    np.testing.assert_allclose(back.vertices, scene.vertices, rtol=0, atol=2e-6 * scene.extent)
    assert json.loads(scan_files(folder, scene.scene_id)["segs"].read_text())["segIndices"] == segments.tolist()


def test_stored_mesh_is_in_sensor_frame_and_alignment_is_applied(generated):
    scene, _, folder = generated
    from cl3dor_ray.scenes.ply import read_ply

    raw = read_ply(scan_files(folder, scene.scene_id)["mesh"]).vertices.astype(np.float64)
    assert not np.allclose(raw, scene.vertices, atol=1e-2)  # a real rotation + shift was stored
    aligned = raw @ scene.axis_alignment[:3, :3].T + scene.axis_alignment[:3, 3]
    np.testing.assert_allclose(read_scan(folder).vertices, aligned, atol=1e-5)
    # the aligned room stands on z = 0, as ScanNet's aligned scans do, within the scan's noise
    back = read_scan(folder)
    floor = next(o.object_id for o in back.objects if o.label == "floor")
    z = back.vertices[back.instance_ids == floor, 2]
    assert abs(np.median(z)) < 1e-3 and z.min() > -6 * SCAN_NOISE and z.std() < 2 * SCAN_NOISE


def test_missing_alignment_file_falls_back_to_identity_and_says_so(generated):
    scene, _, folder = generated
    files = scan_files(folder, scene.scene_id)
    from cl3dor_ray.scenes.ply import read_ply

    raw = read_ply(files["mesh"]).vertices
    files["meta"].unlink()
    back = read_scan(folder)
    assert not back.axis_alignment_found
    np.testing.assert_array_equal(back.axis_alignment, np.eye(4))
    np.testing.assert_array_equal(back.vertices, raw)


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_scans_raise_scan_format_error(generated, what):
    scene, _, folder = generated
    bad_file, message = break_scan(folder, scene.scene_id, what)
    with pytest.raises(ScanFormatError, match=message) as err:
        read_scan(folder)
    assert err.value.path == str(bad_file)
    assert bad_file.name in str(err.value)


def test_write_without_segments_uses_one_segment_per_object(tmp_path, generated):
    scene, _, _ = generated
    folder = write_scan(scene, tmp_path / "other", segments=None)
    back = read_scan(folder)
    np.testing.assert_array_equal(back.instance_ids, scene.instance_ids)
