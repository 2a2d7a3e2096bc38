import os

# Before anything imports Ray: keep the test cluster on 127.0.0.1 (see runtime.prefer_loopback).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.abspath(".cache/torch_extensions"))  # DeepSpeed's C++ op, built once

import pytest  # noqa: E402

from cl3dor_ray.scenes.synth_dataset import synthesize  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset (5 rooms: 4 train, 1 val), written once per test session."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n_scenes=5, seed=7)
    return out


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    """One embedded Ray on 127.0.0.1 with 2 CPUs for the whole session."""
    from cl3dor_ray.runtime import ray_session

    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    with ray_session(None, num_cpus=2, quiet=True):
        yield


@pytest.fixture(scope="session")
def prepared_dir(synth_dir, local_ray, tmp_path_factory):
    """The synthetic rooms prepared on the local Ray: P = 128 points, K = 2 negatives."""
    from cl3dor_ray.config import PrepareConfig
    from cl3dor_ray.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(synth_dir, out, PrepareConfig(points_per_object=128, negatives=2, workers=2))
    return out
