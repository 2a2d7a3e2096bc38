"""Poses: quaternions, the scan's axisAlignment, and the agent's frame; and the situated instruction."""

import math

import numpy as np
import pytest

from cl3dor_ray.scenes.pose import align_pose, heading, quaternion_matrix, to_agent_frame, yaw_quaternion
from cl3dor_ray.text.sqa3d import check_pose, second_person, situated_instruction


def _turn(theta, shift):
    m = np.eye(4)
    m[:2, :2] = [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]
    m[:3, 3] = shift
    return m


def test_quaternion_is_a_rotation_and_heading_reads_it_back():
    for yaw in (-2.5, -0.3, 0.0, 1.1, 3.0):
        r = quaternion_matrix(yaw_quaternion(yaw))
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert heading([0, 0, 0, *yaw_quaternion(yaw)]) == pytest.approx(yaw)


def test_align_pose_moves_position_and_turns_heading_and_inverts():
    m = _turn(0.7, [1.0, -2.0, 0.0])
    pose = [0.5, 0.25, 0.0, *yaw_quaternion(0.2)]
    aligned = align_pose(pose, m)
    np.testing.assert_allclose(aligned[:3], (m @ [0.5, 0.25, 0.0, 1])[:3])
    assert heading(aligned) == pytest.approx(0.9)
    np.testing.assert_allclose(align_pose(aligned, np.linalg.inv(m)), pose, atol=1e-12)


def test_agent_frame_puts_the_heading_on_x_and_left_on_y():
    pose = [2.0, 1.0, 0.0, *yaw_quaternion(math.pi / 2)]  # facing +y
    centers = np.array(
        [
            [2.0, 3.0, 0.5],  # ahead
            [0.0, 1.0, 0.5],  # to its left (-x of the room)
            [3.0, 1.0, 0.5],
        ]
    )  # to its right
    sizes = np.array([[0.4, 1.0, 1.0]] * 3)
    moved, turned = to_agent_frame(centers, sizes, pose)
    np.testing.assert_allclose(moved, [[2, 0, 0.5], [0, 2, 0.5], [0, -1, 0.5]], atol=1e-6)
    np.testing.assert_allclose(turned[0], [1.0, 0.4, 1.0], atol=1e-6)  # its long side now runs along x


@pytest.mark.parametrize(
    "pose,message",
    [
        ([0, 0, 0, 0, 0, 1], "7 numbers"),
        ([0, 0, float("nan"), 0, 0, 0, 1], "finite"),
        ([0, 0, 0, 0, 0, 0, 0], "quaternion"),
    ],
)
def test_bad_poses_are_named(pose, message):
    with pytest.raises(ValueError, match=message):
        check_pose(pose)


def test_situation_and_question_in_the_second_person():
    assert (
        situated_instruction("What is on my left?", "I am sitting on the bed facing the desk.")
        == "You are sitting on the bed facing the desk. What is on your left?"
    )
    assert second_person("Can I reach it from where I'm standing?") == "Can you reach it from where you're standing?"
    assert situated_instruction("What color is the chair?") == "What color is the chair?"
    assert second_person("Is the Image of mine behind me?") == "Is the Image of yours behind you?"
