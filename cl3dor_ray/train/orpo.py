"""The odds-ratio (ORPO) objective over K hard negatives.

    L = NLL(y+) + lambda * mean_k -log sigmoid( log odds(y+|x) - log odds(y-_k|x) )
    log odds(p) = log p - log(1 - p),  log p = mean per-token log-probability of the response

Computed in float32 with a stable log1mexp. With K = 0 or lambda = 0 it is plain supervised
fine-tuning, the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl3dor_ray.model.odds import log_odds


def odds_ratio_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> torch.Tensor:
    """Per sample (B,): mean_k -log sigmoid(log odds(chosen) - log odds(rejected_k)).

    chosen_logps (B,), rejected_logps (B, K): mean per-token log-probabilities of the responses.
    """
    if chosen_logps.dim() != 1 or rejected_logps.dim() != 2 or rejected_logps.shape[0] != chosen_logps.shape[0]:
        raise ValueError(f"odds_ratio_loss expects chosen_logps (B,) and rejected_logps (B, K), got "
                         f"{tuple(chosen_logps.shape)} and {tuple(rejected_logps.shape)}")
    if not (chosen_logps.is_floating_point() and rejected_logps.is_floating_point()):
        raise ValueError(f"odds_ratio_loss expects floating-point log-probabilities, got "
                         f"{chosen_logps.dtype} and {rejected_logps.dtype}")
    ratio = log_odds(chosen_logps).unsqueeze(1) - log_odds(rejected_logps)
    return -F.logsigmoid(ratio).mean(dim=1)


def orpo_loss(candidate_logps: torch.Tensor, lam: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and metrics from (B, 1 + K) mean log-probs, the gold answer in column 0."""
    chosen, rejected = candidate_logps[:, 0].float(), candidate_logps[:, 1:].float()
    nll = -chosen.mean()
    metrics = {"nll": nll.item(), "logps/chosen": chosen.mean().item()}
    if rejected.shape[1] == 0 or lam == 0:
        metrics.update({"loss": nll.item()})
        if rejected.shape[1]:
            metrics.update(_preference_metrics(chosen, rejected))
        return nll, metrics
    or_loss = odds_ratio_loss(chosen, rejected).mean()
    loss = nll + lam * or_loss
    metrics.update({"loss": loss.item(), "or_loss": or_loss.item(), **_preference_metrics(chosen, rejected)})
    return loss, metrics


@torch.no_grad()
def _preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    ratio = log_odds(chosen).unsqueeze(1) - log_odds(rejected)
    return {"log_odds": ratio.mean().item(), "logps/rejected": rejected.mean().item(),
            "pref_accuracy": (chosen.unsqueeze(1) > rejected).float().mean().item()}
