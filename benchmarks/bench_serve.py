"""Serving throughput and latency, dynamic batching on against off, at concurrency 1, 4 and 16.

    python benchmarks/bench_serve.py [--requests 96] [--max-batch 16] [--new-tokens 8]

Deploys the app on a local Ray (one model replica, one CPU) with a tiny model over synthetic
rooms, twice: max_batch_size = --max-batch (batching on) and 1 (off). The same bounded load of
`--requests` POST /v1/answer requests goes to 127.0.0.1 from `c` client threads. Prints
requests/s and p50/p99 latency per setting and the batching throughput ratio at concurrency 16.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported

from cl3dor_ray.config import PrepareConfig, ServeConfig, load_config  # noqa: E402
from cl3dor_ray.data.prepare import prepare  # noqa: E402
from cl3dor_ray.model.io import build_model, save_model  # noqa: E402
from cl3dor_ray.runtime import ray_session  # noqa: E402
from cl3dor_ray.scenes.synth_dataset import synthesize  # noqa: E402
from cl3dor_ray.serve.client import Cl3dorClient  # noqa: E402

QUESTIONS = ["What color is the chair?", "What is on the table?", "How many books are in the room?",
             "Is there a cup on the desk?", "Where is the lamp placed?", "What is next to the bed?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, scenes: list[str], requests: int, concurrency: int, new_tokens: int) -> dict:
    client = Cl3dorClient.over_http(url)
    jobs = [(scenes[i % len(scenes)], QUESTIONS[i % len(QUESTIONS)]) for i in range(requests)]

    def one(job):
        t = time.perf_counter()
        client.answer(job[1], scene_id=job[0], max_new_tokens=new_tokens)
        return time.perf_counter() - t

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: one round at this concurrency
        list(pool.map(one, jobs[:concurrency]))
        t = time.perf_counter()
        latencies = sorted(pool.map(one, jobs))
        seconds = time.perf_counter() - t
    return {"requests_per_s": requests / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args()

    from ray import serve

    from cl3dor_ray.serve.app import build_app

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, num_cpus=2, quiet=True):
        tmp = Path(tmp)
        synthesize(tmp / "raw", 8, seed=0)
        prepare(tmp / "raw", tmp / "data", PrepareConfig(points_per_object=256, negatives=1, workers=2))
        cfg = load_config("configs/tiny.yaml")
        save_model(build_model(cfg.model, QUESTIONS + ["red", "on the table", "2", "yes", "no"]), tmp / "model")
        scenes = sorted(p.name for p in (tmp / "raw" / "scans").iterdir())
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for label, batch in (("batching", args.max_batch), ("no_batching", 1)):
            serve.run(build_app(str(tmp / "model"), str(tmp / "data"),
                                ServeConfig(max_batch_size=batch, batch_wait_timeout_s=0.01)),
                      name="cl3dor", route_prefix="/")
            for c in (1, 4, 16):
                results[f"{label}_c{c}"] = load(f"http://127.0.0.1:{port}", scenes, args.requests, c, args.new_tokens)
                r = results[f"{label}_c{c}"]
                print(f"  {label:11s} concurrency {c:2d}: {r['requests_per_s']:6.1f} req/s  "
                      f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms", flush=True)
            serve.delete("cl3dor")
        serve.shutdown()
    ratio = results["batching_c16"]["requests_per_s"] / results["no_batching_c16"]["requests_per_s"]
    print(f"batching throughput ratio at concurrency 16: {ratio:.2f}x (baseline: max_batch_size 1)")
    print(json.dumps({"batching_ratio_c16": ratio, "requests": args.requests, "max_batch_size": args.max_batch,
                      "new_tokens": args.new_tokens, "results": results}))


if __name__ == "__main__":
    main()
