"""The real training stages: Ray Train on a local Ray with 2 CPU workers, DeepSpeed ZeRO on gloo."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from cl3dor_ray.config import load_config
from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.model.batch import SceneCollator
from cl3dor_ray.model.io import load_model
from cl3dor_ray.train.trainer import stage_samples, train
from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.slow
SHORT = [
    "train.batch_size=2",
    "train.eval_samples=4",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.num_to_keep=2",
    "train.encoder_pretraining.steps=150",
    "train.encoder_pretraining.batch_size=16",
    "train.grounding.steps=4",
    "train.grounding.batch_size=8",
    "train.object_alignment.steps=4",
    "train.scene_alignment.steps=4",
    "train.instruction_tuning.steps=4",
    "train.scene_alignment.enabled=true",
    "train.pair_samples=8",
]  # tiny.yaml has no scene alignment: all five here
STAGES = ["encoder_pretraining", "grounding", "object_alignment", "scene_alignment", "instruction_tuning"]


def config(*overrides):
    return load_config("configs/tiny.yaml", TINY_MODEL + SHORT + list(overrides))


def stage_steps(run_dir, stage):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["stage"] == stage and "loss" in r]


@pytest.fixture(scope="module")
def three_stage_run(prepared_dir, local_ray, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    result = train(config(), prepared_dir, run)
    return run, result


def test_three_stages_export_a_model_that_loads_and_generates(three_stage_run, prepared_dir):
    run, result = three_stage_run
    assert result.stages_run == STAGES
    model = load_model(run / "model")
    rows = stage_samples(prepared_dir, "val", ["qa"]).slice(0, 3).to_pylist()
    collate = SceneCollator(
        model.tokenizer,
        Prepared(prepared_dir).objects(model.cfg.num_points),
        model.cfg.num_points,
        model.cfg.max_objects,
    )
    answers = model.generate(collate(rows, [[] for _ in rows]), max_new_tokens=6)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    for stage in STAGES[1:]:
        assert stage_steps(run, stage) == [1, 2, 3, 4]
    assert stage_steps(run, "encoder_pretraining")[-1] == 150
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    contrastive = [r for r in rows if r["stage"] == "instruction_tuning" and "or_loss" in r]
    assert contrastive and all(0 <= r["pref_accuracy"] <= 1 for r in contrastive)
    # every logged step of every stage says how large its gradient was before DeepSpeed clipped it
    logged = [r for r in rows if "loss" in r]
    assert {r["stage"] for r in logged} == set(STAGES)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in logged)
    # the contrastive stage measured its hard pairs before its first step and after its last
    pairs = {
        k: (r["step"], r[k], r["train_pairs.n"])
        for r in rows
        if r["stage"] == "instruction_tuning"
        for k in ("train_pairs.start", "train_pairs.end")
        if k in r
    }
    assert pairs["train_pairs.start"][0] == 0 and pairs["train_pairs.end"][0] == 4
    assert pairs["train_pairs.start"][2] == pairs["train_pairs.end"][2] >= 8  # 8 samples, at least a pair each
    assert not any(k.startswith("train_pairs") for r in rows if r["stage"] != "instruction_tuning" for k in r)
    assert any("val_em" in r for r in rows) and (run / "curves.png").stat().st_size > 10_000
    # all stages report to one Ray Train run: all ranks' DeepSpeed shards are in each checkpoint, each is
    # tagged with its stage, and only num_to_keep are kept
    ckpts = sorted(p for p in (run / "ray" / "train").glob("checkpoint_*") if p.is_dir())
    assert len(ckpts) == 2 and [(p / "stage").read_text() for p in ckpts] == ["instruction_tuning"] * 2
    assert {p.name for p in (ckpts[-1] / "ds").iterdir()} >= {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }
    # the stages really changed the weights, each from the previous one's
    init, final = load_model(run / "init_model"), load_model(run / "model")
    assert not torch.equal(init.projector[0].weight, final.projector[0].weight)


def test_encoder_pretraining_learns_and_grounding_reports_its_figures(three_stage_run):
    """Four training rooms are too few for validation accuracy to mean much (the demo's 60 rooms reach
    0.92 against a majority class of 0.11; tests/model/test_grounding.py checks the features); here the
    classification loss must fall through Ray Train + DeepSpeed, and the figures must be written."""
    run, _ = three_stage_run
    losses = [
        r["loss"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "encoder_pretraining" and "loss" in r
    ]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10, losses
    encoder = json.loads((run / "stages" / "encoder_pretraining" / "metrics.json").read_text())
    assert encoder["n"] > 0 and 0 <= encoder["accuracy"] <= 1 and 0 < encoder["majority_baseline"] < 1, encoder
    assert any(k.startswith("accuracy.category.") for k in encoder) and "accuracy.small_objects" in encoder
    grounding = json.loads((run / "stages" / "grounding" / "metrics.json").read_text())
    assert grounding["all.n"] > 0 and 0 <= grounding["all.recall"] <= 1
    # the later stages froze what the pretraining stages trained
    first, final = load_model(run / "stages" / "grounding" / "model"), load_model(run / "model")
    assert torch.equal(first.point_encoder.sa1.mlp[0].weight, final.point_encoder.sa1.mlp[0].weight)
    assert torch.equal(first.grounding.score[1].weight, final.grounding.score[1].weight)


def test_rerun_skips_finished_stages(three_stage_run, prepared_dir):
    run, _ = three_stage_run
    assert train(config(), prepared_dir, run).stages_run == []


def test_zero_stage_1_trains_too(three_stage_run, prepared_dir, tmp_path):
    run, _ = three_stage_run
    result = train(
        config("train.zero_stage=1"),
        prepared_dir,
        tmp_path,
        only_stage="instruction_tuning",
        init_model=run / "stages" / "scene_alignment" / "model",
    )
    assert result.stages_run == ["instruction_tuning"] and stage_steps(tmp_path, "instruction_tuning") == [1, 2, 3, 4]
    before, after = load_model(run / "stages" / "scene_alignment" / "model"), load_model(tmp_path / "model")
    assert not torch.equal(before.projector[0].weight, after.projector[0].weight)


def test_a_worker_killed_mid_run_recovers_and_finishes(three_stage_run, prepared_dir, tmp_path):
    run, _ = three_stage_run
    cfg = config("train.instruction_tuning.steps=6", "train.fail_at_step=3", "train.max_failures=2")
    result = train(
        cfg,
        prepared_dir,
        tmp_path,
        only_stage="instruction_tuning",
        init_model=run / "stages" / "scene_alignment" / "model",
    )
    assert (tmp_path / ".injected_failure").exists()  # the worker really died
    assert result.stages_run == ["instruction_tuning"]
    assert stage_steps(tmp_path, "instruction_tuning") == [1, 2, 3, 4, 5, 6]  # none lost, none repeated


def test_resume_after_the_driver_is_stopped_continues_at_the_right_step(three_stage_run, prepared_dir, tmp_path):
    run, _ = three_stage_run
    cmd = [
        sys.executable,
        "-m",
        "cl3dor_ray.cli",
        "train",
        "--data",
        str(prepared_dir),
        "--out",
        str(tmp_path),
        "--stage",
        "instruction_tuning",
        "--init",
        str(run / "stages" / "scene_alignment" / "model"),
        *TINY_MODEL,
        *SHORT,
        "train.instruction_tuning.steps=12",
        "train.checkpoint_every=3",
        "train.eval_every=100",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpts = tmp_path / "ray" / "train"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpts / "checkpoint_manager_snapshot.json").exists():
        time.sleep(0.5)
    assert first.poll() is None, first.stdout.read()
    first.send_signal(signal.SIGINT)  # Ctrl-C on the driver, mid-run
    first.communicate(timeout=120)
    assert not (tmp_path / "model").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed = [
        int(line.split("resuming at step ")[1].split(":")[0])
        for line in (second.stdout + second.stderr).splitlines()
        if "resuming at step " in line
    ]
    assert resumed and resumed[0] >= 3 and resumed[0] % 3 == 0
    assert stage_steps(tmp_path, "instruction_tuning") == list(range(1, 13))
    assert (tmp_path / "model" / "cl3dor_model.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train.wrkers=2"], "unknown key train.'wrkers'"),
        (["train.zero_stage=two"], "train.zero_stage: expected int, got str"),
        (["train.instruction_tuning.tasks=[qa,dance]"], "stage tasks \\['dance'\\] invalid"),
    ],
)
def test_bad_config_fails_at_once_before_any_worker(prepared_dir, tmp_path, args, message):
    t = time.time()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl3dor_ray.cli",
            "train",
            "--data",
            str(prepared_dir),
            "--out",
            str(tmp_path / "r"),
            *args,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and __import__("re").search(message, run.stderr), run.stderr
    assert "Started a local Ray" not in run.stdout + run.stderr and time.time() - t < 30
    assert not (tmp_path / "r").exists()


def test_missing_data_folder_fails_at_once(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl3dor_ray.cli",
            "train",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "objects is missing; expected the output folder of `cl3dor prepare`" in run.stderr
    assert "Started a local Ray" not in run.stdout + run.stderr
