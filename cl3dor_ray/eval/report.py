"""EVAL/report.md and the tables the demo and the ablation print: EM per question type beside the
text-only prior and the swapped-room EM, SQA3D by question word, the pose probe, POPE per split."""

from __future__ import annotations

from pathlib import Path

from cl3dor_ray.eval.preference import preference_table
from cl3dor_ray.text.normalize import NORMALIZER_VERSION


def grounded_table(metrics: dict) -> list[str]:
    """ScanQA EM per question type beside the text-only prior and the EM about a swapped room, then
    existence per POPE split: the figures that say whether the model reads the room."""
    types = sorted(
        k.removeprefix("scanqa.em.")
        for k in metrics
        if k.startswith("scanqa.em.") and k.count(".") == 2 and not k.endswith("_objects")
    )
    lines = ["| question type | n | EM | text-only prior | EM, room swapped |", "|---|---:|---:|---:|---:|"]
    for t in types + ["all"]:
        key = "scanqa.em" if t == "all" else f"scanqa.em.{t}"
        prior = metrics.get("prior.scanqa.em" if t == "all" else f"prior.scanqa.em.{t}")
        swap = metrics.get("grounding.scene_swap.em" if t == "all" else f"grounding.scene_swap.em.{t}")
        n = metrics.get("scanqa.n" if t == "all" else f"scanqa.n.{t}", "")
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {t} | {n} | {fmt(metrics.get(key))} | {fmt(prior)} | {fmt(swap)} |")
    if "grounding.scene_swap.drop" in metrics:
        lines += [
            "",
            f"Scene-swap drop (EM in the true room minus EM in the swapped room): "
            f"**{metrics['grounding.scene_swap.drop']:.3f}**; answers that changed with the room: "
            f"{metrics['grounding.scene_swap.changed']:.3f}.",
        ]
    elif "scanqa.em" in metrics:  # say why the column is empty rather than leave it blank
        lines += ["", "Scene-swap probe not run: it needs at least 2 validation rooms (or it was turned off)."]
    lines += sqa_table(metrics)
    if "grounding.pose.follows" in metrics:
        per = ", ".join(
            f"{k.rsplit('.', 1)[1]} {metrics[k]:.3f}"
            for k in sorted(metrics)
            if k.startswith("grounding.pose.follows.")
        )
        lines += [
            "",
            f"Pose probe (the agent turned around; the answer the geometry then gives): "
            f"**{metrics['grounding.pose.follows']:.3f}** of {metrics['grounding.pose.n']} follow the pose"
            f" ({per}); answers that changed where the expected one did: "
            f"{metrics.get('grounding.pose.changed', float('nan')):.3f}.",
        ]
    splits = sorted({k.split(".")[1] for k in metrics if k.startswith("existence.")})
    if splits:
        lines += [
            "",
            "| existence split | n | accuracy | precision | recall | F1 | yes-ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for sp in splits:
            m = {
                k: metrics.get(f"existence.{sp}.{k}", 0)
                for k in ("n", "accuracy", "precision", "recall", "f1", "yes_ratio")
            }
            lines.append(
                f"| {sp} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['f1']:.3f} | {m['yes_ratio']:.3f} |"
            )
    return lines


def sqa_table(metrics: dict) -> list[str]:
    """SQA3D EM and EM-refined by the question's first word, beside the text-only prior."""
    if "sqa3d.em" not in metrics:
        return []
    types = sorted(k.removeprefix("sqa3d.n.") for k in metrics if k.startswith("sqa3d.n."))
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["", "| SQA3D question | n | EM | EM-refined | text-only prior |", "|:---|---:|---:|---:|---:|"]
    for t in types + ["all"]:
        suffix = "" if t == "all" else f".{t}"
        lines.append(
            f"| {t} | {metrics.get(f'sqa3d.n{suffix}', '')} | {fmt(metrics.get(f'sqa3d.em{suffix}'))} | "
            f"{fmt(metrics.get(f'sqa3d.em_refined{suffix}'))} | {fmt(metrics.get(f'prior.sqa3d.em{suffix}'))} |"
        )
    return lines


def write_report(metrics: dict, out: Path, seconds: float, n: int, failed: int) -> None:
    """EVAL/report.md: the grounded tables, the preference table, then every metric."""
    lines = [
        "# cl3dor evaluation",
        "",
        f"{n} validation samples in {seconds:.1f} s ({failed} failed); answer normaliser `{NORMALIZER_VERSION}`.",
        "",
        "## Does it read the room?",
        "",
        *grounded_table(metrics),
        "",
        "## Does it prefer the gold answer to its hard negatives?",
        "",
        "What the odds ratio optimises, on the validation rooms: the share of (gold, hard negative) pairs whose "
        "gold answer has the higher log-odds, and the mean log-odds difference.",
        "",
        *preference_table(metrics),
        "",
        "## All metrics",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in metrics.items()
        if not isinstance(v, str)
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
