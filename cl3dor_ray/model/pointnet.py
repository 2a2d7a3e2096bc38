"""A PointNet++ (single-scale grouping) object encoder in plain torch.

Each object's points are centred and scaled to the unit sphere; xyz and rgb are the per-point
input. Two set-abstraction levels (farthest point sampling -> kNN grouping -> shared MLP ->
max-pool) and a global one turn a (P, 6) cloud into one feature vector. Normalisation is per point
(LayerNorm), never across the batch, so an object's feature does not depend on its batch mates.
"""

from __future__ import annotations

import torch
from torch import nn


def farthest_point_sample(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (B, n) of n points spread over each cloud in xyz (B, P, 3); starts at point 0."""
    b, p, _ = xyz.shape
    idx = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, p), float("inf"), device=xyz.device)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(n):
        idx[:, i] = farthest
        centroid = xyz[rows, farthest].unsqueeze(1)
        dist = torch.minimum(dist, ((xyz - centroid) ** 2).sum(-1))
        farthest = dist.argmax(-1)
    return idx


def knn_group(xyz: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, n, k) of the k nearest points of xyz (B, P, 3) to each centre (B, n, 3)."""
    return torch.cdist(centers, xyz).topk(k, dim=-1, largest=False).indices


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, P, C), idx (B, ...) -> (B, ..., C)."""
    b = x.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    def __init__(self, n_centers: int, k: int, in_dim: int, dims: list[int]):
        super().__init__()
        self.n_centers, self.k = n_centers, k
        self.mlp = _mlp([in_dim + 3] + dims)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(self.n_centers, xyz.shape[1])
        centers = _gather(xyz, farthest_point_sample(xyz, n))
        group = knn_group(xyz, centers, min(self.k, xyz.shape[1]))
        local = _gather(xyz, group) - centers.unsqueeze(2)  # relative coordinates
        grouped = torch.cat([local, _gather(feats, group)], dim=-1)
        return centers, self.mlp(grouped).max(dim=2).values


class PointNetPP(nn.Module):
    """(B, P, 6) xyz+rgb -> (B, out_dim)."""

    def __init__(
        self,
        sa1: tuple[int, int] = (128, 16),
        sa2: tuple[int, int] = (32, 16),
        widths: tuple[int, int, int] = (64, 128, 256),
    ):
        super().__init__()
        w1, w2, w3 = widths
        self.sa1 = SetAbstraction(sa1[0], sa1[1], 3, [w1 // 2, w1])
        self.sa2 = SetAbstraction(sa2[0], sa2[1], w1, [w2, w2])
        self.global_mlp = _mlp([w2 + 3, w3, w3])
        self.out_dim = w3

    @staticmethod
    def normalise(points: torch.Tensor) -> torch.Tensor:
        """Centre each cloud and scale it into the unit sphere; rgb 0..255 -> 0..1."""
        xyz, rgb = points[..., :3], points[..., 3:6] / 255.0
        xyz = xyz - xyz.mean(dim=1, keepdim=True)
        radius = xyz.norm(dim=-1).amax(dim=1, keepdim=True).clamp_min(1e-6)
        return torch.cat([xyz / radius.unsqueeze(-1), rgb], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = self.normalise(points)
        xyz, feats = self.sa1(x[..., :3], x[..., 3:])
        xyz, feats = self.sa2(xyz, feats)
        return self.global_mlp(torch.cat([xyz, feats], dim=-1)).max(dim=1).values
