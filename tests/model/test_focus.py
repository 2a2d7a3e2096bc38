"""Focus tokens: the question's subject first, and where each focus object is."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import SECONDARY, SceneCollator, subject_roles
from cl3dor_ray.model.focus import (
    FOCUS_GEOMETRY,
    WHERE_WORDS,
    WhereWords,
    focus_geometry_features,
    relation_to_reference,
    where_axes,
)
from cl3dor_ray.model.io import build_model
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


def _words(centers, count, situated):
    figures, has = relation_to_reference(torch.tensor([centers]), torch.tensor([count]), torch.tensor([situated]))
    weights = WhereWords()(figures) * has.unsqueeze(-1)
    return [{w: float(v) for w, v in zip(WHERE_WORDS, row)} for row in weights[0]], has[0].tolist()


def test_where_words_read_a_lone_object_from_the_agent():
    # the agent at the origin facing +x: a door ahead and to its left (21 degrees), 2.2 m away
    (door,), has = _words([[2.0, 0.8, 1.0]], 1, True)
    assert has == [True]
    assert door["left"] > 0.8 > 0.2 > door["right"] and door["front"] > 0.8 > 0.2 > door["behind"]
    assert door["far"] > door["near"]
    # the agent turned around (the door now behind it and to its right): the words follow the pose
    (turned,), _ = _words([[-2.0, -0.8, 1.0]], 1, True)
    assert turned["right"] > 0.8 and turned["behind"] > 0.8 and turned["front"] < 0.2
    # an object the head added beside the door: both are still read from the agent, not from each other
    (door, chair), has = _words([[2.0, 0.8, 1.0], [0.5, -1.5, 0.5]], 2, True)
    assert has == [True, True] and door["left"] > 0.8 and chair["right"] > 0.8 and chair["near"] > door["near"]


def test_where_words_place_the_subject_against_the_object_it_is_asked_about():
    # "is the cup above or below the lamp?": the cup (first) on a low table, the lamp on a shelf, 0.5 m apart
    (cup, lamp, other), has = _words([[1.0, 0.0, 0.5], [1.0, 0.5, 1.6], [3.0, 0.0, 0.5]], 2, False)
    assert has == [True, True, True]
    assert cup["below"] > 0.9 and cup["right"] > 0.9 and cup["near"] > 0.9  # the cup against the lamp
    assert lamp["above"] > 0.9 and lamp["left"] > 0.9  # the lamp against the cup (the first)
    assert other["front"] > 0.9 and other["far"] > 0.5  # every other focus object against the first


def test_a_lone_object_of_a_question_without_an_agent_has_no_where_words():
    (cup,), has = _words([[1.0, 0.4, 0.5]], 1, False)
    assert has == [False] and all(v == 0.0 for v in cup.values())


def test_the_side_fills_the_where_token_even_when_left_and_right_embed_alike():
    # the where words as a trained tiny LM embeds them: much in common (opposite words at cosine 0.5-0.9),
    # and "left" and "right" 0.99 alike, as in the runs that never learned "which way to turn"
    torch.manual_seed(0)
    table = 2 * torch.randn(64) + torch.randn(len(WHERE_WORDS), 64)
    table[1] = table[0] + 0.1 * torch.randn(64)
    assert torch.nn.functional.cosine_similarity(table[0], table[1], dim=0) > 0.99
    (door_left,), _ = _words([[2.0, 0.8, 1.0]], 1, True)
    (door_right,), _ = _words([[2.0, -0.8, 1.0]], 1, True)
    weights = torch.tensor([[list(door_left.values()), list(door_right.values())]])
    left, right = where_axes(weights, table)[0]
    # the two doors differ only in their side, and the tokens differ exactly along "left" minus "right"
    side = (door_left["left"] - door_left["right"]) - (door_right["left"] - door_right["right"])
    torch.testing.assert_close(left - right, side * (table[0] - table[1]) / 2)
    # with what all eight words share taken out, the side is a larger share of the token than in a mixture
    mixture = weights[0] @ table
    share, mixed_share = (left - right).norm() / left.norm(), (mixture[0] - mixture[1]).norm() / mixture[0].norm()
    assert share > 3 * mixed_share
    # no reference, no where: all weights zero give a zero token
    assert where_axes(torch.zeros(1, 1, len(WHERE_WORDS)), table).abs().max() == 0


def test_a_question_without_a_pose_is_read_from_the_view():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus)
    assert cfg.view_heading_deg == 90.0  # facing +y, the synthetic rooms' back wall
    batch = SceneCollator.for_model(model, objects)([samples[0]], [["red"]])
    room = {o["object_id"]: np.asarray(o["center"], np.float32) for o in objects["scene0000_00"]}
    first = room[samples[0]["object_ids"][0]]  # the collator puts the annotated object first
    # facing +y: what is along +y is ahead (+x), what is along -x is on the left (+y)
    np.testing.assert_allclose(batch.centers[0, 0].numpy(), [first[1], -first[0], first[2]], atol=1e-5)
    assert not batch.situated.any()
    situated = SceneCollator.for_model(model, objects)([{**samples[0], "pose": [0, 0, 0, 0, 0, 0, 1]}], [["red"]])
    np.testing.assert_allclose(situated.centers[0, 0].numpy(), first, atol=1e-5)  # the agent faces +x
    assert situated.situated.all()


def test_a_teacher_forcing_share_gives_some_questions_their_annotated_objects():
    samples, objects, corpus = toy_scenes()
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus)
    questions = [s for s in samples if s["object_ids"]] * 50
    shares = {}
    for share in (0.0, 0.5, 1.0):
        given = SceneCollator.for_model(model, objects, teacher_forcing=share, seed=3)(questions).given
        shares[share] = given.float().mean().item()
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.35 < shares[0.5] < 0.65
    draws = [SceneCollator.for_model(model, objects, teacher_forcing=0.5, seed=3)(questions).given for _ in range(2)]
    assert torch.equal(*draws)  # the same seed draws the same questions
    caption = {**samples[0], "task": "caption"}
    assert SceneCollator.for_model(model, objects, teacher_forcing=0.0)([caption]).given.all()


def test_the_grounding_loss_teaches_the_anchor_and_no_anchor():
    from cl3dor_ray.model.grounding import grounding_loss

    # two questions over 3 objects: "what is on the nightstand?" (subject 0, anchor 1), "what color is the cup?"
    relevant = torch.tensor([[1.0, SECONDARY, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    base = torch.tensor([[[4.0, 4.0], [4.0, -4.0], [-4.0, 0.0]], [[4.0, 4.0], [-4.0, 0.0], [-4.0, 0.0]]])

    def loss(anchor):
        return grounding_loss(torch.cat([base, torch.tensor(anchor).unsqueeze(-1)], -1), relevant, mask).item()

    right = loss([[-4.0, 4.0, -4.0], [-4.0, -4.0, -4.0]])
    assert loss([[4.0, -4.0, -4.0], [-4.0, -4.0, -4.0]]) > right + 0.5  # the subject taken for the anchor
    assert loss([[-4.0, 4.0, -4.0], [-4.0, 4.0, -4.0]]) > right + 0.5  # an anchor where the question names none


def test_the_head_orders_the_subject_then_the_anchor_then_the_rest():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus)
    batch = SceneCollator.for_model(model, objects)([samples[2]])  # 5 objects, none given
    # relevant: objects 1, 3 and 4 (4 the most surely); subject: 3; anchor: 1 ("is the cup [3] on the desk [1]?")
    logits = torch.tensor([[[-5.0, -5, -5], [2, -5, 5], [-5, -5, -5], [2, 5, -5], [6, -5, -5]]])
    model.grounding_logits = lambda batch, feats=None: logits
    order, count = model.focus_order(batch, model.point_feats(batch))
    assert count.item() == 3 and order[0, :3].tolist() == [3, 1, 4]


@pytest.mark.parametrize("mode", ["differences", "mixture"])
def test_model_where_tokens_chooses_how_the_words_enter_the_where_token(mode):
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    model = build_model(load_config(None, [*TINY_MODEL, f"model.where_tokens={mode}"]).model, corpus).eval()
    # the where token without its geometry MLP and slot: only the words are left in it
    torch.nn.init.zeros_(model.focus_geometry[2].weight)
    torch.nn.init.zeros_(model.focus_geometry[2].bias)
    model.slots.data.zero_()
    situated = {**samples[1], "pose": [0, 0, 0, 0, 0, 0, 1]}  # two annotated objects, read from an agent
    batch = SceneCollator.for_model(model, objects, teacher_forcing=1.0)([situated])
    with torch.no_grad():
        feats = model.point_feats(batch)
        order, count = model.focus_order(batch, feats)
        centers = torch.gather(batch.centers, 1, order.unsqueeze(-1).expand(-1, -1, 3))
        figures, has = relation_to_reference(centers, count, batch.situated)
        weights = model.where_words(figures) * has.unsqueeze(-1)
        table = model._word_embeddings(model._where_word_ids, model._where_word_mask)
        words = {"differences": where_axes(weights, table), "mixture": weights @ table}
        got = model.object_tokens(batch)["focus"][0, : count.item(), 1]
    assert count.item() == 2
    cosine = torch.nn.functional.cosine_similarity
    assert (cosine(got, words[mode][0, :2], dim=-1) > 0.999).all()
    other = "mixture" if mode == "differences" else "differences"
    assert (cosine(got, words[other][0, :2], dim=-1) < 0.99).all()


def test_auto_where_tokens_are_differences_for_an_lm_built_from_config():
    _, _, corpus = toy_scenes()
    assert build_model(load_config(None, TINY_MODEL).model, corpus).where_tokens == "differences"


def test_the_heads_dropout_trains_it_but_never_moves_the_focus_order():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    model = build_model(load_config(None, [*TINY_MODEL, "model.grounding.dropout=0.5"]).model, corpus)
    batch = SceneCollator.for_model(model, objects)([samples[2], samples[3]])
    model.train()
    with torch.no_grad():
        feats = model.point_feats(batch)
        assert not torch.equal(model.grounding_logits(batch, feats), model.grounding_logits(batch, feats))
        training_order = model.focus_order(batch, feats)
        assert model.grounding.training  # focus_order gives the head back as it found it
        model.eval()
        order = model.focus_order(batch, feats)
    assert torch.equal(training_order[0], order[0]) and torch.equal(training_order[1], order[1])


def test_the_nearest_score_finds_the_candidate_closest_to_the_anchor_not_the_anchor():
    from cl3dor_ray.model.grounding import GroundingHead, _distance_to_anchor, pair_geometry

    cfg = load_config(None, TINY_MODEL).model.grounding
    head = GroundingHead(cfg, vocab_size=10, feature_dim=4)
    # "what is next to the bed [0]?": a desk 1 m away, a chair 0.6 m, a lamp 3 m; one padded slot
    centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0, 0.6, 0], [3, 0, 0], [0, 0, 0]]])
    boxes = torch.cat([centers, torch.full_like(centers, 0.5)], -1)
    mask = torch.tensor([[True, True, True, True, False]])
    anchor = torch.tensor([[0.99, 0.01, 0.01, 0.01, 0.0]])
    x = torch.zeros(1, 5, cfg.width)  # every object as likely a candidate
    with torch.no_grad():
        distance = _distance_to_anchor(anchor, pair_geometry(boxes)[..., 3])
        share, to_anchor = head._nearest(x, distance, mask).unbind(-1)
    assert share[0].argmax().item() == 2  # the chair, not the bed itself
    assert share[0, 4].item() < 1e-6 and 0 < share[0, :4].sum().item() < 1  # the rest is "none"
    assert to_anchor[0, 1:4].tolist() == pytest.approx([1.0, 0.6, 3.0], abs=0.05)
    # a candidate score that rules the chair out (a question for the nearest table, say) hands it to the desk
    head.candidate = torch.nn.Linear(cfg.width, 1)
    with torch.no_grad():
        head.candidate.weight.zero_(), head.candidate.bias.zero_()
        head.candidate.weight[0, 0] = -50.0
        x[0, 2, 0] = 1.0
        share = head._nearest(x, distance, mask)[..., 0]
    assert share[0].argmax().item() == 1


def test_a_question_that_names_no_anchor_has_no_nearest_object():
    from cl3dor_ray.model.grounding import GroundingHead, _distance_to_anchor, pair_geometry

    cfg = load_config(None, TINY_MODEL).model.grounding
    # "is there a lamp in the room?": no anchor, so every object's distance is to the room's weighted middle
    centers = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0, 2.5, 0], [3, 3, 0]]])
    boxes = torch.cat([centers, torch.full_like(centers, 0.5)], -1)
    mask = torch.ones(1, 4, dtype=torch.bool)
    anchor = torch.full((1, 4), 0.02)
    shares = {}
    for none in (True, False):
        torch.manual_seed(0)
        head = GroundingHead(dataclasses.replace(cfg, nearest_none=none), vocab_size=10, feature_dim=4)
        with torch.no_grad():
            distance = _distance_to_anchor(anchor, pair_geometry(boxes)[..., 3])
            shares[none] = head._nearest(torch.zeros(1, 4, cfg.width), distance, mask)
    assert shares[True][0, :, 0].sum().item() < 0.05  # "none" takes it
    assert shares[False][0, :, 0].sum().item() == pytest.approx(1.0)  # without it, one object always wins
    assert torch.equal(shares[True][..., 1], shares[False][..., 1])  # the same distances


def test_a_model_folder_from_before_the_nearest_score_loads_without_it(tmp_path):
    import json

    from cl3dor_ray.model.io import MODEL_FILE, read_model_folder, save_model

    _, _, corpus = toy_scenes()
    model = build_model(load_config(None, TINY_MODEL).model, corpus)
    assert model.grounding.nearest and hasattr(model.grounding, "candidate")
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / MODEL_FILE).read_text())
    assert read_model_folder(tmp_path)[1].grounding.nearest  # saved with the key: read as saved
    del meta["model"]["grounding"]["nearest"]
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    assert not read_model_folder(tmp_path)[1].grounding.nearest
    del meta["model"]["grounding"]["nearest_none"]
    meta["model"]["grounding"]["nearest"] = True
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    grounding = read_model_folder(tmp_path)[1].grounding  # saved before the "none" option: trained without it
    assert grounding.nearest and not grounding.nearest_none
    assert grounding.answer_hop
    del meta["model"]["grounding"]["answer_hop"]  # saved before the answer hop: it has none
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    assert not read_model_folder(tmp_path)[1].grounding.answer_hop
    assert grounding.subject_match
    del meta["model"]["grounding"]["subject_match"]  # saved before the subject match: it has none
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    assert not read_model_folder(tmp_path)[1].grounding.subject_match
    del meta["model"]["grounding"]["nearest"]
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    torch.manual_seed(0)
    old = build_model(read_model_folder(tmp_path)[1], corpus).state_dict()
    torch.manual_seed(0)
    new = build_model(load_config(None, TINY_MODEL).model, corpus).state_dict()
    added = ["candidate.0.bias", "candidate.0.weight", "candidate.1.bias", "candidate.1.weight", "log_temperature"]
    hop = [f"hop_candidate.{i}.{p}" for i in (0, 1, 3) for p in ("bias", "weight")]
    hop += ["hop_log_temperature", "hop_none.0.bias", "hop_none.0.weight", "hop_none.1.bias", "hop_none.1.weight"]
    added = sorted([*added, *hop, "near.bias", "near.weight"])  # the toy corpus has no classifier: no match
    assert sorted(set(new) - set(old)) == [f"grounding.{k}" for k in added]
    # the score draws its weights from a forked generator: a seed gives every other weight the same values
    assert all(torch.equal(old[k], new[k]) for k in old)


def test_the_grounding_figures_say_whether_the_head_found_the_anchor():
    from cl3dor_ray.train.pretrain import grounding_metrics

    samples, objects, corpus = toy_scenes()
    model = build_model(load_config(None, TINY_MODEL).model, corpus)
    placed = samples[1]  # "Where is the book placed?": the book, placed against object 0
    rows = [
        dict(placed, question_type="relation", task="qa"),
        dict(placed, question_type="category", task="qa"),
        dict(samples[3], question_type="color", task="qa"),  # names no anchor
    ]

    def logits(batch, feats=None):  # the subject found in all three; the anchor in the first only
        out = torch.full((*batch.relevant.shape, 5), -5.0)
        out[..., 0] = torch.where(batch.relevant > 0, 5.0, -5.0)
        out[..., 1] = torch.where(batch.relevant == 1, 5.0, -5.0)
        anchor = (batch.relevant > 0) & (batch.relevant < 1)
        out[0, :, 2] = torch.where(anchor[0], 5.0, -5.0)
        out[1, :, 2] = torch.where(batch.relevant[1] == 1, 5.0, -5.0)  # the subject taken for the anchor
        return out

    model.grounding_logits = logits
    figures = grounding_metrics(model, SceneCollator.for_model(model, objects), rows)
    assert figures["relation.anchor"] == 1.0 and figures["category.anchor"] == 0.0
    assert figures["all.anchor"] == 0.5 and "color.anchor" not in figures
    assert figures["relation.first"] == figures["category.first"] == figures["color.first"] == 1.0


def test_the_grounding_figures_say_whether_the_answer_hop_and_the_subject_match_found_the_subject():
    from cl3dor_ray.train.pretrain import grounding_metrics

    samples, objects, corpus = toy_scenes()
    names = {0: "table", 1: "cup", 2: "book", 3: "chair", 4: "lamp"}
    objects = {scene: [dict(o, label=names[o["object_id"]]) for o in objs] for scene, objs in objects.items()}
    model = build_model(load_config(None, TINY_MODEL).model, corpus)
    placed = samples[1]  # the book (2), on the table (0)
    rows = [
        dict(placed, question="What is on the table?", question_type="category", task="qa"),  # hops to the book
        dict(placed, question="What is on the table?", question_type="category", task="qa"),
        dict(placed, question="Where is the book placed?", question_type="relation", task="qa"),  # names the book
    ]
    collate = SceneCollator.for_model(model, objects)
    assert collate(rows).hop.tolist() == [True, True, False]

    def logits(batch, feats=None):  # the hop picks the book in the first question, "no hop" in the second
        out = torch.full((*batch.relevant.shape, 5), -5.0)
        out[0, :, 3] = torch.where(batch.relevant[0] == 1, 5.0, -5.0)
        out[2, :, 4] = torch.where(batch.relevant[2] == 1, 5.0, -5.0)  # the match picks the book it names
        return out

    model.grounding_logits = logits
    model.grounding.subject_match = True  # the toy corpus has no classifier: the figures read the logits alone
    figures = grounding_metrics(model, collate, rows)
    assert figures["category.hop"] == 0.5 and figures["all.hop"] == 0.5 and "relation.hop" not in figures
    assert figures["relation.match"] == 1.0 and "category.match" not in figures  # a hop is not the match's
    assert figures["all.match"] == 1.0


def test_the_answer_hops_pick_is_relevant_and_its_softmin_learns_hops_only():
    from cl3dor_ray.model.grounding import _either, answer_hop_loss

    # relevant by its own score, or by the hop's share (a noisy-OR): a sure pick lifts a negative score
    # above 0, and a share of 0 leaves the score as it was
    got = _either(torch.tensor([-3.0, -3.0, 3.0]), torch.tensor([0.0, 0.9, 0.9]))
    assert got[0].item() == pytest.approx(-3.0, abs=1e-4) and got[1].item() > 0 and got[2].item() > 3.0
    # "what is on the nightstand?" (subject 0, anchor 1; it hops) and "what color is the cup?" (it does not)
    relevant = torch.tensor([[1.0, SECONDARY, 0.0], [1.0, 0.0, 0.0]])
    mask, hop = torch.ones(2, 3, dtype=torch.bool), torch.tensor([True, False])

    def loss(first, second):
        return answer_hop_loss(torch.tensor([first, second]), relevant, mask, hop).item()

    right = loss([6.0, -6.0, -6.0], [-6.0, -6.0, -6.0])
    assert right < 0.05  # the loss is a mean over the two questions: one wrong costs about 6 / 2
    assert loss([-6.0, 6.0, -6.0], [-6.0, -6.0, -6.0]) > right + 2  # the hop stays on its anchor
    assert loss([-6.0, -6.0, -6.0], [-6.0, -6.0, -6.0]) > right + 2  # "no hop" where the question hops
    assert loss([6.0, -6.0, -6.0], [6.0, -6.0, -6.0]) > right + 2  # a hop where the question names its subject


def test_the_subject_match_learns_the_named_subject_and_none_where_it_is_absent():
    from cl3dor_ray.model.grounding import subject_match_loss

    # "where is the book placed?" (subject 0, anchor 1), "is there a lamp?" where there is none, and "what is
    # on the nightstand?" (it hops: the pick is not taught there)
    relevant = torch.tensor([[1.0, SECONDARY, 0.0], [0.0, 0.0, 0.0], [1.0, SECONDARY, 0.0]])
    mask, hop = torch.ones(3, 3, dtype=torch.bool), torch.tensor([False, False, True])
    on_subject, on_none = [6.0, -6.0, -6.0], [-6.0, -6.0, -6.0]

    def loss(first, second, third):
        return subject_match_loss(torch.tensor([first, second, third]), relevant, mask, hop).item()

    right = loss(on_subject, on_none, on_none)
    assert right < 0.05
    assert loss([-6.0, 6.0, -6.0], on_none, on_none) > right + 2  # the anchor picked for the subject
    assert loss(on_none, on_none, on_none) > right + 2  # "none" where the question names its subject
    assert loss(on_subject, [-6.0, -6.0, 6.0], on_none) > right + 2  # an object picked for an absent one
    assert loss(on_subject, on_none, [-6.0, 6.0, -6.0]) == pytest.approx(right)  # a hop teaches nothing


def test_the_subject_match_picks_the_object_whose_beliefs_agree_with_the_words():
    from cl3dor_ray.model.grounding import GroundingHead, with_none

    torch.manual_seed(0)
    cfg = load_config(None, TINY_MODEL).model.grounding
    head = GroundingHead(cfg, vocab_size=10, feature_dim=2 + 3 + 2, beliefs=(3, 2)).eval()
    # four objects: 2 point features, then the classifier's category (3) and colour (2) probabilities. The
    # words name category 1 in colour 0 ("the red cup"): object 2 is a red cup, 1 a blue cup, 3 a red lamp,
    # 0 a blue table
    beliefs = [[1, 0, 0, 0, 1], [0, 1, 0, 0, 1], [0, 1, 0, 1, 0], [0, 0, 1, 1, 0]]
    features = torch.cat([torch.randn(1, 4, 2), torch.tensor([beliefs], dtype=torch.float)], -1)
    boxes = torch.cat([torch.randn(1, 4, 3), torch.full((1, 4, 3), 0.5)], -1)
    inputs = (features, boxes, torch.ones(1, 4, dtype=torch.bool), torch.tensor([[1, 2, 3]]), torch.ones(1, 3))
    with torch.no_grad():
        head.subject_class[1].weight.zero_()
        head.subject_class[1].bias.copy_(torch.tensor([0.0, 9.0, 0.0, 9.0, 0.0]))  # category 1, colour 0
        head.match_none[1].weight.zero_()
        head.match_none[1].bias.fill_(-5.0)  # the subject present: "none" far below
        match = head(*inputs)[0, :, 4]
    assert match.argmax().item() == 2
    # each disagreement costs the log of the words' belief in it (about 9 nats), and both cost twice that
    assert match[2] - match[1] > 8 and match[2] - match[3] > 8 and match[2] - match[0] > 16
    assert torch.softmax(with_none(match[None]), -1)[0, 2] > 0.99


def _four_object_head():
    """A grounding head over four objects whose last 3 features are the classifier's beliefs (2 categories,
    1 colour), and its inputs for one four-token question."""
    from cl3dor_ray.model.grounding import GroundingHead

    torch.manual_seed(0)
    head = GroundingHead(load_config(None, TINY_MODEL).model.grounding, vocab_size=10, feature_dim=4, beliefs=(2, 1))
    inputs = (
        torch.randn(1, 4, 4),
        torch.cat([torch.randn(1, 4, 3), torch.full((1, 4, 3), 0.5)], -1),
        torch.ones(1, 4, dtype=torch.bool),
        torch.tensor([[1, 2, 3, 4]]),
        torch.ones(1, 4, dtype=torch.long),
    )
    return head, inputs


@pytest.mark.parametrize("picker, channel", [("_answer_hop", 3), ("_subject_match", 4)])
def test_a_picks_object_joins_the_relevant_objects_where_the_head_decides(picker, channel):

    head, inputs = _four_object_head()
    with torch.no_grad():
        head.score[1].bias[0] = -8.0  # the relevance score sure of no object
        # the pick sure of one ("what is on the nightstand?": the lamp on it; "where is the lamp placed?": the
        # lamp), and of none of the others; the other pick sure of none
        pick, sure, nothing = 2, torch.tensor([[-10.0, -10.0, 10.0, -10.0]]), torch.full((1, 4), -30.0)
        head._answer_hop = lambda *args: nothing
        head._subject_match = lambda *args: nothing
        setattr(head, picker, lambda *args: sure)
        training = head.train()(*inputs)  # its relevance score learns from the annotations alone
        deciding = head.eval()(*inputs)
    assert torch.equal(training[..., channel], sure) and torch.equal(deciding[..., channel], sure)
    assert training[0, pick, 0].item() < 0 < deciding[0, pick, 0].item()  # relevant once picked
    others = [i for i in range(4) if i != pick]
    assert torch.allclose(training[0, others, 0], deciding[0, others, 0], atol=1e-3)
    assert torch.allclose(training[..., 1:3], deciding[..., 1:3], atol=1e-4)


def test_an_unsure_subject_match_leaves_the_relevance_as_it_was():
    cfg = load_config(None, TINY_MODEL).model.grounding
    head, inputs = _four_object_head()

    def relevance(share):  # the match's share on object 2, the rest on "none"
        head._subject_match = lambda *args: torch.tensor([[-30.0, -30.0, math.log(share / (1 - share)), -30.0]])
        with torch.no_grad():
            return head.eval()(*inputs)[0, 2, 0].item(), head.train()(*inputs)[0, 2, 0].item()

    head._answer_hop = lambda *args: torch.full((1, 4), -30.0)
    with torch.no_grad():
        head.score[1].bias[0] = -8.0  # the relevance score sure of no object
    assert cfg.match_sure == 0.8
    deciding, own = relevance(0.7)
    assert deciding == pytest.approx(own, abs=1e-4) and deciding < 0  # 0.7 < match_sure: not added
    deciding, own = relevance(0.9)
    assert own < 0 < deciding
