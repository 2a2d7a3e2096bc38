"""ABL/results.csv (one row per variant and seed) and ABL/ablation.md (means, differences, plots, costs).

"Within noise" is a stated rule, not a test: a difference to the reference is within noise when it
is no larger than sqrt(sd_ref^2 + sd_variant^2), the spread one would expect between two runs of the
same variant; for proportions (EM, F1) at least sqrt(2 p (1 - p) / n) as well, the sampling error of
n validation questions, because a small model can give the same answers for every seed (sd = 0)
without its score being exact. With one seed there is no noise estimate and the report says so.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import matplotlib

from cl3dor_ray.eval.prior import box_size_prior, language_prior

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEADLINE = [
    ("scanqa.em", "ScanQA EM"),
    ("existence.adversarial.f1", "POPE F1 (adversarial)"),
    ("sqa3d.em", "SQA3D EM"),
    ("preference.accuracy", "val. preference accuracy"),
]
SPLITS = [
    ("scanqa.cider", "ScanQA CIDEr"),
    ("scan2cap.cider", "Scan2Cap CIDEr"),
    ("preference.accuracy.qa", "pref. acc. QA"),
    ("preference.accuracy.sqa", "pref. acc. SQA3D"),
    ("preference.accuracy.existence", "pref. acc. existence"),
    ("preference.accuracy.caption", "pref. acc. captions"),
    ("sqa3d.em.is", "SQA3D EM is"),
    ("sqa3d.em.which", "SQA3D EM which"),
    ("scanqa.em.small_objects", "QA EM small obj."),
    ("scanqa.em.large_objects", "QA EM large obj."),
    ("scan2cap.cider.small_objects", "Cap CIDEr small obj."),
    ("scan2cap.cider.large_objects", "Cap CIDEr large obj."),
    ("scanqa.em.color", "EM color"),
    ("scanqa.em.category", "EM category"),
    ("scanqa.em.existence", "EM existence"),
    ("scanqa.em.counting", "EM counting"),
    ("scanqa.em.relation", "EM relation"),
    ("scanqa.em.location", "EM location"),
    ("existence.random.f1", "POPE random F1"),
    ("existence.popular.f1", "POPE popular F1"),
]
GROUNDING = [
    ("grounding.scene_swap.em", "EM, room swapped"),
    ("grounding.scene_swap.drop", "scene-swap drop"),
    ("grounding.scene_swap.changed", "answers changed"),
] + [(f"grounding.scene_swap.em.{t}.drop", f"drop {t}") for t in ("color", "category", "existence", "relation")]
ENCODER = [
    ("encoder.accuracy", "category acc."),
    ("encoder.accuracy.small_objects", "small objects"),
    ("encoder.accuracy.large_objects", "large objects"),
    ("encoder.majority_baseline", "majority class"),
    ("grounding_head.all.exact", "grounding head exact set"),
]
TRAINING = [
    ("train.nll", "final NLL"),
    ("train.or_loss", "final odds-ratio term"),
    ("train.pref_accuracy", "final preference accuracy (share of (gold, negative) pairs ranked right)"),
    ("train.pairs_start", "hard pairs ranked right at the stage's start"),
    ("train.pairs_end", "at its end"),
]
CLAIMS = [
    ("sparse", "denser per-object point clouds help (full vs sparse scan vertices)"),
    ("no_negatives", "hard negatives help (full vs no negatives, i.e. supervised fine-tuning)"),
    ("random_negatives", "hard negatives help more than random ones (full vs random negatives)"),
    ("lambda_0", "the odds-ratio term helps (full vs λ = 0, same negatives in the batch)"),
    ("llm_negatives", "the rule-based negatives do better than LLM-written ones (full vs negatives by SmolLM2)"),
]
PRIOR = "text-only prior"
BOX_PRIOR = "box-size prior"
FIXED = [
    "variant",
    "seed",
    "data",
    "points_per_object",
    "sparse",
    "negatives",
    "negative_generator",
    "lam",
    "branch",
    "error",
]


def _row(job) -> dict:
    cfg = job.variant.cfg
    return {
        "variant": job.variant.name,
        "seed": job.seed,
        "data": job.variant.data_key,
        "points_per_object": cfg.prepare.points_per_object,
        "sparse": cfg.prepare.sparse,
        "negatives": cfg.prepare.negatives if cfg.train.instruction_tuning.contrastive else 0,
        "negative_generator": cfg.prepare.negative_generator,
        "lam": cfg.train.instruction_tuning.lam,
        "branch": job.variant.branch,
        "error": job.result.get("error", ""),
        **{k: v for k, v in job.result.items() if k not in FIXED},
    }


def write_results_csv(rows: list[dict], path: Path) -> None:
    keys = FIXED + sorted({k for r in rows for k in r} - set(FIXED))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_results_csv(path: Path) -> list[dict]:
    """results.csv back as dicts, numbers as floats (what the report's tables are computed from)."""

    def value(v: str):
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as fh:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def summarise(rows: list[dict], metric: str) -> dict[str, tuple[float, float, int]]:
    """variant -> (mean, sample std (nan with one seed), seeds) over the rows that have the metric."""
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        vals = [
            r[metric]
            for r in rows
            if r["variant"] == variant and isinstance(r.get(metric), float) and not math.isnan(r[metric])
        ]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
            out[variant] = (statistics.fmean(vals), sd, len(vals))
    return out


def fmt(mean: float, sd: float) -> str:
    return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


SAMPLE_SIZE = {
    "scanqa.em": "scanqa.n",
    "existence.adversarial.f1": "existence.adversarial.n",
    "sqa3d.em": "sqa3d.n",
    "preference.accuracy": "preference.n",
}


def _sizes(rows, reference) -> dict[str, float | None]:
    """Per headline proportion, the reference's number of validation questions (or pairs) behind it."""
    return {m: summarise(rows, n).get(reference, (None,))[0] for m, n in SAMPLE_SIZE.items()}


def noise_floor(ref, var, n: float | None = None) -> float:
    """The difference two runs of one variant would show: seed spread, and for proportions over n
    questions at least their sampling error. nan with one seed."""
    noise = math.hypot(ref[1], var[1])
    if n and not math.isnan(noise):
        noise = max(noise, math.sqrt(2 * ref[0] * (1 - ref[0]) / n))
    return noise


def _verdict(d: float, floor: float) -> str:
    return "within noise" if abs(d) <= floor else ("full better" if d > 0 else "full worse")


def _delta(ref, var, n: float | None = None) -> tuple[float, str]:
    """ref, var: (mean, sd, seeds); n: validation questions behind a proportion metric."""
    d = ref[0] - var[0]
    noise = noise_floor(ref, var, n)
    if math.isnan(noise):
        return d, "1 seed: no noise estimate"
    return d, _verdict(d, noise)


def _table(rows, metrics, variants, describe) -> list[str]:
    stats = {m: summarise(rows, m) for m, _ in metrics}
    head = "| variant | what changes | " if describe else "| variant | "
    lines = [
        head + " | ".join(label for _, label in metrics) + " |",
        ("|---|---|" if describe else "|---|") + "---:|" * len(metrics),
    ]
    for v in variants:
        cells = [fmt(*stats[m][v][:2]) if v in stats[m] else "–" for m, _ in metrics]
        lines.append(f"| {v} | " + (f"{describe.get(v, '')} | " if describe else "") + " | ".join(cells) + " |")
    return lines


def _delta_table(reference, variants, cell) -> list[str]:
    """One row per variant but the reference, one column per headline metric: `cell(variant, metric)`."""
    lines = [
        "| variant | " + " | ".join(f"Δ {label}" for _, label in HEADLINE) + " |",
        "|---|" + "---:|" * len(HEADLINE),
    ]
    for v in variants:
        if v != reference:
            lines.append(f"| {v} | " + " | ".join(cell(v, m) for m, _ in HEADLINE) + " |")
    return lines


def _differences(rows, reference, variants) -> list[str]:
    """Full minus variant, unpaired: the means over seeds, within noise under the issue-8 rule."""
    stats = {m: summarise(rows, m) for m, _ in HEADLINE}
    sizes = _sizes(rows, reference)

    def cell(v, m):
        if v not in stats[m] or reference not in stats[m]:
            return "–"
        d, note = _delta(stats[m][reference], stats[m][v], sizes.get(m))
        noise = noise_floor(stats[m][reference], stats[m][v], sizes.get(m))
        return f"{d:+.3f} ({note}" + ("" if math.isnan(noise) else f", floor {noise:.3f}") + ")"

    return _delta_table(reference, variants, cell)


def _claims(rows, reference, variants) -> list[str]:
    """Per claim, the verdict as measured: from the differences paired by seed on the headline metrics
    (ScanQA EM, POPE adversarial F1, SQA3D EM, validation preference accuracy), each against its own floor."""
    sizes = _sizes(rows, reference)
    out = []
    for v, claim in CLAIMS:
        if v not in variants:
            continue
        paired = {label: paired_delta(rows, reference, v, m, sizes.get(m)) for m, label in HEADLINE}
        measured = {label: p for label, p in paired.items() if p is not None}
        if not measured:
            out.append(f"- {claim}: **not tested** (fewer than two seeds with both runs: no noise estimate)")
            continue
        notes = {label: (d, _verdict(d, floor), floor) for label, (d, _, floor, _) in measured.items()}
        better = [f"{k} {d:+.3f}" for k, (d, n, _) in notes.items() if n == "full better"]
        worse = [f"{k} {d:+.3f}" for k, (d, n, _) in notes.items() if n == "full worse"]
        if better and not worse:
            verdict = "SUPPORTED on " + ", ".join(better)
        elif worse and not better:
            verdict = "CONTRADICTED: the full method is worse on " + ", ".join(worse)
        elif better and worse:
            verdict = f"MIXED: better on {', '.join(better)}; worse on {', '.join(worse)}"
        else:
            verdict = "NOT SHOWN: every difference is within its noise floor"
        figures = "; ".join(f"{k} {d:+.3f} (floor {floor:.3f})" for k, (d, _, floor) in notes.items())
        out.append(f"- {claim}: **{verdict}**. Paired by seed: {figures}")
    return out


def paired_delta(rows: list[dict], reference: str, variant: str, metric: str, n: float | None = None):
    """Full minus variant seed by seed: (mean, sd of the per-seed differences, floor, seeds) or None.

    Variant and reference of one seed share the seed's initialisation and data order (a branch even
    shares its aligned model), so much of the seed-to-seed spread cancels in their difference. The
    floor is the larger of that sd and, for a proportion over n questions, sqrt(2p(1-p)/n).
    """
    by_seed = {}
    for r in rows:
        value = r.get(metric)
        if r["variant"] in (reference, variant) and isinstance(value, float) and not math.isnan(value):
            by_seed.setdefault(r["seed"], {})[r["variant"]] = value
    pairs = [(v[reference], v[variant]) for v in by_seed.values() if len(v) == 2]
    if len(pairs) < 2:
        return None
    diffs = [a - b for a, b in pairs]
    sd = statistics.stdev(diffs)
    p = statistics.fmean(a for a, _ in pairs)
    floor = max(sd, math.sqrt(2 * p * (1 - p) / n)) if n else sd
    return statistics.fmean(diffs), sd, floor, len(pairs)


def _paired(rows, reference, variants) -> list[str]:
    sizes = _sizes(rows, reference)

    def cell(v, m):
        got = paired_delta(rows, reference, v, m, sizes.get(m))
        if got is None:
            return "–"
        d, _, floor, _ = got
        return f"{d:+.3f} ({_verdict(d, floor)}, floor {floor:.3f})"

    return _delta_table(reference, variants, cell)


def _bar_chart(rows, variants, reference, prior: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(4.2 * len(HEADLINE), 3.8))
    for ax, (m, label) in zip(axes, HEADLINE):
        stats = summarise(rows, m)
        names = [v for v in variants if v in stats]
        means = [stats[v][0] for v in names]
        errs = [0 if math.isnan(stats[v][1]) else stats[v][1] for v in names]
        colors = ["tab:orange" if v == reference else "tab:blue" for v in names]
        ax.bar(range(len(names)), means, yerr=errs, color=colors, capsize=3)
        if m in prior:
            ax.axhline(prior[m], color="black", linestyle="--", linewidth=1, label=PRIOR)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle("mean ± std over seeds per variant (orange: the full method)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sweep_plot(
    rows, xs: dict[str, float], path: Path, xlabel: str, extra: dict[str, str] | None = None, log: bool = False
) -> Path:
    """Headline metrics against a swept value (x per variant); `extra` variants are drawn as dashed lines."""
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(4.2 * len(HEADLINE), 3.4))
    for ax, (m, label) in zip(axes, HEADLINE):
        stats = summarise(rows, m)
        pts = sorted((xs[v], *stats[v][:2]) for v in xs if v in stats)
        if pts:
            x, y, sd = zip(*pts)
            ax.errorbar(x, y, yerr=[0 if math.isnan(s) else s for s in sd], marker="o", capsize=3, label="full method")
        if m == "scanqa.em":
            small = summarise(rows, "scanqa.em.small_objects")
            pts = sorted((xs[v], small[v][0]) for v in xs if v in small)
            if pts:
                ax.plot(*zip(*pts), marker="s", linestyle=":", label="small objects only")
        for v, text in (extra or {}).items():
            if v in stats:
                ax.axhline(stats[v][0], linestyle="--", color="gray")
                ax.annotate(text, (0.02, stats[v][0]), xycoords=("axes fraction", "data"), fontsize=8, color="gray")
        if log:
            ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel(xlabel)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _costs(rows, variants) -> list[str]:
    prep = {
        r["data"]: (r["prep_seconds"], r.get("prep_seconds.objects", math.nan), r.get("prep_seconds.samples", math.nan))
        for r in rows
        if isinstance(r.get("prep_seconds"), float)
    }
    lines = ["| prepared data (ABL/data/...) | total s | objects stage s | samples stage s |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {t:.1f} | {o:.1f} | {s:.1f} |" for k, (t, o, s) in prep.items()]
    step_keys = sorted({k for r in rows for k in r if k.startswith("step_ms.")})
    lines += [
        "",
        "| variant | " + " | ".join(f"ms/step {k[8:]}" for k in step_keys) + " | train s | eval s |",
        "|---|" + "---:|" * (len(step_keys) + 2),
    ]
    for v in variants:
        cells = []
        for k in step_keys + ["train_seconds", "eval_seconds"]:
            s = summarise(rows, k).get(v)
            cells.append(f"{s[0]:.0f}" if s else "–")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def write_report(acfg, jobs, out: Path, seconds: float, quick: bool) -> Path:
    rows = [_row(j) for j in jobs]
    write_results_csv(rows, out / "results.csv")
    rows = read_results_csv(out / "results.csv")  # the report is computed from the file, as a reader would
    variants = list(dict.fromkeys(j.variant.name for j in jobs))
    reference = acfg.reference
    describe = {
        j.variant.name: (
            ", ".join(j.variant.overrides)
            or f"CL3DOR: dense objects, hard negatives, λ = {j.variant.cfg.train.instruction_tuning.lam:g}"
        )
        for j in jobs
    }
    failed = [f"- {r['variant']} seed {int(r['seed'])}: {r['error']}" for r in rows if r["error"]]
    ref_cfg = jobs[0].variant.cfg
    steps = {n: s.steps for n, s in ref_cfg.train.stages if s.enabled}
    density = {
        j.variant.name: j.variant.cfg.prepare.points_per_object
        for j in jobs
        if j.variant.name == reference or j.variant.name.startswith("points_")
    }
    lambdas = {
        j.variant.name: j.variant.cfg.train.instruction_tuning.lam
        for j in jobs
        if j.variant.name == reference or j.variant.name.startswith("lambda_")
    }
    prior = {"variant": PRIOR, **{k.removeprefix("prior."): v for k, v in language_prior(jobs[0].data_dir).items()}}
    box = box_size_prior(jobs[0].data_dir)
    box_row = {"variant": BOX_PRIOR, **{k.replace("prior.box.", "encoder."): v for k, v in box.items()}}
    describe[PRIOR] = (
        "no scene: the majority training answer of the same question text, else its template (eval/prior.py)"
    )
    bar = _bar_chart(rows, variants, reference, prior, out / "ablation_bars.png")
    dens = _sweep_plot(
        rows,
        density,
        out / "ablation_density.png",
        "points per object (P)",
        extra={"sparse": "sparse (scan vertices)"},
        log=False,
    )
    lam = _sweep_plot(
        rows,
        lambdas,
        out / "ablation_lambda.png",
        "λ (odds-ratio weight)",
        extra={"no_negatives": "no negatives"},
        log=True,
    )
    diffs, verdicts = _differences(rows, reference, variants), _claims(rows, reference, variants)
    val = rows[0]
    md = [
        "# CL3DOR ablation" + (" (quick)" if quick else ""),
        "",
        f"{len(variants)} variants × {len(acfg.seeds)} seed(s) {acfg.seeds}, {acfg.scenes} synthetic rooms "
        f"(validation: {int(val.get('scanqa.n', 0))} ScanQA, {int(val.get('scan2cap.n', 0))} Scan2Cap, "
        f"{int(val.get('existence.all.n', 0))} existence questions), steps per stage {steps}, "
        f"{acfg.parallel} variants side by side; wall time "
        f"{'not recorded' if math.isnan(seconds) else f'{seconds / 60:.1f} min'}.",
        "",
        "## Mean ± std over seeds",
        "",
        *_table(rows + [prior], HEADLINE, variants + [PRIOR], describe),
        "",
        "## Differences to the full method (full − variant)",
        "",
        "Within noise: |Δ| ≤ sqrt(sd_full² + sd_variant²); for EM and F1 also at least sqrt(2p(1−p)/n), "
        "the sampling error of the n validation questions.",
        "",
        *diffs,
        "",
        "## The same differences, paired by seed",
        "",
        "Each variant minus nothing but its own change: the per-seed difference to the full method of the same "
        "seed, its mean, and within noise when |Δ| ≤ max(sd of the per-seed differences, sqrt(2p(1−p)/n)).",
        "",
        *_paired(rows, reference, variants),
        "",
        "## The claims",
        "",
        "Each verdict as measured, from the differences paired by seed on ScanQA EM, POPE "
        "adversarial F1, SQA3D EM and the validation preference accuracy (the share of hard pairs whose gold "
        "answer has the higher log-odds on rooms the model never saw), each against its own noise floor.",
        "",
        *verdicts,
        "",
        "## By question type and object size (small: longest box side < 0.5 m)",
        "",
        *_table(rows + [prior], SPLITS, variants + [PRIOR], {}),
        "",
        "## Does it read the room? The scene-swap probe",
        "",
        "Every validation question asked again about another validation room: the drop in EM, and the share "
        "of answers that changed. A model that answers from the question alone drops 0 and changes nothing.",
        "",
        *_table(rows, GROUNDING, variants, {}),
        "",
        "## The object encoder (validation objects, each run's own clouds)",
        "",
        "Category accuracy of the pretrained point encoder on the validation rooms' objects, dense or sparse as "
        "the variant prepares them (a branch shares its reference's encoder). The box-size prior classifies "
        "the same objects from their bounding box alone (eval/prior.py): where it is low, shape decides.",
        "",
        *_table(
            rows + [box_row],
            ENCODER,
            [v for v in variants if v in summarise(rows, "encoder.accuracy")] + [BOX_PRIOR],
            {},
        ),
        "",
        "## The contrastive stage while training (mean of its last three logs)",
        "",
        "How hard the negatives are: a preference accuracy near 1 means the model already ranks the gold "
        "answer above all of them, so the odds-ratio term has little left to teach.",
        "",
        *_table(rows, TRAINING, variants, {}),
        "",
        "## Plots",
        "",
        f"![per variant]({bar.name})",
        "",
        f"![density sweep]({dens.name})",
        "",
        f"![lambda sweep]({lam.name})",
        "",
        "## Cost",
        "",
        *_costs(rows, variants),
        "",
    ]
    if failed:
        md += ["## Failed runs", "", *failed, ""]
    path = out / "ablation.md"
    path.write_text("\n".join(md))
    return path
