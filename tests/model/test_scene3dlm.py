import dataclasses

import pytest
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.model.batch import BatchError, SceneBatch, SceneCollator, select_objects
from cl3dor_ray.model.io import ModelFolderError, build_model, load_model, save_model
from cl3dor_ray.model.odds import log_odds
from cl3dor_ray.train.orpo import orpo_loss
from tests.helpers import TINY_MODEL, toy_scenes


@pytest.fixture
def setup():
    torch.manual_seed(0)
    samples, objects, corpus = toy_scenes()
    cfg = load_config(None, TINY_MODEL).model
    model = build_model(cfg, corpus)
    collate = SceneCollator(model.tokenizer, objects, cfg.num_points, cfg.max_objects)
    return model, collate, samples


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_matches_naive_concatenation_in_loss_and_gradients(setup, lora):
    model, collate, samples = setup
    if lora:
        model.set_trainable(lm="lora")
        for n, p in model.lm.named_parameters():  # LoRA B starts at zero; make the adapter matter
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
    batch = collate(samples)
    results = []
    for shared in (True, False):
        model.zero_grad()
        logps, _ = model.candidate_logps(batch, shared=shared)
        loss, _ = orpo_loss(logps, lam=0.1)
        loss.backward()
        results.append((logps.detach(), loss.item(), _grads(model)))
    (lp_s, loss_s, g_s), (lp_n, loss_n, g_n) = results
    torch.testing.assert_close(lp_s, lp_n, rtol=0, atol=1e-5)
    assert loss_s == pytest.approx(loss_n, abs=1e-5)
    assert g_s.keys() == g_n.keys() and len(g_s) > 10
    for name in g_s:
        torch.testing.assert_close(g_s[name], g_n[name], rtol=1e-4, atol=1e-5, msg=name)
    assert any("point_encoder" in n for n in g_s)  # the scene encoding is trained through the shared path


def test_ragged_negatives_score_as_each_sample_alone_on_both_paths(setup):
    """Samples with 1, 3, 0 and 2 negatives in one batch: each present answer scores what it scores in a
    batch of its own sample alone, the empty slots are 0 and never computed, and the odds-ratio term's
    gradients agree between the shared-prefix and the naive path."""
    model, collate, samples = setup
    keep = [1, 3, 0, 2]
    ragged = [{**s, "negatives": s["negatives"][:k]} for s, k in zip(samples, keep)]
    batch = collate(ragged)
    assert batch.cand_present.tolist() == [[j <= k for j in range(4)] for k in keep]
    results = []
    for shared in (True, False):
        model.zero_grad()
        logps, _ = model.candidate_logps(batch, shared=shared)
        loss, metrics = orpo_loss(logps, lam=0.1, present=batch.cand_present)
        loss.backward()
        results.append((logps.detach(), loss.item(), _grads(model)))
    (lp_s, loss_s, g_s), (lp_n, loss_n, g_n) = results
    torch.testing.assert_close(lp_s, lp_n, rtol=0, atol=1e-5)
    assert loss_s == pytest.approx(loss_n, abs=1e-5) and metrics["negatives_per_sample"] == pytest.approx(1.5)
    for name in g_s:
        torch.testing.assert_close(g_s[name], g_n[name], rtol=1e-4, atol=1e-5, msg=name)
    assert (lp_s[~batch.cand_present] == 0).all()
    with torch.no_grad():
        for i, s in enumerate(ragged):
            alone = model.candidate_logps(collate([s]))[0][0]
            torch.testing.assert_close(lp_s[i, : keep[i] + 1], alone, rtol=0, atol=1e-5)


def test_a_question_is_grounded_as_it_would_be_alone(setup):
    """The grounding head's scores of a question do not depend on the other questions of its batch: their
    lengths pad it, and it read its padding (up to 8.5 in logit on the demo's model, so answers served
    in a batch differed from the same question asked alone, and two evaluations of one model differed)."""
    model, collate, samples = setup
    model.eval()
    questions = [{**s, "question": s["question"] + " please" * k} for k, s in enumerate(samples)]
    batch = collate(questions, [[] for _ in questions])
    assert len(set(batch.instruction_mask.sum(1).tolist())) == len(questions)  # every row padded differently
    with torch.no_grad():
        together = model.grounding_logits(batch)
        for i, q in enumerate(questions):
            alone = model.grounding_logits(collate([q], [[]]))[0]
            n = int(batch.object_mask[i].sum())
            torch.testing.assert_close(together[i, :n], alone[:n], rtol=0, atol=1e-4)


def test_save_load_round_trip_gives_identical_outputs(setup, tmp_path):
    model, collate, samples = setup
    batch = collate(samples)
    model.eval()
    before = model.candidate_logps(batch)[0]
    folder = save_model(model, tmp_path / "model")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "scene_encoder.safetensors" in files and "lm/model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # nothing to unpickle
    loaded = load_model(folder)
    assert torch.equal(loaded.candidate_logps(batch)[0], before)
    assert loaded.generate(batch, max_new_tokens=4) == model.generate(batch, max_new_tokens=4)
    assert dataclasses.asdict(loaded.cfg) == dataclasses.asdict(model.cfg)


def test_lora_model_saves_base_and_adapter_unmerged_and_reloads_identical(setup, tmp_path):
    model, collate, samples = setup
    model.set_trainable(lm="lora")
    for n, p in model.lm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    batch = collate(samples)
    model.eval()
    before = model.candidate_logps(batch)[0]
    folder = save_model(model, tmp_path / "m")
    assert (folder / "lm" / "model.safetensors").is_file() and (folder / "lm_adapter").is_dir()
    assert torch.equal(load_model(folder).candidate_logps(batch)[0], before)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="cl3dor_model.json is missing"):
        load_model(tmp_path)


def test_generation_greedy_and_beam_respect_max_new_tokens(setup):
    model, collate, samples = setup
    batch = collate(samples, candidates=[[] for _ in samples])
    assert batch.num_candidates == 0
    for kwargs in ({}, {"num_beams": 3, "repetition_penalty": 1.3}):
        ids = model.generate_ids(batch, max_new_tokens=3, **kwargs)
        assert ids.shape[0] == len(samples) and 1 <= ids.shape[1] <= 3
        assert len(model.generate(batch, max_new_tokens=3, **kwargs)) == len(samples)


def test_set_trainable_per_part(setup):
    model, _, _ = setup
    model.set_trainable(
        point_encoder="freeze",
        spatial="train",
        projector="train",
        lm="lora",
        grounding="freeze",
        object_classifier="freeze",
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ("lora_" in n) or n.startswith(("spatial", "location", "projector", "slots", "focus_geometry", "where_words"))
        for n in trainable
    )
    # where the focus objects are, and the slopes of its words, train with spatial
    assert any(n.startswith("focus_geometry") for n in trainable) and model.where_words.slope.requires_grad
    assert not any(n.startswith(("point_encoder", "grounding")) for n in trainable)
    model.set_trainable(grounding="train")
    assert any(p.requires_grad for p in model.grounding.parameters())
    with pytest.raises(ValueError, match="'lora' only for lm"):
        model.set_trainable(projector="lora")


def test_object_budget_keeps_relevant_objects_then_the_nearest_to_the_room_centre():
    objs = [{"object_id": i, "center": [float(i), 0, 0]} for i in range(10)]
    picked = select_objects(objs, relevant=[7, 3], budget=4)
    # then the nearest to the centre of all objects (4.5, 0, 0), not to the relevant ones: at inference
    # nobody knows them, so an order built around them would give them away
    assert [o["object_id"] for o in picked] == [7, 3, 4, 5]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("points", torch.zeros(2, 3, 64, 6, dtype=torch.float64), "points must be torch.float32 of shape"),
        ("points", torch.zeros(2, 3, 64, 3), "got torch.float32 \\(2, 3, 64, 3\\)"),
        ("object_mask", torch.ones(2, 4, dtype=torch.bool), "object_mask must be torch.bool of shape \\(2, 3\\)"),
        ("object_mask", torch.zeros(2, 3, dtype=torch.bool), "every sample needs at least one object"),
        ("cand_ids", torch.zeros(2, 4, 5, dtype=torch.int32), "cand_ids must be torch.int64"),
    ],
)
def test_bad_batches_fail_with_the_field_and_expectation(field, value, message):
    good = dict(
        points=torch.zeros(2, 3, 64, 6),
        object_mask=torch.ones(2, 3, dtype=torch.bool),
        centers=torch.zeros(2, 3, 3),
        sizes=torch.zeros(2, 3, 3),
        instruction_ids=torch.zeros(2, 7, dtype=torch.long),
        instruction_mask=torch.ones(2, 7, dtype=torch.long),
        cand_ids=torch.zeros(2, 4, 5, dtype=torch.long),
        cand_mask=torch.ones(2, 4, 5, dtype=torch.long),
    )
    SceneBatch(**good)
    with pytest.raises(BatchError, match=message):
        SceneBatch(**{**good, field: value})


def test_tiny_model_overfits_and_ranks_gold_above_every_negative(setup):
    model, collate, samples = setup
    batch = collate(samples)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        loss, metrics = orpo_loss(model.candidate_logps(batch)[0], lam=0.5)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        odds = log_odds(model.candidate_logps(batch)[0])
    assert (odds[:, :1] > odds[:, 1:]).all(), odds
    assert metrics["pref_accuracy"] == 1.0 and metrics["nll"] < 0.2
    greedy = model.generate(collate(samples, candidates=[[] for _ in samples]), max_new_tokens=6)
    assert greedy == [s["answers"][0] for s in samples]


def test_lm_from_a_local_folder_saves_only_its_lora_adapter(setup, tmp_path):
    model, collate, samples = setup
    base = tmp_path / "base_lm"
    model.lm.save_pretrained(base)  # stands in for a real LM folder (OPT, Vicuna, ...) with its tokenizer
    model.tokenizer.save_pretrained(base)
    cfg = dataclasses.replace(model.cfg, lm=dataclasses.replace(model.cfg.lm, path=str(base)))
    from_folder = build_model(cfg)  # no corpus: the folder's tokenizer is used
    assert from_folder.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    from_folder.set_trainable(lm="lora")
    for n, p in from_folder.lm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    from_folder.eval()
    batch = collate(samples)
    before = from_folder.candidate_logps(batch)[0]
    folder = save_model(from_folder, tmp_path / "adapted")
    assert (folder / "lm_adapter" / "adapter_model.safetensors").is_file() and not (folder / "lm").exists()
    torch.testing.assert_close(load_model(folder).candidate_logps(batch)[0], before, rtol=0, atol=1e-6)


def test_full_training_of_a_local_base_then_lora_saves_both_and_reloads_identical(setup, tmp_path):
    """The alignment stages train the base LM, the contrastive stage adds LoRA: the folder must carry the
    trained base (not just an adapter against the untouched one) and reload to the same outputs."""
    model, collate, samples = setup
    base = tmp_path / "base_lm"
    model.lm.save_pretrained(base)
    model.tokenizer.save_pretrained(base)
    cfg = dataclasses.replace(model.cfg, lm=dataclasses.replace(model.cfg.lm, path=str(base)))
    stage1 = build_model(cfg)
    stage1.set_trainable(lm="train")
    opt = torch.optim.SGD([p for p in stage1.lm.parameters() if p.requires_grad], lr=0.5)
    loss, _ = orpo_loss(stage1.candidate_logps(collate(samples))[0], lam=0)
    loss.backward()
    opt.step()
    stage2 = load_model(save_model(stage1, tmp_path / "stage1"))  # the next stage starts from the export
    stage2.set_trainable(lm="lora")
    for n, p in stage2.lm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    stage2.eval()
    batch = collate(samples)
    before = stage2.candidate_logps(batch)[0]
    folder = save_model(stage2, tmp_path / "stage2")
    assert (folder / "lm" / "model.safetensors").is_file() and (folder / "lm_adapter").is_dir()
    assert torch.equal(load_model(folder).candidate_logps(batch)[0], before)
    from safetensors.torch import load_file

    trained, original = load_file(folder / "lm" / "model.safetensors"), load_file(base / "model.safetensors")
    assert trained.keys() == original.keys()  # clean base weights: no LoRA keys mixed in
    assert any(not torch.equal(trained[k], original[k]) for k in trained)  # the base's training is in the folder


def test_cached_point_features_give_the_same_scores(setup):
    model, collate, samples = setup
    model.eval()
    with_points = model.candidate_logps(collate(samples))[0]
    cached = {
        scene: [{**row, "feature": f.numpy()} for row, f in zip(rows, model.point_features(rows, model.cfg.num_points))]
        for scene, rows in collate.objects.items()
    }
    batch = SceneCollator(model.tokenizer, cached, model.cfg.num_points, model.cfg.max_objects)(samples)
    assert batch.features is not None and batch.points.shape[2] == 1
    torch.testing.assert_close(model.candidate_logps(batch)[0], with_points, rtol=0, atol=1e-5)


def test_every_trainable_part_gets_a_gradient_when_no_sample_has_focus_objects(setup):
    # Under teacher forcing a batch of questions about no object (e.g. "is there a lamp?" with no lamp)
    # has no focus tokens. If a trainable parameter then got no gradient on one Ray Train worker only,
    # ZeRO's gradient buckets would differ between ranks and the all-reduce would abort the run.
    model, _, samples = setup
    _, objects, _ = toy_scenes()
    teach = SceneCollator(model.tokenizer, objects, model.cfg.num_points, model.cfg.max_objects, teacher_forcing=1.0)
    empty = [{**s, "object_ids": []} for s in samples]
    model.set_trainable(
        point_encoder="freeze",
        grounding="freeze",
        object_classifier="freeze",
        spatial="train",
        projector="train",
        lm="train",
    )
    orpo_loss(model(teach(empty)), lam=0.1)[0].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert model.grounding is not None and missing == []
