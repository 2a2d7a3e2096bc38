import os

# Before anything imports Ray: keep the test cluster on 127.0.0.1 (see runtime.prefer_loopback).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault(
    "TORCH_EXTENSIONS_DIR", os.path.abspath(".cache/torch_extensions")
)  # DeepSpeed's C++ op, built once

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
    import tempfile

    from cl3dor_ray.runtime import ray_session

    # short: Ray's unix socket paths live under it and may not exceed 107 bytes
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="cl3dor-test-ray-")
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


@pytest.fixture(scope="session")
def trained_model_dir(prepared_dir, tmp_path_factory):
    """A tiny model fitted in-process for a few dozen steps on the prepared training samples."""
    import pyarrow.parquet as pq
    import torch

    from cl3dor_ray.config import load_config
    from cl3dor_ray.data.prepared import Prepared
    from cl3dor_ray.model.batch import SceneCollator
    from cl3dor_ray.model.io import build_model, save_model
    from cl3dor_ray.train.orpo import orpo_loss
    from tests.helpers import TINY_MODEL

    torch.manual_seed(0)
    rows = [r for r in pq.read_table(prepared_dir / "samples").to_pylist() if r["split"] == "train"]
    corpus = [r["question"] for r in rows] + [a for r in rows for a in r["answers"] + r["negatives"]]
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus).train()
    collate = SceneCollator(
        model.tokenizer, Prepared(prepared_dir).objects(cfg.num_points), cfg.num_points, cfg.max_objects
    )
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(30):
        batch = rows[(step * 8) % len(rows) :][:8]
        scored = collate(batch)
        loss, _ = orpo_loss(model(scored), lam=0.1, present=scored.cand_present)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model(model.eval(), tmp_path_factory.mktemp("model") / "model")
