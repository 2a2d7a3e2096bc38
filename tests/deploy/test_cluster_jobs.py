"""The cluster path on one machine: `ray start --head` on 127.0.0.1, the three jobs through
`ray job submit --working-dir .`, then serve_config.yaml through `serve deploy`, queried over HTTP."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cl3dor_ray.config import STAGES
from tests.helpers import TINY_MODEL, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def wait_for(url: str, timeout: float, any_answer: bool = False, alive=lambda: True) -> bool:
    """True once `url` answers 200 (or, with any_answer, anything at all: the dashboard wants a token);
    False at the timeout, or as soon as the process that should answer is gone (`alive`)."""
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError:
            if any_answer:
                return True
            time.sleep(1)
        except OSError:
            time.sleep(1)
    return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node on 127.0.0.1 started with `ray start --head --block`, stopped by signalling that process
    (`ray stop` would also stop the test session's own Ray)."""
    tmp = tmp_path_factory.mktemp("cluster")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's unix socket paths must stay < 108 bytes
    port, dashboard = free_port(), free_port()
    # the venv first on PATH: a job's `python` entrypoint resolves to the Python the cluster runs;
    # RAY_AUTH_MODE=token: Ray 2.60 clusters require a token, and the CLIs must send it; a fresh machine has
    # no ~/.ray/auth_token, so this cluster gets its own through RAY_AUTH_TOKEN
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            f"--temp-dir={ray_tmp}",
            "--disable-usage-stats",
            # the test session's own Ray is running too: no fixed default port may be shared
            *(
                f"--{flag}={free_port()}"
                for flag in (
                    "ray-client-server-port",
                    "dashboard-agent-listen-port",
                    "dashboard-agent-grpc-port",
                    "metrics-export-port",
                    "runtime-env-agent-port",
                )
            ),
        ],
        env=env,
        stdout=open(tmp / "head.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    up = wait_for(f"{address}/api/version", 120, any_answer=True, alive=lambda: head.poll() is None)
    assert up, (tmp / "head.log").read_text()[-3000:]
    yield address, env, tmp
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:  # its graceful stop took 34 s here; the test is over, nothing to keep
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def submit(address, env, *args, timeout=900):
    run = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--", "python", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert run.returncode == 0 and "succeeded" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


@pytest.fixture(scope="module")
def jobs(cluster, synth_dir):
    address, env, tmp = cluster
    data, run, evaluation = tmp / "prepared", tmp / "run", tmp / "eval"
    submit(
        address,
        env,
        "jobs/prepare_data.py",
        "--raw",
        str(synth_dir),
        "--out",
        str(data),
        "--points-per-object",
        "128",
        "--negatives",
        "2",
        "--workers",
        "2",
    )
    # the contrastive stage only: this tests the jobs on a cluster; tests/train covers the other stages
    steps = ["train.instruction_tuning.steps=3"] + [f"train.{s}.enabled=false" for s in STAGES[:-1]]
    submit(
        address,
        env,
        "jobs/train.py",
        "--data",
        str(data),
        "--out",
        str(run),
        *TINY_MODEL,
        *steps,
        "train.batch_size=2",
        "train.eval_every=3",
        "train.checkpoint_every=3",
        "train.eval_samples=4",
    )
    submit(
        address,
        env,
        "jobs/evaluate.py",
        "--model",
        str(run / "model"),
        "--data",
        str(data),
        "--out",
        str(evaluation),
        "--concurrency",
        "8",
    )
    return data, run, evaluation


def test_the_three_jobs_succeed_with_the_right_outputs(jobs, synth_dir):
    data, run, evaluation = jobs
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["summary"]["scenes"] == len(list((synth_dir / "scans").iterdir()))
    assert pq.read_table(data / "objects").num_rows == manifest["summary"]["objects"] > 0
    assert (run / "model" / "cl3dor_model.json").is_file()
    assert json.loads((run / "train_summary.json").read_text())["stages_run"] == ["instruction_tuning"]
    metrics = json.loads((evaluation / "metrics.json").read_text())
    val = pq.read_table(data / "samples", columns=["split"]).column("split").to_pylist().count("val")
    assert metrics["samples"] == val and metrics["failed"] == 0 and "scanqa.em" in metrics


def test_serve_config_deploys_and_answers_over_http(cluster, jobs, tmp_path):
    address, env, _ = cluster
    data, run, _ = jobs
    port = free_port()
    config = yaml.safe_load(Path("serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"].update(model_dir=str(run / "model"), data_dir=str(data))
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    deploy = subprocess.run(
        [str(BIN / "serve"), "deploy", str(path), "--address", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    try:
        assert wait_for(f"http://127.0.0.1:{port}/healthz", 180), "the app did not come up"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/answer",
            method="POST",
            data=json.dumps({"scene_id": "scene0000_00", "question": "What is on the table?"}).encode(),
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200 and isinstance(json.loads(r.read())["answer"], str)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/scenes", timeout=60) as r:
            assert [s["scene_id"] for s in json.loads(r.read())["scenes"]][0] == "scene0000_00"
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", address], env=env, timeout=120)
