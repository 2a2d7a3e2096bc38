"""An object's point cloud as the model reads it: a fixed, evenly spaced subset of its points.

The prepared folder keeps P points per object in random order (data/prepare.py); the model reads
`model.num_points` of them. Both the data side (data/prepared.py thins once on load) and the model
side (model/batch.py, for uploaded clouds of any size) use these two functions.
"""

from __future__ import annotations

import numpy as np


def even_subset(n: int, num_points: int) -> np.ndarray:
    """Indices of an evenly spaced fixed subset of num_points out of n (prepared points are already in
    random order, so this is a uniform sample); all n, in order, when n == num_points."""
    return np.linspace(0, n - 1, num_points).round().astype(int)


def cloud_array(obj: dict, num_points: int) -> np.ndarray:
    """(num_points, 6) xyz + rgb of an object row. Prepared rows come thinned already (data/prepared.py);
    an uploaded cloud of any size is thinned here."""
    pts = np.asarray(obj["points"], dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(obj["colors"], dtype=np.float32).reshape(-1, 3)
    if len(pts) != num_points:
        idx = even_subset(len(pts), num_points)
        pts, rgb = pts[idx], rgb[idx]
    return np.concatenate([pts, rgb], axis=1)
