"""Log-odds of a response, log p - log(1 - p): what the odds-ratio objective compares (train/orpo.py)
and what `/v1/score` reports beside the log-probability.

log p is the mean per-token log-probability of the response. It is clamped just below 0: as p -> 1
the odds diverge, and the clamp keeps value and gradient finite.
"""

from __future__ import annotations

import math

import torch

MAX_LOGP = -1e-6


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    logp = logp.float().clamp(max=MAX_LOGP)
    return logp - log1mexp(logp)
