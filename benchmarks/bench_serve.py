"""Serving throughput and latency with the pretrained LLM: the scene prefix cache and dynamic batching.

    python benchmarks/bench_serve.py [--requests 48] [--max-batch 16] [--new-tokens 8] [--objects 60]
                                     [--model runs/demo-llm/run/model]

The pretrained-LLM recipe (configs/smollm2.yaml: SmolLM2-135M-Instruct from its local folder, the
scene encoder built from config, untrained; or `--model`, a trained model folder such as the one
`make demo-llm` leaves, whose grounding head picks the focus objects a user's deployment would) serves
rooms of `--objects` objects each: synthetic rooms merged four to a scan and prepared by the real
pipeline. One model replica on one CPU, on a local Ray, in four configurations deployed one after the
other in the same run:

    neither        max_batch_size 1,          prefix cache off   (the baseline)
    batching       max_batch_size --max-batch, prefix cache off
    cache          max_batch_size 1,          prefix cache on
    cache_batching max_batch_size --max-batch, prefix cache on

The same bounded load of `--requests` POST /v1/answer requests (questions cycling over the rooms) goes
to 127.0.0.1 from c = 1, 4 and 16 client threads, after one warm-up round at that concurrency (which
also fills the cache, as a serving replica's would be). Prints req/s, p50 and p99 per configuration
and concurrency; the last line is one JSON object with `prefix_cache_speedup_c16` (cache_batching over
neither, req/s at 16 in flight).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported

import numpy as np  # noqa: E402

from cl3dor_ray.config import PrepareConfig, ServeConfig, load_config  # noqa: E402
from cl3dor_ray.data.prepare import prepare  # noqa: E402
from cl3dor_ray.model.io import build_model, save_model  # noqa: E402
from cl3dor_ray.runtime import ray_session  # noqa: E402
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, Scene, SceneObject, write_scan  # noqa: E402
from cl3dor_ray.scenes.synth import generate_scene  # noqa: E402
from cl3dor_ray.serve.client import Cl3dorClient  # noqa: E402

QUESTIONS = [
    "What color is the chair?",
    "What is on the table?",
    "How many books are in the room?",
    "Is there a cup on the desk?",
    "Where is the lamp placed?",
    "What is next to the bed?",
]
CONFIGS = {"neither": (False, False), "batching": (True, False), "cache": (False, True), "cache_batching": (True, True)}


def merged_scene(scene_id: str, rooms: list[Scene]) -> Scene:
    """Rooms side by side in one scan (4 m apart), object ids renumbered: a scene with many objects."""
    verts, colors, faces, inst, objects, offset, next_id = [], [], [], [], [], 0, 0
    for k, room in enumerate(rooms):
        remap = {}
        for o in room.objects:
            if o.label in STRUCTURE_LABELS and k:  # one room's walls and floor are enough
                continue
            remap[o.object_id] = next_id
            objects.append(SceneObject(next_id, o.label))
            next_id += 1
        ids = np.array([remap.get(i, -1) if i >= 0 else -1 for i in room.instance_ids], np.int32)
        verts.append(room.vertices + np.array([8.0 * k, 0, 0], np.float32))
        colors.append(room.colors)
        faces.append(room.faces + offset)
        inst.append(ids)
        offset += len(room.vertices)
    return Scene(scene_id, np.vstack(verts), np.vstack(colors), np.vstack(faces), np.concatenate(inst), objects)


def load(url: str, scenes: list[str], requests: int, concurrency: int, new_tokens: int) -> dict:
    client = Cl3dorClient.over_http(url, timeout=600)
    jobs = [(scenes[i % len(scenes)], QUESTIONS[(i // len(scenes)) % len(QUESTIONS)]) for i in range(requests)]
    focus = []

    def one(job):
        t = time.perf_counter()
        focus.append(len(client.answer(job[1], scene_id=job[0], max_new_tokens=new_tokens)["objects"]))
        return time.perf_counter() - t

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs[: max(concurrency, len(scenes))]))  # warm-up: every scene once
        t = time.perf_counter()
        latencies = sorted(pool.map(one, jobs))
        seconds = time.perf_counter() - t
    return {
        "requests_per_s": requests / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "focus_objects_mean": statistics.mean(focus),  # what the grounding head put after the question
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--objects", type=int, default=60)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--config", default="configs/smollm2.yaml")
    parser.add_argument("--model", help="a trained model folder to serve (default: one built from --config)")
    args = parser.parse_args()

    from ray import serve

    from cl3dor_ray.serve.app import build_app

    results: dict = {}
    served = args.model or f"built from {args.config}"
    cfg = load_config(args.config, [f"model.max_objects={args.objects}"])
    if args.model:  # its own model config: points per object, and the objects it reads
        from cl3dor_ray.model.io import read_model_folder

        cfg.model = read_model_folder(args.model)[1]
        if cfg.model.max_objects != args.objects:
            parser.error(f"--model reads model.max_objects={cfg.model.max_objects} objects; pass --objects to match")
    # Ray Data's and Serve's logs (a line per request) go to files, as the product's commands send them
    logs = Path("runs/logs/bench_serve")
    with tempfile.TemporaryDirectory() as tmp, ray_session(None, num_cpus=2, quiet=True, log_dir=logs):
        tmp = Path(tmp)
        for s in range(args.scenes):  # four synthetic rooms per scan, until each has >= --objects objects
            rooms = [generate_scene(f"scene{s:04d}_00", 0, 4 * s + k)[1] for k in range(4)]
            write_scan(merged_scene(f"scene{s:04d}_00", rooms), tmp / "raw" / "scans")
        prepare(
            tmp / "raw", tmp / "data", PrepareConfig(points_per_object=cfg.model.num_points, negatives=0, workers=2)
        )
        model_dir = args.model or str(tmp / "model")
        if not args.model:  # seeded: an untrained head's focus count (0 to 8) moves the figures from run to run
            import torch

            torch.manual_seed(0)
            save_model(build_model(cfg.model), model_dir)
        from cl3dor_ray.data.prepared import Prepared

        objects = {s: len(o) for s, o in Prepared(tmp / "data").objects(cfg.model.num_points).items()}
        scenes = sorted(objects)
        print(
            f"{len(scenes)} scenes, objects per scene {sorted(objects.values())} (the model reads "
            f"{args.objects}); model {served} (LM {cfg.model.lm.path}); "
            f"{args.requests} requests, {args.new_tokens} new tokens"
        )
        for label, (batching, cached) in CONFIGS.items():
            serve_cfg = ServeConfig(
                max_batch_size=args.max_batch if batching else 1,
                batch_wait_timeout_s=0.01,
                prefix_cache_mb=256 if cached else 0,
            )
            serve.start(http_options={"host": "127.0.0.1", "port": 8765})
            serve.run(build_app(model_dir, str(tmp / "data"), serve_cfg), name="cl3dor", route_prefix="/")
            for c in (1, 4, 16):
                results[f"{label}_c{c}"] = r = load("http://127.0.0.1:8765", scenes, args.requests, c, args.new_tokens)
                print(
                    f"  {label:14s} {c:2d} in flight: {r['requests_per_s']:6.2f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                    f"p99 {r['p99_ms']:8.1f} ms  focus objects {r['focus_objects_mean']:.1f}",
                    flush=True,
                )
            serve.delete("cl3dor")
        serve.shutdown()
    base = results["neither_c16"]
    speedup = results["cache_batching_c16"]["requests_per_s"] / base["requests_per_s"]
    print(
        f"at 16 in flight, against neither ({base['requests_per_s']:.2f} req/s, p99 {base['p99_ms']:.0f} ms): "
        + ", ".join(
            f"{k} {results[f'{k}_c16']['requests_per_s'] / base['requests_per_s']:.2f}x "
            f"(p99 {results[f'{k}_c16']['p99_ms']:.0f} ms)"
            for k in CONFIGS
            if k != "neither"
        )
    )
    print(
        json.dumps(
            {
                "prefix_cache_speedup_c16": speedup,
                "batching_speedup_c16": results["batching_c16"]["requests_per_s"] / base["requests_per_s"],
                "cache_speedup_c16": results["cache_c16"]["requests_per_s"] / base["requests_per_s"],
                "requests": args.requests,
                "max_batch_size": args.max_batch,
                "new_tokens": args.new_tokens,
                "objects": args.objects,
                "model": served,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
