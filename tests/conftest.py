import pytest

from cl3dor_ray.scenes.synth_dataset import synthesize


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset (5 rooms: 4 train, 1 val), written once per test session."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n_scenes=5, seed=7)
    return out
