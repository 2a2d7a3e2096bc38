"""Densification speed against open3d, and synthetic-scene generation speed.

    python benchmarks/bench_densify.py [--scenes 20] [--points 1024] [--repeats 3]

Same meshes, same run: every object of every scene is sampled with P points by
  - cl3dor (whole scene): `densify_objects`, one call per scene (numba-compiled loops; the best of
                          the repeats, so not the one-off compilation, which numba caches on disk);
  - cl3dor (per object):  `sample_surface` called once per object mesh, like open3d is;
  - open3d:               `TriangleMesh.sample_points_uniformly(P)` per object mesh (the baseline).
open3d's time includes building its TriangleMesh from numpy, which any caller has to do; the
mesh-building share is printed separately. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import open3d as o3d

from cl3dor_ray.scenes.densify import densify_objects, sample_surface
from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, read_scan
from cl3dor_ray.scenes.synth import generate_scene
from cl3dor_ray.scenes.synth_dataset import synthesize


def object_meshes(scene):
    face_ids = scene.face_instance_ids()
    for o in scene.objects:
        if o.label in STRUCTURE_LABELS:
            continue
        faces = scene.faces[face_ids == o.object_id]
        used, local = np.unique(faces, return_inverse=True)
        yield scene.vertices[used], scene.colors[used], local.reshape(-1, 3)


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        synthesize(tmp, args.scenes, seed=0)
        synth_s = (time.perf_counter() - t) / args.scenes
        t = time.perf_counter()
        for i in range(args.scenes):
            generate_scene(f"scene{i:04d}_00", 0, i)
        generate_s = (time.perf_counter() - t) / args.scenes
        scenes = [read_scan(p) for p in sorted((Path(tmp) / "scans").iterdir())]

    meshes = [m for s in scenes for m in object_meshes(s)]
    n_points = len(meshes) * args.points
    rng = np.random.default_rng(0)

    def ours_scene():
        for s in scenes:
            densify_objects(s, args.points, skip_labels=STRUCTURE_LABELS)

    def ours_object():
        for v, c, f in meshes:
            sample_surface(v, c, f, np.zeros(len(f), np.int64), 1, args.points, rng)

    def o3d_meshes():
        out = []
        for v, c, f in meshes:
            m = o3d.geometry.TriangleMesh(
                o3d.utility.Vector3dVector(v.astype(np.float64)), o3d.utility.Vector3iVector(f.astype(np.int32))
            )
            m.vertex_colors = o3d.utility.Vector3dVector(c / 255.0)
            out.append(m)
        return out

    prebuilt = o3d_meshes()

    def o3d_with_build():
        for m in o3d_meshes():
            m.sample_points_uniformly(args.points)

    def o3d_sample_only():
        for m in prebuilt:
            m.sample_points_uniformly(args.points)

    t_scene = best_of(args.repeats, ours_scene)
    t_object = best_of(args.repeats, ours_object)
    t_o3d = best_of(args.repeats, o3d_with_build)
    t_o3d_sample = best_of(args.repeats, o3d_sample_only)

    figures = {
        "scenes": args.scenes,
        "objects": len(meshes),
        "points_per_object": args.points,
        "median_object_faces": int(np.median([len(f) for _, _, f in meshes])),
        "cl3dor_scene_points_per_s": n_points / t_scene,
        "cl3dor_object_points_per_s": n_points / t_object,
        "open3d_points_per_s": n_points / t_o3d,
        "open3d_sample_only_points_per_s": n_points / t_o3d_sample,
        "densify_vs_open3d": t_o3d / t_scene,  # the per-scene ratio (issue 16's figure)
        "speedup_scene_vs_open3d": t_o3d / t_scene,
        "speedup_object_vs_open3d": t_o3d / t_object,
        "speedup_scene_vs_open3d_sample_only": t_o3d_sample / t_scene,
        "synth_s_per_scene": synth_s,
        "generate_s_per_scene": generate_s,
    }
    print(
        f"{args.scenes} scenes, {len(meshes)} objects, P = {args.points} "
        f"(median {figures['median_object_faces']} faces per object)"
    )
    print(f"  cl3dor densify_objects (per scene):   {figures['cl3dor_scene_points_per_s']:>14,.0f} points/s")
    print(f"  cl3dor sample_surface (per object):   {figures['cl3dor_object_points_per_s']:>14,.0f} points/s")
    print(f"  open3d sample_points_uniformly:       {figures['open3d_points_per_s']:>14,.0f} points/s  (baseline)")
    print(f"  open3d, mesh prebuilt (sample only):  {figures['open3d_sample_only_points_per_s']:>14,.0f} points/s")
    print(
        f"  speed-up vs open3d: {figures['speedup_scene_vs_open3d']:.2f}x per scene, "
        f"{figures['speedup_object_vs_open3d']:.2f}x per object "
        f"({figures['speedup_scene_vs_open3d_sample_only']:.2f}x vs open3d's sampling alone)"
    )
    print(
        f"  synthetic scene: {synth_s * 1000:.0f} ms per scene written "
        f"({generate_s * 1000:.0f} ms to generate, the rest is writing the files)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
