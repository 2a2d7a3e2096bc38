"""The odds-ratio (ORPO) objective over each sample's hard negatives (1 to K of them).

    L = NLL(y+) + lambda * mean over samples with negatives of mean_k -log sigmoid( log odds(y+|x) - log odds(y-_k|x) )
    log odds(p) = log p - log(1 - p),  log p = mean per-token log-probability of the response

The mean over k runs over the sample's own negatives: a yes/no question has one, a colour question up
to K, and padding never enters it. Computed in float32 with a stable log1mexp. With no negatives or
lambda = 0 it is plain supervised fine-tuning, the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl3dor_ray.model.odds import log_odds


def odds_ratio_loss(
    chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, rejected_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per sample (B,): mean over its negatives k of -log sigmoid(log odds(chosen) - log odds(rejected_k));
    0 for a sample without negatives.

    chosen_logps (B,), rejected_logps (B, K): mean per-token log-probabilities of the responses;
    rejected_mask (B, K) bool: which rejected slots hold a negative (default: all).
    """
    if chosen_logps.dim() != 1 or rejected_logps.dim() != 2 or rejected_logps.shape[0] != chosen_logps.shape[0]:
        raise ValueError(
            f"odds_ratio_loss expects chosen_logps (B,) and rejected_logps (B, K), got "
            f"{tuple(chosen_logps.shape)} and {tuple(rejected_logps.shape)}"
        )
    if not (chosen_logps.is_floating_point() and rejected_logps.is_floating_point()):
        raise ValueError(
            f"odds_ratio_loss expects floating-point log-probabilities, got "
            f"{chosen_logps.dtype} and {rejected_logps.dtype}"
        )
    if rejected_mask is None:
        rejected_mask = torch.ones_like(rejected_logps, dtype=torch.bool)
    ratio = log_odds(chosen_logps).unsqueeze(1) - log_odds(rejected_logps)
    terms = -F.logsigmoid(ratio) * rejected_mask
    return terms.sum(1) / rejected_mask.sum(1).clamp_min(1)


def orpo_loss(
    candidate_logps: torch.Tensor, lam: float = 0.1, present: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and metrics from (B, C) mean log-probs, the gold answer in column 0 and the negatives
    after it; `present` (B, C) bool marks the slots that hold an answer (SceneBatch.cand_present)."""
    chosen, rejected = candidate_logps[:, 0].float(), candidate_logps[:, 1:].float()
    valid = torch.ones_like(rejected, dtype=torch.bool) if present is None else present[:, 1:].bool()
    nll = -chosen.mean()
    metrics = {"nll": nll.item(), "logps/chosen": chosen.mean().item()}
    has = valid.any(1)
    if not has.any() or lam == 0:
        metrics.update({"loss": nll.item()})
        if has.any():
            metrics.update(_preference_metrics(chosen, rejected, valid))
        return nll, metrics
    or_loss = odds_ratio_loss(chosen, rejected, valid)[has].mean()
    loss = nll + lam * or_loss
    metrics.update({"loss": loss.item(), "or_loss": or_loss.item(), **_preference_metrics(chosen, rejected, valid)})
    return loss, metrics


@torch.no_grad()
def _preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Over the real (gold, negative) pairs: the mean log-odds ratio, the negatives' mean log-probability,
    and the share of pairs the model ranks right."""
    ratio = log_odds(chosen).unsqueeze(1) - log_odds(rejected)
    return {
        "log_odds": ratio[valid].mean().item(),
        "logps/rejected": rejected[valid].mean().item(),
        "pref_accuracy": (chosen.unsqueeze(1) > rejected)[valid].float().mean().item(),
        "negatives_per_sample": valid.sum(1).float().mean().item(),
    }
