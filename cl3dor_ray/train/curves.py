"""RUN/curves.png: losses, odds-ratio term, preference accuracy and learning rate, stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("loss", ["loss", "nll", "val_loss"]),
    ("odds-ratio term", ["or_loss"]),
    ("preference accuracy", ["pref_accuracy"]),
    ("learning rate", ["lr"]),
]


def plot_curves(metrics_path: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig, axes = plt.subplots(len(PANELS), len(stages), figsize=(4 * len(stages), 2.6 * len(PANELS)), squeeze=False)
    for col, stage in enumerate(stages):
        mine = [r for r in rows if r["stage"] == stage]
        for row, (title, keys) in enumerate(PANELS):
            ax = axes[row][col]
            for key in keys:
                points = [(r["step"], r[key]) for r in mine if key in r]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o" if key.startswith("val_") else None, markersize=3, label=key)
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(
                    0.5, 0.5, "not used in this stage", ha="center", va="center", fontsize=8, transform=ax.transAxes
                )
            ax.set_title(f"{stage}: {title}" if row == 0 else title, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
