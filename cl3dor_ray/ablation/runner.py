"""`cl3dor ablate`: the CL3DOR claims, tested on one set of synthetic rooms.

    ABL/raw/                        the synthetic scans and annotations (one set for every variant)
    ABL/data/<data key>/            one `cl3dor prepare` output per distinct prepare: section
    ABL/runs/<variant>/seed<s>/     `cl3dor train` run folder, and eval/ (`cl3dor evaluate` output)
    ABL/results.csv, ABL/ablation.md, ABL/*.png       (report.py)

Preparations run one after another, each with all of prepare.workers. Then every (variant, seed)
is one Ray task that trains with Ray Train + DeepSpeed and evaluates through a Ray Serve
deployment of its own; `parallel` of them run side by side. A branch variant (plan.py) waits
for the reference of its seed and trains its contrastive stage from the reference's aligned model.
A failed job is recorded with its error and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from cl3dor_ray.ablation.plan import AblationConfig, Variant, expand_variants
from cl3dor_ray.config import PRETRAIN_STAGES
from cl3dor_ray.runtime import prefer_loopback


@dataclass
class Job:
    variant: Variant
    seed: int
    run_dir: Path
    data_dir: Path
    after: "Job | None" = None  # the reference job whose aligned model a branch starts from
    result: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.variant.name}/seed{self.seed}"


def aligned_model(run_dir: Path, cfg) -> Path:
    """The export of the last enabled stage before the contrastive one."""
    done = [n for n, s in cfg.train.stages if s.enabled and n != "instruction_tuning"]
    return run_dir / "stages" / done[-1] / "model" if done else run_dir / "init_model"


def train_stats(run_dir: Path, cfg) -> dict[str, float]:
    """From RUN/metrics.jsonl: ms per optimizer step of each stage (its last logged throughput), and the
    contrastive stage's final training figures (mean of its last 3 logs): how well the model tells the
    gold answer from its negatives while training (`train.pref_accuracy`), and the odds-ratio term; and
    its fixed hard pairs ranked right at its start and end (`train.pairs_start`, `train.pairs_end`)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    logs: dict[str, list[dict]] = {}
    pairs: dict[str, float] = {}  # the contrastive stage's hard pairs ranked right, at its start and end
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "samples_per_s" in row:
            logs.setdefault(row["stage"], []).append(row)
        for when in ("start", "end"):
            if row["stage"] == "instruction_tuning" and f"train_pairs.{when}" in row:
                pairs[f"train.pairs_{when}"] = row[f"train_pairs.{when}"]
    t = cfg.train
    # the pretraining stages have their own batch size and no accumulation
    per_step = {
        name: (getattr(t, name).batch_size if name in PRETRAIN_STAGES else t.batch_size * t.grad_accum) * t.workers
        for name in logs
    }
    out = {f"step_ms.{stage}": 1000 * per_step[stage] / rows[-1]["samples_per_s"] for stage, rows in logs.items()}
    out.update(pairs)
    last = logs.get("instruction_tuning", [])[-3:]
    for key in ("nll", "or_loss", "pref_accuracy"):
        values = [r[key] for r in last if key in r]
        if values:
            out[f"train.{key}"] = sum(values) / len(values)
    # the pretraining stages' validation figures (a branch has none: it starts from its reference's model)
    for stage, prefix, keys in (
        (
            "encoder_pretraining",
            "encoder.",
            ("accuracy", "accuracy.small_objects", "accuracy.large_objects", "majority_baseline"),
        ),
        ("grounding", "grounding_head.", ("all.exact", "all.recall")),
    ):
        path = run_dir / "stages" / stage / "metrics.json"
        if path.is_file():
            figures = json.loads(path.read_text())
            out.update({prefix + k: figures[k] for k in keys if k in figures})
    return out


def train_and_evaluate(job: dict) -> dict:
    """One (variant, seed): the product's train() and evaluate(), on the Ray this task runs in."""
    from cl3dor_ray.eval.evaluate import evaluate
    from cl3dor_ray.serve.deployment import deployment
    from cl3dor_ray.train.trainer import train

    cfg = job["config"]
    run_dir, data_dir = Path(job["run_dir"]), Path(job["data_dir"])
    t0 = time.perf_counter()
    trained = train(
        cfg,
        data_dir,
        run_dir,
        only_stage="instruction_tuning" if job["init_model"] else None,
        init_model=job["init_model"],
    )
    t_train = time.perf_counter() - t0
    # Serve stays up between jobs: others run beside this one (run_ablation shuts it down at the end)
    with deployment(
        trained.model_dir, data_dir, cfg.serve, f"ablation-{job['name']}-{job['seed']}", keep_serve=True
    ) as client:
        # every variant is measured on the reference's hard pairs, whatever negatives it trained with
        metrics = evaluate(client, data_dir, run_dir / "eval", limit=job["eval_limit"], pairs_from=job["pairs_from"])
    return {
        "train_seconds": t_train,
        "eval_seconds": metrics["seconds"],
        **train_stats(run_dir, cfg),
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def plan_jobs(acfg: AblationConfig, out: Path) -> list[Job]:
    """Every (variant, seed), the references first: each branch waits for its seed's reference."""
    variants = expand_variants(acfg)

    def job(v: Variant, seed: int, after: Job | None = None) -> Job:
        cfg = dataclasses.replace(v.cfg, train=dataclasses.replace(v.cfg.train, seed=seed))
        return Job(
            dataclasses.replace(v, cfg=cfg),
            seed,
            out / "runs" / v.name / f"seed{seed}",
            out / "data" / v.data_key,
            after,
        )

    reference = {seed: job(variants[0], seed) for seed in acfg.seeds}
    return list(reference.values()) + [
        job(v, seed, reference[seed] if v.branch else None) for v in variants[1:] for seed in acfg.seeds
    ]


def _prepare_all(raw: Path, jobs: list[Job]) -> dict[str, dict]:
    """One `cl3dor prepare` per distinct prepare: section; its time is the preparation cost."""
    from cl3dor_ray.data.prepare import prepare

    costs = {}
    # Ray Data's first execution in a session pays its start-up (about 2 s here); an untimed first run
    # of the reference's preparation keeps that out of the dense-vs-sparse comparison.
    prepare(raw, jobs[0].data_dir, jobs[0].variant.cfg.prepare)
    for job in jobs:
        key = job.variant.data_key
        if key in costs:
            continue
        summary = prepare(raw, job.data_dir, job.variant.cfg.prepare)
        costs[key] = {
            "prep_seconds": summary.seconds,
            **{f"prep_seconds.{k}": v for k, v in summary.stage_seconds.items()},
        }
        print(f"[prepare] {key}: {summary.line(job.data_dir)}", flush=True)
    return costs


def _schedule(jobs: list[Job], parallel: int, eval_limit: int | None) -> None:
    """Run every job, `parallel` at a time, each branch after its reference."""
    import ray

    remote = ray.remote(num_cpus=0, max_retries=0)(train_and_evaluate)
    pending, running = list(jobs), {}
    while pending or running:
        for job in [j for j in pending if j.after is None or j.after.result][: parallel - len(running)]:
            pending.remove(job)
            if job.after is not None and "error" in job.after.result:
                job.result = {"error": f"its reference {job.after.key} failed"}
                continue
            spec = {
                "name": job.variant.name,
                "seed": job.seed,
                "eval_limit": eval_limit,
                "config": job.variant.cfg,
                "run_dir": str(job.run_dir),
                "data_dir": str(job.data_dir),
                "pairs_from": str(jobs[0].data_dir),
                "init_model": str(aligned_model(job.after.run_dir, job.after.variant.cfg)) if job.after else None,
            }
            running[remote.remote(spec)] = (job, time.perf_counter())
            print(f"[ablate] start  {job.key}{' (from the reference aligned model)' if job.after else ''}", flush=True)
        if not running:
            continue
        [done], _ = ray.wait(list(running), num_returns=1)
        job, started = running.pop(done)
        try:
            job.result = ray.get(done)
            line = f"EM {job.result.get('scanqa.em', float('nan')):.3f}, train {job.result['train_seconds']:.0f} s"
        except Exception as e:  # a failed variant is reported, the others go on
            job.result = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"}
            (job.run_dir / "error.txt").parent.mkdir(parents=True, exist_ok=True)
            (job.run_dir / "error.txt").write_text("".join(traceback.format_exception(e)))
            line = f"FAILED: {job.result['error']}"
        print(f"[ablate] done   {job.key} in {time.perf_counter() - started:.0f} s: {line}", flush=True)


def run_ablation(acfg: AblationConfig, out: str | Path, quick: bool = False) -> Path:
    """Everything the ablation does; returns the path of ablation.md."""
    prefer_loopback(None)
    from ray import serve

    from cl3dor_ray.ablation.report import write_report
    from cl3dor_ray.runtime import ray_session
    from cl3dor_ray.scenes.synth_dataset import synthesize

    t0 = time.perf_counter()
    acfg = acfg.quick_version() if quick else acfg
    out = Path(out).resolve()
    jobs = plan_jobs(acfg, out)
    synthesize(out / "raw", acfg.scenes, acfg.synth_seed, acfg.val_scenes)
    workers = jobs[0].variant.cfg.train.workers
    # Embedded Ray: +1 CPU because each evaluation's ingress takes a tenth of a CPU next to a slot's
    # 1-CPU replica. Inside `ray job submit` ($RAY_ADDRESS) this joins the cluster instead.
    with ray_session(None, num_cpus=acfg.parallel * workers + 1, log_to_driver=False, log_dir=out / "logs"):
        prep = _prepare_all(out / "raw", jobs)
        serve.start(proxy_location="Disabled")  # evaluation goes through deployment handles, not HTTP
        _schedule(jobs, acfg.parallel, acfg.eval_limit)
        if not serve.status().applications:  # on a cluster, leave its other Serve apps running
            serve.shutdown()
    for job in jobs:
        job.result = {**prep[job.variant.data_key], **job.result}
    seconds = time.perf_counter() - t0
    (out / "run.json").write_text(json.dumps({"seconds": seconds, "quick": quick}))
    return write_report(acfg, jobs, out, seconds, quick)


def rebuild_report(acfg: AblationConfig, out: str | Path, quick: bool = False) -> Path:
    """`cl3dor ablate --report-only`: ablation.md and results.csv again from ABL/results.csv and the run
    folders (e.g. after a change to the report), without training anything."""
    from cl3dor_ray.ablation.report import read_results_csv, write_report

    acfg = acfg.quick_version() if quick else acfg
    out = Path(out).resolve()
    if not (out / "results.csv").is_file():
        raise FileNotFoundError(f"{out / 'results.csv'} does not exist; run `cl3dor ablate` first")
    rows = {(r["variant"], int(r["seed"])): r for r in read_results_csv(out / "results.csv")}
    jobs = plan_jobs(acfg, out)
    for job in jobs:
        row = rows.get((job.variant.name, job.seed), {"error": "not in results.csv"})
        job.result = {k: v for k, v in row.items() if isinstance(v, float) or (k == "error" and v)}
        job.result.update(train_stats(job.run_dir, job.variant.cfg))
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {"seconds": float("nan")}
    return write_report(acfg, jobs, out, run["seconds"], quick)
