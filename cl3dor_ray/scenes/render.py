"""Sparse beside dense: a PNG that shows what densification does to one object or a whole scene."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cl3dor_ray.scenes.densify import ObjectCloud  # noqa: E402


def _panel(ax, clouds: list[ObjectCloud], title: str, marker_size: float):
    pts = np.concatenate([c.points for c in clouds])
    rgb = np.concatenate([c.colors for c in clouds]) / 255.0
    # duplicates (sparse sampling with replacement) hide behind each other: show what is really there
    pts, keep = np.unique(pts, axis=0, return_index=True)
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=rgb[keep], s=marker_size, depthshade=False, linewidths=0)
    lo, hi = pts.min(0), pts.max(0)
    ax.set_box_aspect(np.maximum(hi - lo, 1e-3 * (hi - lo).max()))
    ax.set_title(f"{title}\n{len(pts):,} distinct points", fontsize=10)
    ax.view_init(elev=35, azim=-60)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])


def render_sparse_vs_dense(
    sparse: list[ObjectCloud], dense: list[ObjectCloud], path: str | Path, title: str | None = None
) -> Path:
    """Write a two-panel PNG of the same objects, sparse (left) and densified (right)."""
    if not sparse or not dense:
        raise ValueError("render_sparse_vs_dense needs at least one object in each list")
    single = len(dense) == 1
    fig = plt.figure(figsize=(12, 6), dpi=100)
    size = 4.0 if single else 0.6
    _panel(fig.add_subplot(1, 2, 1, projection="3d"), sparse, "sparse: scan vertices (LEO)", size)
    _panel(fig.add_subplot(1, 2, 2, projection="3d"), dense, "dense: sampled on the mesh surface", size)
    if title is None:
        title = f"{dense[0].scene_id} / {dense[0].label} {dense[0].object_id}" if single else dense[0].scene_id
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
