"""Preparation throughput with 1 and with 2 Ray Data workers, in one run on one local Ray.

    python benchmarks/bench_prepare.py [--scenes 200] [--points 4096] [--negatives 4]

The same synthetic scans are prepared twice, `workers` = 1 then 2 (Ray is started once, with 2
CPUs, and warmed up first). Figures: wall time of `prepare()` and of its two Ray Data stages.
For reference, the same densification work is also run as two plain Ray tasks against one: the
ceiling for parallel speed-up on this machine, where the driver, raylet and GCS share the cores.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported

import pyarrow as pa  # noqa: E402
import ray  # noqa: E402

from cl3dor_ray.config import PrepareConfig  # noqa: E402
from cl3dor_ray.data.objects import densify_scans  # noqa: E402
from cl3dor_ray.data.prepare import prepare  # noqa: E402
from cl3dor_ray.runtime import ray_session  # noqa: E402
from cl3dor_ray.scenes.synth_dataset import synthesize  # noqa: E402


@ray.remote
def _densify_chunk(scan_dirs: list[str], points: int, raw: str) -> int:
    batch = pa.table({"scene_id": [Path(d).name for d in scan_dirs], "scan_dir": scan_dirs})
    return densify_scans(batch, points, False, 0, raw).num_rows


def plain_ray_seconds(raw: str, points: int, tasks: int) -> float:
    dirs = sorted(str(p) for p in (Path(raw) / "scans").iterdir())
    t = time.perf_counter()
    ray.get([_densify_chunk.remote(dirs[i::tasks], points, raw) for i in range(tasks)])
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--negatives", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ray_session(None, num_cpus=2, quiet=True):
        raw = f"{tmp}/raw"
        synthesize(raw, args.scenes, seed=0)
        # warm-up: the first use of Ray Data pays for worker start-up and imports
        prepare(raw, f"{tmp}/warm", PrepareConfig(points_per_object=64, negatives=1, workers=2))
        runs = {}
        for workers in (1, 2):
            cfg = PrepareConfig(points_per_object=args.points, negatives=args.negatives, workers=workers)
            t = time.perf_counter()
            summary = prepare(raw, f"{tmp}/out{workers}", cfg)
            runs[workers] = (time.perf_counter() - t, summary.stage_seconds)
        plain = {n: plain_ray_seconds(raw, args.points, n) for n in (1, 2)}

    (t1, s1), (t2, s2) = runs[1], runs[2]
    figures = {
        "scenes": args.scenes,
        "points_per_object": args.points,
        "negatives": args.negatives,
        "objects": summary.objects,
        "samples": sum(summary.samples.values()),
        "scenes_per_s_1_worker": args.scenes / t1,
        "scenes_per_s_2_workers": args.scenes / t2,
        "speedup_2_vs_1": t1 / t2,
        "objects_stage_speedup": s1["objects"] / s2["objects"],
        "samples_stage_speedup": s1["samples"] / s2["samples"],
        "plain_ray_densify_speedup": plain[1] / plain[2],
    }
    print(
        f"{args.scenes} scenes, {figures['objects']} objects x {args.points} points, "
        f"{figures['samples']} samples x {args.negatives} negatives"
    )
    print(
        f"  1 worker : {t1:6.1f} s  {figures['scenes_per_s_1_worker']:6.2f} scenes/s  (baseline; "
        f"objects {s1['objects']:.1f} s, samples {s1['samples']:.1f} s)"
    )
    print(
        f"  2 workers: {t2:6.1f} s  {figures['scenes_per_s_2_workers']:6.2f} scenes/s  "
        f"(objects {s2['objects']:.1f} s, samples {s2['samples']:.1f} s)"
    )
    print(
        f"  speed-up : {figures['speedup_2_vs_1']:.2f}x overall, {figures['objects_stage_speedup']:.2f}x objects "
        f"stage, {figures['samples_stage_speedup']:.2f}x samples stage"
    )
    print(
        f"  ceiling  : plain Ray tasks on the same densification, 2 vs 1: {figures['plain_ray_densify_speedup']:.2f}x"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
