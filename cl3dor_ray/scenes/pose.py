"""An agent's pose in a scan, and the agent's frame that situated questions are answered in.

A pose is 7 numbers: position x, y, z and orientation as a quaternion qx, qy, qz, qw (SQA3D's
`position` and `rotation` records). The agent looks along the quaternion's image of +x; z is up, so
its left is +y in its own frame. SQA3D's poses are in the scan's sensor frame, like its mesh;
`align_pose` moves them into the axis-aligned frame of the prepared objects with the scan's
axisAlignment, as LEO does before it uses them.
"""

from __future__ import annotations

import math

import numpy as np


def quaternion_matrix(q) -> np.ndarray:
    """(qx, qy, qz, qw) -> 3x3 rotation matrix; the quaternion need not be normalised."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_quaternion(yaw: float) -> list[float]:
    """The quaternion of a heading `yaw` radians counter-clockwise from +x about the vertical axis."""
    return [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]


def heading(pose) -> float:
    """The agent's heading on the floor plane, radians counter-clockwise from +x."""
    forward = quaternion_matrix(pose[3:7])[:, 0]
    return math.atan2(forward[1], forward[0])


def align_pose(pose, matrix: np.ndarray) -> list[float]:
    """A sensor-frame pose -> the axis-aligned frame, with ScanNet's 4x4 axisAlignment matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    position = matrix[:3, :3] @ np.asarray(pose[:3], dtype=np.float64) + matrix[:3, 3]
    forward = matrix[:3, :3] @ quaternion_matrix(pose[3:7])[:, 0]
    return [*map(float, position), *yaw_quaternion(math.atan2(forward[1], forward[0]))]


def to_agent_frame(centers: np.ndarray, sizes: np.ndarray, pose) -> tuple[np.ndarray, np.ndarray]:
    """Object boxes (N, 3) in the scene frame -> the agent's frame: its position at the origin, its
    heading along +x, its left along +y. Only the heading on the floor plane is used, so up stays up;
    a box's extents become those of the turned box's axis-aligned bound."""
    yaw = heading(pose)
    c, s = math.cos(yaw), math.sin(yaw)
    inverse = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    moved = (np.asarray(centers, np.float64) - np.asarray(pose[:3], np.float64)) @ inverse.T
    turned = np.asarray(sizes, np.float64) @ np.abs(inverse).T
    return moved.astype(np.float32), turned.astype(np.float32)
