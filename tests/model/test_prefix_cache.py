"""The scene prefix cache: the same answers and scores as the uncached prompt, with a real pretrained LLM."""

from pathlib import Path

import pytest
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import build_model
from cl3dor_ray.model.scene3dlm import ScenePrefix
from cl3dor_ray.serve.prefix_cache import PrefixCache
from tests.helpers import TINY_MODEL, toy_scenes

SMOLLM2 = Path(".cache/models/SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def smollm2_model():
    if not (SMOLLM2 / "config.json").is_file():
        pytest.skip("no SmolLM2 folder: `make smollm2` (which `make test` runs) converts it")
    torch.manual_seed(0)
    samples, objects, _ = toy_scenes()
    cfg = load_config(None, TINY_MODEL + [f"model.lm.path={SMOLLM2}"]).model
    model = build_model(cfg).eval()
    return model, SceneCollator(model.tokenizer, objects, cfg.num_points, cfg.max_objects), samples


@pytest.mark.parametrize("beams", [1, 3])
def test_cached_prefix_gives_the_same_answers(smollm2_model, beams):
    model, collate, samples = smollm2_model
    batch = collate(samples, [[] for _ in samples])
    prefixes = model.scene_prefixes(batch)
    assert [p.length for p in prefixes] == [int(m.sum()) + len(model._before_ids) for m in batch.object_mask]
    plain = model.generate_ids(batch, max_new_tokens=10, num_beams=beams)
    cached = model.generate_ids(batch, max_new_tokens=10, num_beams=beams, prefixes=prefixes)
    assert cached.tolist() == plain.tolist()
    assert len({tuple(r) for r in plain.tolist()}) > 1  # the LLM writes different answers to different questions


def test_cached_prefix_gives_the_same_scores_and_serves_other_questions(smollm2_model):
    model, collate, samples = smollm2_model
    batch = collate(samples)
    with torch.no_grad():
        plain = model.candidate_logps(batch)[0]
        cached = model.candidate_logps(batch, prefixes=model.scene_prefixes(batch))[0]
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-4)
    # one scene's prefix answers every question about it, in one batch
    same_scene = [
        dict(samples[0], question=q)
        for q in ("What color is the cup?", "How many objects are there?", "Is there a bed in the room?")
    ]
    batch = collate(same_scene, [[] for _ in same_scene])
    prefix = model.scene_prefixes(batch.select([0]))[0]
    assert (
        model.generate_ids(batch, max_new_tokens=8, prefixes=[prefix] * 3).tolist()
        == model.generate_ids(batch, max_new_tokens=8).tolist()
    )


def _prefix(nbytes: int) -> ScenePrefix:
    return ScenePrefix(torch.zeros(nbytes // 4), [(torch.zeros(1, 1, 0), torch.zeros(1, 1, 0))])


def test_the_cache_is_an_lru_bounded_by_bytes():
    cache = PrefixCache(max_bytes=1000)
    cache.put("a", _prefix(400))
    cache.put("b", _prefix(400))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", _prefix(400))  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert (cache.stats.entries, cache.stats.bytes, cache.stats.evictions) == (2, 800, 1)
    cache.put("huge", _prefix(4000))  # larger than the whole cache: used, not kept
    assert cache.get("huge") is None and cache.stats.entries == 2
    assert (cache.stats.hits, cache.stats.misses) == (3, 2)
    cache.clear()
    assert cache.get("a") is None and (cache.stats.entries, cache.stats.bytes) == (0, 0)
    assert not PrefixCache(0).enabled
