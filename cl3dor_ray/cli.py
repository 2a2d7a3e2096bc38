"""`cl3dor`: the command line. Each sub-command is one stage; `demo` runs the stages in order."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cl3dor_ray.config import ConfigError, load_config
from cl3dor_ray.scenes.catalog import STRUCTURE_LABELS
from cl3dor_ray.scenes.densify import densify_objects, sparse_objects
from cl3dor_ray.scenes.errors import ScanFormatError
from cl3dor_ray.scenes.render import render_sparse_vs_dense
from cl3dor_ray.scenes.scannet import read_scan
from cl3dor_ray.scenes.synth_dataset import synthesize


def cmd_synth(args) -> int:
    t0 = time.perf_counter()
    summary = synthesize(args.out, args.scenes, args.seed)
    elapsed = time.perf_counter() - t0
    print(f"wrote {sum(summary.scenes.values())} scans ({summary.scenes['train']} train, {summary.scenes['val']} val), "
          f"{summary.objects} objects, {summary.vertices:,} vertices to {args.out} in {elapsed:.1f} s")
    for name, n in summary.annotations.items():
        print(f"  annotations/{name}: {n} records")
    return 0


def cmd_render(args) -> int:
    scene = read_scan(Path(args.raw) / "scans" / args.scene)
    dense = densify_objects(scene, args.points_per_object, skip_labels=STRUCTURE_LABELS)
    sparse = sparse_objects(scene, args.points_per_object, skip_labels=STRUCTURE_LABELS)
    if args.object is not None:
        pick = [i for i, o in enumerate(dense) if o.object_id == args.object]
        if not pick:
            print(f"error: {args.scene} has no object {args.object}", file=sys.stderr)
            return 2
        dense, sparse = [dense[pick[0]]], [sparse[pick[0]]]
    print(render_sparse_vs_dense(sparse, dense, args.out))
    return 0


def cmd_demo(args) -> int:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    t0 = time.perf_counter()
    raw = out / "raw"
    synthesize(raw, cfg.synth.scenes, cfg.synth.seed)
    t_synth = time.perf_counter() - t0

    rows, t_dense, n_points = [], 0.0, 0
    for scan_dir in sorted((raw / "scans").iterdir()):
        scene = read_scan(scan_dir)
        t = time.perf_counter()
        dense = densify_objects(scene, cfg.densify.points_per_object, cfg.densify.seed, STRUCTURE_LABELS)
        t_dense += time.perf_counter() - t
        n_points += sum(len(c.points) for c in dense)
        rows += [(c.label, c.num_source_vertices) for c in dense]

    first = read_scan(next(iter(sorted((raw / "scans").iterdir()))))
    args_ = (first, cfg.densify.points_per_object, cfg.densify.seed, STRUCTURE_LABELS)
    dense, sparse = densify_objects(*args_), sparse_objects(*args_)
    scene_png = render_sparse_vs_dense(sparse, dense, out / "scene_sparse_vs_dense.png")
    smallest = int(np.argmin([c.num_source_vertices for c in dense]))
    object_png = render_sparse_vs_dense([sparse[smallest]], [dense[smallest]], out / "object_sparse_vs_dense.png")

    by_label: dict[str, list[int]] = {}
    for label, n in rows:
        by_label.setdefault(label, []).append(n)
    table = ["| category | objects | scan vertices (median) | points after densify |", "|---|---:|---:|---:|"]
    for label in sorted(by_label, key=lambda k: np.median(by_label[k])):
        table.append(f"| {label} | {len(by_label[label])} | {int(np.median(by_label[label]))} | "
                     f"{cfg.densify.points_per_object} |")
    report = [
        "# cl3dor demo", "",
        f"{cfg.synth.scenes} synthetic ScanNet-format rooms in {t_synth:.1f} s; "
        f"{len(rows)} objects densified to {cfg.densify.points_per_object} points each "
        f"({n_points / max(t_dense, 1e-9):,.0f} points/s).", "",
        *table, "",
        f"![scene]({scene_png.name})", "", f"![smallest object]({object_png.name})", "",
    ]
    (out / "report.md").write_text("\n".join(report))
    print("\n".join(table))
    print(f"\nreport: {out / 'report.md'}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl3dor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic scans and annotations in ScanNet/ScanQA/ScanRefer format")
    p.add_argument("--out", required=True, help="output folder (gets scans/ and annotations/)")
    p.add_argument("--scenes", type=int, default=12, help="number of rooms")
    p.add_argument("--seed", type=int, default=0, help="generator seed; same seed, same bytes")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("render", help="PNG of one scene (or object), sparse beside densified")
    p.add_argument("--raw", required=True, help="folder holding scans/")
    p.add_argument("--scene", required=True, help="scene id, e.g. scene0000_00")
    p.add_argument("--object", type=int, help="one object id; default: the whole scene")
    p.add_argument("--points-per-object", type=int, default=1024)
    p.add_argument("--out", required=True, help="PNG path")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("demo", help="run the pipeline end to end on synthetic scenes")
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. densify.points_per_object=2048")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ScanFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
