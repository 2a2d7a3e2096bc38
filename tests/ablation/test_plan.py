"""The ablation's plan and report logic, without Ray."""

import dataclasses
import math

import pytest

from cl3dor_ray.ablation.plan import AblationConfig, expand_variants, load_ablation_config
from cl3dor_ray.ablation.report import _delta, read_results_csv, summarise, write_results_csv
from cl3dor_ray.config import ConfigError


def test_shipped_config_expands_to_every_variant_the_issue_asks_for():
    variants = {v.name: v for v in expand_variants(load_ablation_config("configs/ablation.yaml"))}
    assert {"full", "sparse", "no_negatives", "random_negatives", "lambda_0"} <= set(variants)
    # the density claim is dense against sparse at the same P, and the encoder sees all P points
    assert variants["sparse"].cfg.prepare.points_per_object == variants["full"].cfg.prepare.points_per_object
    assert all(v.cfg.model.num_points == v.cfg.prepare.points_per_object for v in variants.values())
    lams = sorted({v.cfg.train.instruction_tuning.lam for v in variants.values()})
    assert lams[0] == 0 and lams[-1] > 0  # λ = 0 against the full method's λ
    full = variants["full"].cfg
    assert (
        (full.prepare.sparse, full.prepare.negative_generator, full.train.instruction_tuning.contrastive)
        == (False, "rule", True)
        and full.prepare.negatives > 0
        and full.train.instruction_tuning.lam > 0
    )
    assert (
        variants["sparse"].cfg.prepare.sparse
        and variants["random_negatives"].cfg.prepare.negative_generator == "random"
    )
    # every variant has the same step budget
    assert len({tuple(s.steps for _, s in v.cfg.train.stages) for v in variants.values()}) == 1


def test_only_contrastive_stage_variants_share_the_reference_alignment():
    variants = {v.name: v for v in expand_variants(load_ablation_config("configs/ablation.yaml"))}
    branches = {n for n, v in variants.items() if v.branch}
    assert branches == {
        n for n in variants if n in ("no_negatives", "random_negatives", "llm_negatives") or n.startswith("lambda_")
    }
    keys = {v.data_key for v in variants.values()}
    assert variants["full"].data_key == variants["lambda_0"].data_key == "dense-p256-k4-rule"
    assert {"sparse-p256-k4-rule", "dense-p256-k0", "dense-p256-k4-random"} <= keys
    llm = expand_variants(
        dataclasses.replace(
            load_ablation_config("configs/ablation.yaml"),
            variants={"full": [], "llm_negatives": ["prepare.negative_generator=llm"]},
        )
    )
    assert llm[1].branch and llm[1].data_key == "dense-p256-k4-llm"  # a variant of the negatives alone


def test_quick_version_leaves_out_its_skipped_variants_but_never_the_reference():
    acfg = load_ablation_config("configs/ablation.yaml")
    skipping = dataclasses.replace(acfg, quick=dataclasses.replace(acfg.quick, skip_variants=["sparse"]))
    assert "sparse" in skipping.variants and "sparse" not in skipping.quick_version().variants
    bad = dataclasses.replace(acfg, quick=dataclasses.replace(acfg.quick, skip_variants=["full"]))
    with pytest.raises(ConfigError, match="skip_variants"):
        bad.quick_version()


def test_bad_variant_config_is_named(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("variants: {full: [], oops: [train.instruction_tuning.lamda=1]}\n")
    with pytest.raises(ConfigError, match="lamda"):
        expand_variants(load_ablation_config(bad))
    with pytest.raises(ConfigError, match="reference 'full' is not one of the variants"):
        AblationConfig(variants={"x": []})
    bad.write_text("seeds: 3\n")
    with pytest.raises(ConfigError, match="seeds: expected a list"):
        load_ablation_config(bad)


def test_summary_and_noise_rule(tmp_path):
    rows = (
        [{"variant": "full", "seed": s, "scanqa.em": v} for s, v in enumerate([0.50, 0.52, 0.54])]
        + [{"variant": "sft", "seed": s, "scanqa.em": v} for s, v in enumerate([0.40, 0.42, 0.44])]
        + [{"variant": "near", "seed": s, "scanqa.em": v} for s, v in enumerate([0.49, 0.53, 0.55])]
    )
    write_results_csv(rows, tmp_path / "r.csv")
    back = read_results_csv(tmp_path / "r.csv")
    stats = summarise(back, "scanqa.em")
    assert stats["full"][0] == pytest.approx(0.52) and stats["full"][1] == pytest.approx(0.02) and stats["full"][2] == 3
    d, note = _delta(stats["full"], stats["sft"])
    assert d == pytest.approx(0.10) and note == "full better"
    assert _delta(stats["full"], stats["near"])[1] == "within noise"
    assert _delta((0.5, math.nan, 1), (0.4, math.nan, 1))[1].startswith("1 seed")
    # identical answers for every seed (sd 0) still leave the sampling error of n questions
    assert _delta((0.594, 0.0, 2), (0.598, 0.0, 2))[1] == "full worse"
    assert _delta((0.594, 0.0, 2), (0.598, 0.0, 2), n=379)[1] == "within noise"
    assert _delta((0.594, 0.0, 2), (0.498, 0.0, 2), n=379)[1] == "full better"


def test_noise_floor_is_seed_spread_or_sampling_error_whichever_is_larger():
    from cl3dor_ray.ablation.report import noise_floor

    assert noise_floor((0.7, 0.02, 3), (0.6, 0.03, 3)) == pytest.approx(math.hypot(0.02, 0.03))
    # 1,500 questions at p = 0.7: sqrt(2 * 0.21 / 1500) = 0.0167 beats a seed spread of 0.01
    assert noise_floor((0.7, 0.01, 3), (0.6, 0.0, 3), n=1500) == pytest.approx(math.sqrt(0.42 / 1500))
    assert math.isnan(noise_floor((0.7, math.nan, 1), (0.6, math.nan, 1), n=1500))


def test_val_scenes_must_leave_training_rooms():
    with pytest.raises(ConfigError, match="val_scenes must be in"):
        AblationConfig(scenes=10, val_scenes=10)
    assert load_ablation_config("configs/ablation.yaml").val_scenes >= 30  # >= 1,000 validation questions


def test_paired_difference_cancels_what_seeds_share():
    from cl3dor_ray.ablation.report import paired_delta

    # the seeds move both variants together: unpaired, the spread (0.1) hides a steady 0.02
    rows = [
        {"variant": v, "seed": float(s), "scanqa.em": base - (0.02 if v == "sft" else 0) + 0.001 * s * (v == "sft")}
        for s, base in enumerate([0.45, 0.65, 0.69])
        for v in ("full", "sft")
    ]
    d, sd, floor, seeds = paired_delta(rows, "full", "sft", "scanqa.em")
    assert seeds == 3 and d == pytest.approx(0.019) and sd == pytest.approx(0.001) and floor == sd
    assert paired_delta(rows, "full", "sft", "scanqa.em", n=1500)[2] == pytest.approx(
        math.sqrt(2 * 0.5967 * 0.4033 / 1500), rel=1e-3
    )
    assert paired_delta(rows[:2], "full", "sft", "scanqa.em") is None  # one seed: no spread to measure
