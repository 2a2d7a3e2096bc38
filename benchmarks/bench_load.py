"""Serve memory under load: 32 concurrent maximal uploads beside normal questions, bounds off and on.

    python benchmarks/bench_load.py [--maximal 32] [--normal 16] [--points 200000]

One app on 127.0.0.1 (token set) with a tiny model over synthetic rooms, deployed twice in one run:
  unbounded: no body, total-point or admission bound (what the app did before issue 16; uploads are
             still handed to the replica as float32 arrays);
  bounded:   the serve: defaults (max_body_bytes, max_total_points, max_in_flight, max_bytes_in_flight).
Each gets `--maximal` concurrent /v1/answer requests that upload `--points` points in all (the largest
the bounded app accepts) and `--normal` questions about a prepared scene at the same time. Clients
retry a 503 after its Retry-After, as Cl3dorClient does. The resident memory of every Serve process
(controller, proxy, ingress and model replicas) is sampled every 0.1 s; the replica must stay alive
(same PID before and after) and every normal question must be answered. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from cl3dor_ray.config import PrepareConfig, ServeConfig, load_config  # noqa: E402
from cl3dor_ray.data.prepare import prepare  # noqa: E402
from cl3dor_ray.model.io import build_model, save_model  # noqa: E402
from cl3dor_ray.runtime import ray_session  # noqa: E402
from cl3dor_ray.scenes.synth_dataset import synthesize  # noqa: E402
from cl3dor_ray.serve.client import Cl3dorClient, Cl3dorRequestError  # noqa: E402

TOKEN = "bench-token"
PORT = 8766
UNBOUNDED = dict(max_body_bytes=10**10, max_total_points=10**9, max_in_flight=10**6, max_bytes_in_flight=10**10)


def serve_processes() -> dict[int, str]:
    """PID -> name of every Serve actor process of this machine (Ray names them ray::Serve...)."""
    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::Serve") or cmd.startswith("ray::ProxyActor"):
            out[p.info["pid"]] = cmd.split()[0]
    return out


def rss_gb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


def maximal_body(points: int, objects: int = 10) -> dict:
    rng = np.random.default_rng(0)
    per = points // objects
    return {
        "objects": [
            {
                "points": np.round(rng.normal(size=(per, 3)), 3).tolist(),
                "colors": rng.integers(0, 255, (per, 3)).tolist(),
            }
            for _ in range(objects)
        ],
        "question": "What is the largest object?",
        "max_new_tokens": 4,
    }


def run_load(url: str, scene: str, body: dict, maximal: int, normal: int) -> dict:
    client = Cl3dorClient.over_http(url, token=TOKEN, timeout=600, retries=60)
    outcome = {"maximal_ok": [], "maximal_failed": [], "normal_ok": [], "normal_failed": []}  # list.append is atomic

    def big(_):
        try:
            client.answer(body["question"], objects=body["objects"], max_new_tokens=4)
            outcome["maximal_ok"].append(1)
        except (Cl3dorRequestError, OSError) as e:
            outcome["maximal_failed"].append(str(e)[:200])

    def small(i):
        try:
            client.answer("What color is the chair?", scene_id=scene, max_new_tokens=4)
            outcome["normal_ok"].append(1)
        except (Cl3dorRequestError, OSError) as e:
            outcome["normal_failed"].append(str(e)[:200])

    t = time.perf_counter()
    with ThreadPoolExecutor(maximal + normal) as pool:
        jobs = [pool.submit(big, i) for i in range(maximal)] + [pool.submit(small, i) for i in range(normal)]
        for j in jobs:
            j.result()
    outcome["seconds"] = time.perf_counter() - t
    return outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maximal", type=int, default=32)
    parser.add_argument("--normal", type=int, default=16)
    parser.add_argument("--points", type=int, default=ServeConfig().max_total_points)
    args = parser.parse_args()

    from ray import serve

    from cl3dor_ray.serve.app import build_app

    body = maximal_body(args.points)
    size_mb = len(json.dumps(body)) / 1e6
    results = {}
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, num_cpus=2, quiet=True):
        tmp = Path(tmp)
        synthesize(tmp / "raw", 3, seed=0)
        prepare(tmp / "raw", tmp / "data", PrepareConfig(points_per_object=256, negatives=0, workers=2))
        save_model(
            build_model(load_config("configs/tiny.yaml").model, ["What color is the chair?", "red"]), tmp / "model"
        )
        url = f"http://127.0.0.1:{PORT}"
        print(
            f"{args.maximal} concurrent uploads of {args.points:,} points ({size_mb:.1f} MB of JSON each) "
            f"beside {args.normal} questions about a prepared room"
        )
        for label, overrides in (("unbounded", UNBOUNDED), ("bounded", {})):
            serve.start(http_options={"host": "127.0.0.1", "port": PORT})
            cfg = ServeConfig(api_token=TOKEN, max_objects=100, max_points_per_object=20000, **overrides)
            serve.run(build_app(str(tmp / "model"), str(tmp / "data"), cfg), name="cl3dor", route_prefix="/")
            client = Cl3dorClient.over_http(url, token=TOKEN)
            scene = client.scenes()[0]["scene_id"]
            client.answer("What color is the chair?", scene_id=scene)  # warm
            before = serve_processes()
            idle = rss_gb(before)
            peak, stop = [idle], threading.Event()

            def sample(peak=peak, stop=stop):
                while not stop.is_set():
                    peak.append(rss_gb(serve_processes()))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            outcome = run_load(url, scene, body, args.maximal, args.normal)
            stop.set()
            sampler.join()
            after = serve_processes()
            alive = (
                set(before) <= set(after)
                and client.answer("What color is the chair?", scene_id=scene)["answer"] is not None
            )
            results[label] = {
                "idle_gb": idle,
                "peak_gb": max(peak),
                "replicas_alive": alive,
                **{k: (len(v) if isinstance(v, list) else v) for k, v in outcome.items()},
                "first_failure": (outcome["maximal_failed"] + outcome["normal_failed"] or [""])[0],
            }
            r = results[label]
            print(
                f"  {label:9s}: Serve processes {r['idle_gb']:.2f} GB idle -> peak {r['peak_gb']:.2f} GB; "
                f"uploads answered {r['maximal_ok']}/{args.maximal}, questions {r['normal_ok']}/{args.normal}, "
                f"in {r['seconds']:.0f} s; processes alive: {alive}",
                flush=True,
            )
            serve.delete("cl3dor")
            serve.shutdown()
    ratio = results["bounded"]["peak_gb"] / results["unbounded"]["peak_gb"]
    print(f"peak Serve memory, bounded over unbounded: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "peak_gb_bounded": results["bounded"]["peak_gb"],
                "peak_gb_unbounded": results["unbounded"]["peak_gb"],
                "peak_ratio": ratio,
                "upload_mb": size_mb,
                "maximal": args.maximal,
                "normal": args.normal,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
