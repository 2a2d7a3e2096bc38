import json
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from cl3dor_ray.config import STAGES, load_config

# the demo's stages: those configs/tiny.yaml enables (the paper's recipe has no scene alignment here)
DEMO_STAGES = [name for name, stage in load_config("configs/tiny.yaml").train.stages if stage.enabled]


def cl3dor(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cl3dor_ray.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_synth_command_writes_scans_and_reports_counts(tmp_path):
    run = cl3dor("synth", "--out", str(tmp_path), "--scenes", "2", "--seed", "3")
    assert run.returncode == 0, run.stderr
    assert "wrote 2 scans (1 train, 1 val)" in run.stdout
    assert (tmp_path / "scans" / "scene0001_00" / "scene0001_00_vh_clean_2.ply").is_file()
    qa = json.loads((tmp_path / "annotations" / "ScanQA_v1.0_val.json").read_text())
    assert f"annotations/ScanQA_v1.0_val.json: {len(qa)} records" in run.stdout


def test_render_command_draws_one_object(synth_dir, tmp_path):
    run = cl3dor(
        "render", "--raw", str(synth_dir), "--scene", "scene0000_00", "--object", "0", "--out", str(tmp_path / "o.png")
    )
    assert run.returncode == 0, run.stderr
    assert mpimg.imread(tmp_path / "o.png").shape[:2] == (600, 1200)
    run = cl3dor(
        "render",
        "--raw",
        str(synth_dir),
        "--scene",
        "scene0000_00",
        "--object",
        "999",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert run.returncode == 2 and "has no object 999" in run.stderr


def test_broken_scan_is_a_clear_error_not_a_traceback(synth_dir, tmp_path):
    import shutil

    broken = tmp_path / "raw"
    shutil.copytree(synth_dir / "scans" / "scene0000_00", broken / "scans" / "scene0000_00")
    (broken / "scans" / "scene0000_00" / "scene0000_00.aggregation.json").unlink()
    run = cl3dor("render", "--raw", str(broken), "--scene", "scene0000_00", "--out", str(tmp_path / "x.png"))
    assert run.returncode == 2
    assert "scene0000_00.aggregation.json: missing file" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    """The whole pipeline (synth, prepare, 5 training stages, Serve, evaluation), with few steps; 8 rooms
    give 2 validation rooms, which the scene-swap probe needs."""
    steps = [f"train.{s}.steps=2" for s in STAGES] + [f"train.{s}.batch_size=8" for s in STAGES[:2]]
    # bytes, not text: text mode would turn the carriage returns with which a bar redraws its line into newlines
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl3dor_ray.cli",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "synth.scenes=8",
            "prepare.points_per_object=128",
            "model.num_points=128",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            *steps,
        ],
        capture_output=True,
    )
    stdout, stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 0, stderr[-3000:]
    assert "| question type | n | EM | text-only prior | EM, room swapped |" in stdout
    # a console a person can read: each stage's start and end, a bar per training stage and evaluation
    # (a bar redraws itself after "\r" on its line: the console shows its last state), and the report's path
    lines = [line.split("\r")[-1] for line in (stdout + stderr).split("\n") if line.split("\r")[-1].strip()]
    assert len(lines) <= 60, "\n".join(lines)
    repeated = [line for line in set(lines) if lines.count(line) > 1]
    assert not repeated, repeated
    for stage in ("prepare", *DEMO_STAGES, "evaluate"):
        assert any(line.startswith(f"[{stage}] start") for line in lines), stage
        assert any(line.startswith(f"[{stage}] done") for line in lines), stage
    for stage in (*DEMO_STAGES, "evaluate"):
        assert any(line.startswith(f"[{stage}]: ") and "/" in line for line in lines), stage  # its bar
    assert f"report: {tmp_path / 'demo' / 'report.md'}" in stdout
    assert (tmp_path / "demo" / "logs" / "driver.log").stat().st_size > 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| cup |" in report or "| book |" in report or "| bottle |" in report
    for png in ("scene_sparse_vs_dense.png", "object_sparse_vs_dense.png", "run/curves.png"):
        assert f"]({png})" in report and (tmp_path / "demo" / png).is_file()
    assert "| existence.random.f1 |" in report and "hard negatives it trained against (kind)" in report
    assert "Scene-swap drop" in report and "| majority class |" in report and "sparse (LEO's scan vertices)" in report
    metrics = json.loads((tmp_path / "demo" / "eval" / "metrics.json").read_text())
    assert metrics["failed"] == 0 and metrics["samples"] > 0
    assert "grounding.scene_swap.drop" in metrics and "prior.scanqa.em" in metrics


def test_bad_override_exits_2_with_message(tmp_path):
    run = cl3dor("demo", "--out", str(tmp_path), "prepare.points=3")
    assert run.returncode == 2 and "unknown key prepare.'points'" in run.stderr
