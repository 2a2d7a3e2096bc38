"""benchmarks/gpu_check.py, the GPU path's check without Ray, run at its CI size on the CPU."""

import json
import subprocess
import sys


def test_gpu_check_runs_without_ray_and_its_prefix_cache_answers_the_same():
    # Ray made unimportable: the check must not need it (the GPU machine's image has none)
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv = ['gpu_check', '--small', '--repeats', '1'];"
        "import runpy; runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["device"] == "cpu" and figures["prefix_cache_identical"] is True
    for name in ("naive", "shared"):
        step = figures["orpo_step"][name]
        assert step["step_s"] > 0 and step["flops"] > 0 and 0 < step["mfu"] < 1
    # the shared prefix does less work for the same answers: fewer FLOPs per step
    assert figures["orpo_step"]["shared"]["flops"] < figures["orpo_step"]["naive"]["flops"]
    assert "Ray" not in run.stderr
