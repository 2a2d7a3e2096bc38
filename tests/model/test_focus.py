"""Focus tokens: the question's subject first, and where each focus object is."""

import pytest
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import SECONDARY, SceneCollator, subject_roles
from cl3dor_ray.model.io import build_model
from cl3dor_ray.model.scene3dlm import FOCUS_GEOMETRY, focus_geometry_features
from tests.helpers import TINY_MODEL, toy_scenes


def test_the_subject_and_its_category_rank_before_the_other_objects_named():
    objects = [{"object_id": 3, "label": "cup"}, {"object_id": 5, "label": "table"}, {"object_id": 4, "label": "cup"}]
    assert subject_roles([3, 5, 4], objects) == {3: 1.0, 5: SECONDARY, 4: 1.0}
    assert subject_roles([5, 3], objects) == {5: 1.0, 3: SECONDARY} and subject_roles([], objects) == {}


def test_features_say_where_each_focus_object_is():
    # an agent at the origin facing +x: a lamp ahead on a shelf, a cup to its left on a lower table
    centers = torch.tensor([[[2.0, 0.0, 1.5], [0.0, 1.0, 0.8]]])
    sizes = torch.tensor([[[0.2, 0.2, 0.4], [0.1, 0.1, 0.1]]])
    f = focus_geometry_features(centers, sizes)
    assert f.shape == (1, 2, FOCUS_GEOMETRY)
    lamp, cup = f[0]
    torch.testing.assert_close(cup[6:9], torch.tensor([-2.0, 1.0, -0.7]))  # offset from the first focus object
    assert cup[9].item() == pytest.approx(5**0.5)  # their horizontal distance
    assert cup[10].item() == pytest.approx((0.75 - 1.7))  # its bottom above the lamp's top: negative, it is lower
    assert cup[11].item() == pytest.approx(1.3 - 0.85)  # its top below the lamp's bottom: it is below the lamp
    torch.testing.assert_close(lamp[12:15], torch.tensor([1.0, 0.0, 2.0]))  # dead ahead, 2 m
    torch.testing.assert_close(cup[12:15], torch.tensor([0.0, 1.0, 1.0]))  # due left (+y), 1 m


def test_teacher_forced_focus_puts_the_subject_first_and_moves_with_the_pose():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    for rows in objects.values():
        for o in rows:
            o["label"] = f"thing{o['object_id']}"
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus)
    collate = SceneCollator(model.tokenizer, objects, cfg.num_points, cfg.max_objects, teacher_forcing=1.0)
    batch = collate([samples[1]])  # object_ids [2, 0]: 2 is the subject
    order, count = model.focus_order(batch, model.point_feats(batch))
    assert count.item() == 2
    assert batch.relevant[0, order[0, 0]].item() == 1.0 and batch.relevant[0, order[0, 1]].item() == SECONDARY
    # a situated question reads the focus objects from the agent: another pose, other focus tokens
    still = model.object_tokens(batch)["focus"][0, :2]
    turned = collate([{**samples[1], "pose": [0.5, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]}])
    moved = model.object_tokens(turned)["focus"][0, :2]
    assert not torch.allclose(still, moved)


def test_focus_tokens_are_bounded_whatever_the_head_scores():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    cfg = load_config(None, TINY_MODEL + ["model.grounding.max_focus=2"]).model
    model = build_model(cfg, corpus)
    with torch.no_grad():  # a head that calls every object relevant
        model.grounding.score[1].bias.fill_(50.0)
    batch = SceneCollator(model.tokenizer, objects, cfg.num_points, cfg.max_objects)([samples[2]])  # 5 objects
    order, count = model.focus_order(batch, model.point_feats(batch))
    assert count.tolist() == [2] and batch.object_mask.sum().item() == 5
