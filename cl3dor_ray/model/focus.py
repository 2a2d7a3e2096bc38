"""Where each focus object is: geometry features, and the same geometry in the LM's own words.

Both read the focus objects' boxes in focus order and in the batch's frame: the agent's for a situated
question (the agent at the origin facing +x, its left +y), the view's for the others (model.view_heading_deg).

Why words (issue 22): a where token made only of `focus_geometry_features` through an MLP left the
tiny LM at its prior on "which way should I turn?" (EM 0.47, 0.61 on its own training questions after
2,000 steps): it had to learn that one direction of a learned vector means the word "left". Colour
had the same problem until the object tokens carried the classifier's colour as the LM's word
embedding (model.object_words); then reading it is a copy. `WhereWords` does that for geometry: each
focus object's relation to its reference (left, right, front, behind, above, below, near, far) as
those words' embeddings, weighted by a sigmoid of the geometry with a learned slope and offset per
word: mixed, for a pretrained LM, or each pair of opposites as the difference of its two words
(`where_axes`), for one built from config (model.where_tokens). A situated question
reads every focus object against its agent ("which way should I turn to face the door?", "how many
chairs are in front of me?"). Any other question reads its first focus object against the second
(the subject against the object it is asked about: "is the cup above or below the lamp?"), and every
other focus object against the first.
"""

from __future__ import annotations

import torch
from torch import nn

FOCUS_GEOMETRY = 15  # focus_geometry_features per focus object
WHERE_WORDS = ("left", "right", "front", "behind", "above", "below", "near", "far")  # opposites in pairs (where_axes)


def focus_geometry_features(centers: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) boxes of the focus objects -> (B, N, 15): each object's centre and size; its offset from
    the first focus object, their horizontal distance, and how far its bottom is above the first one's top
    and its top below the first one's bottom; its bearing from the origin (cosine, sine) and horizontal
    range. "Which way to turn", "is it in front", "above or below", "which side", "near or far" are each a
    simple function of a few of these."""
    c, s = centers.float(), sizes.float()
    first_c, first_s = c[:, :1], s[:, :1]
    offset = c - first_c
    above = (c[..., 2:] - s[..., 2:] / 2) - (first_c[..., 2:] + first_s[..., 2:] / 2)
    below = (first_c[..., 2:] - first_s[..., 2:] / 2) - (c[..., 2:] + s[..., 2:] / 2)
    reach = c[..., :2].norm(dim=-1, keepdim=True)
    bearing = c[..., :2] / reach.clamp_min(1e-6)  # (cos, sin) of the direction from the origin
    return torch.cat([c, s, offset, offset[..., :2].norm(dim=-1, keepdim=True), above, below, bearing, reach], -1)


def relation_to_reference(
    centers: torch.Tensor, count: torch.Tensor, situated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, 3) focus-object centres, (B,) how many are used and (B,) whether the origin is an agent ->
    (B, N, 8), one signed figure per word of WHERE_WORDS, positive where the word holds: each object's
    offset from its reference (the module docstring) as its side (+left), its ahead-ness (cosine of its
    direction), its height and its horizontal distance; and (B, N) whether the object has a reference (a
    lone focus object of a question without an agent has none: the view's origin is no place)."""
    # A situated question reads every focus object from the agent: "which way should I turn to face the
    # door?" must not read the door against a second object the head added.
    c = centers.float()
    pair = count >= 2
    second = c[:, 1:2] if c.shape[1] > 1 else torch.zeros_like(c[:, :1])
    reference = torch.cat([second, c[:, :1].expand_as(c[:, 1:])], dim=1)
    reference = torch.where(situated[:, None, None], torch.zeros_like(c), reference)  # the agent, at the origin
    d = c - reference
    dist = d[..., :2].norm(dim=-1).clamp_min(1e-6)
    side, ahead, up = d[..., 1] / dist, d[..., 0] / dist, d[..., 2]
    has = torch.ones(c.shape[:2], dtype=torch.bool, device=c.device)
    has[:, 0] = pair | situated
    return torch.stack([side, -side, ahead, -ahead, up, -up, -dist, dist], dim=-1), has


class WhereWords(nn.Module):
    """(B, N, 8) signed figures (relation_to_reference) -> (B, N, 8) weights of WHERE_WORDS in (0, 1):
    sigmoid(slope * figure + offset), slope and offset learned per word. They start at plain readings:
    a side for any sideways offset, "front" within about 45 degrees of ahead, "above" for any height,
    "near" under about 1.5 m."""

    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor([6.0, 6.0, 8.0, 8.0, 20.0, 20.0, 3.0, 3.0]))
        self.offset = nn.Parameter(torch.tensor([0.0, 0.0, -5.6, -5.6, 0.0, 0.0, 4.5, -4.5]))

    def forward(self, figures: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.slope * figures + self.offset)


def where_axes(weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, N, 8) WhereWords weights and (8, H) the LM's embeddings of WHERE_WORDS -> (B, N, H): per pair of
    opposite words (left/right, front/behind, above/below, near/far), how much more the first holds than
    the second, along the difference of their embeddings.

    Why differences (issue 22): the LM's "left" and "right" stand in the same places in every text, so
    with tied embeddings training grows what they share and leaves their difference as it was; in the
    seeds that never learned "which way to turn", their embeddings ended at cosine 0.98-0.997 (0.67-0.78
    in those that did), and a plain mixture of the two words then carried almost no side. Along the
    difference, the side is the whole token however close the two words are."""
    pairs = table.unflatten(0, (-1, 2))
    sides = weights.unflatten(-1, (-1, 2))
    return (sides[..., 0] - sides[..., 1]) @ ((pairs[:, 0] - pairs[:, 1]) / 2)
