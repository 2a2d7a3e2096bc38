"""The grounding stage's box jitter (train.grounding.box_jitter)."""

import numpy as np
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import build_model
from cl3dor_ray.train.pretrain import jitter_boxes
from tests.helpers import TINY_MODEL, toy_scenes


def test_box_jitter_moves_every_box_a_little_and_the_same_seed_moves_it_the_same_way():
    samples, objects, corpus = toy_scenes()
    model = build_model(load_config(None, TINY_MODEL).model, corpus)
    batch = SceneCollator.for_model(model, objects)(samples * 50)
    moved = jitter_boxes(batch, 0.05, np.random.default_rng(7))
    again = jitter_boxes(batch, 0.05, np.random.default_rng(7))
    assert torch.equal(moved.centers, again.centers) and torch.equal(moved.sizes, again.sizes)
    shift = (moved.centers - batch.centers)[batch.object_mask]
    assert abs(shift.std().item() - 0.05) < 0.005 and abs(shift.mean().item()) < 0.005
    growth = (moved.sizes / batch.sizes)[batch.object_mask].log()
    assert abs(growth.std().item() - 0.05) < 0.005
    # what the head learns from is untouched: the questions, the objects, which of them are relevant
    assert torch.equal(moved.relevant, batch.relevant) and torch.equal(moved.object_mask, batch.object_mask)
    assert torch.equal(moved.instruction_ids, batch.instruction_ids)
