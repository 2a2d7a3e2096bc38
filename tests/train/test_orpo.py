import numpy as np
import pytest
import torch

from cl3dor_ray.model.odds import MAX_LOGP, log1mexp
from cl3dor_ray.train.orpo import odds_ratio_loss, orpo_loss


def reference(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """The formula, in float64 numpy, written out directly."""

    def lo(lp):
        lp = np.minimum(lp, MAX_LOGP)
        return lp - np.log(-np.expm1(lp))

    ratio = lo(chosen)[:, None] - lo(rejected)
    return np.mean(np.logaddexp(0.0, -ratio), axis=1)  # -log sigmoid(r) = log(1 + e^-r)


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0])
def test_matches_reference_on_random_inputs(scale):
    rng = np.random.default_rng(0)
    chosen = -np.abs(rng.normal(0, scale, 64)) - 1e-5
    rejected = -np.abs(rng.normal(0, scale, (64, 4))) - 1e-5
    got = odds_ratio_loss(torch.tensor(chosen, dtype=torch.float32), torch.tensor(rejected, dtype=torch.float32))
    assert got.shape == (64,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reference(chosen, rejected), rtol=2e-4, atol=1e-5)


def test_extreme_log_probabilities_are_finite_in_value_and_gradient():
    chosen = torch.tensor([-1e-12, -1e-7, -1e-3, -30.0, -1e4, 0.0], requires_grad=True)
    rejected = torch.tensor(
        [[-1e4, -1e-9], [-50.0, -1e-12], [-1e-12, -1e4], [-1e-9, -31.0], [-1e4, -1e4], [0.0, -1e-30]],
        requires_grad=True,
    )
    loss = odds_ratio_loss(chosen, rejected)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    clamp_free = [2, 3]  # rows where no value is above the clamp: compare with the float64 formula
    np.testing.assert_allclose(
        loss.detach().numpy()[clamp_free],
        reference(chosen.detach().double().numpy()[clamp_free], rejected.detach().double().numpy()[clamp_free]),
        rtol=1e-4,
    )
    # row 0: against P ~ 0 nothing is left to push; against another P ~ 1 both clamp to equal odds
    assert loss[0].item() == pytest.approx(np.log(2) / 2, rel=1e-4)
    assert loss[4].item() == pytest.approx(np.log(2), rel=1e-5)  # equal odds


def test_log1mexp_is_accurate_at_both_ends():
    x = torch.tensor([-1e-10, -1e-3, -0.5, -5.0, -50.0], dtype=torch.float64)
    np.testing.assert_allclose(log1mexp(x).numpy(), np.log(-np.expm1(x.numpy())), rtol=1e-12, atol=1e-20)


@pytest.mark.parametrize(
    "chosen, rejected, message",
    [
        (torch.zeros(3, 1), torch.zeros(3, 2), "chosen_logps \\(B,\\) and rejected_logps \\(B, K\\), got \\(3, 1\\)"),
        (torch.zeros(3), torch.zeros(4, 2), "got \\(3,\\) and \\(4, 2\\)"),
        (torch.zeros(3), torch.zeros(3), "got \\(3,\\) and \\(3,\\)"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3, 2), "floating-point"),
    ],
)
def test_bad_shapes_and_dtypes_are_named(chosen, rejected, message):
    with pytest.raises(ValueError, match=message):
        odds_ratio_loss(chosen, rejected)


def test_total_loss_is_nll_plus_lambda_times_or_term_and_sft_without_negatives():
    logps = torch.tensor([[-0.5, -2.0, -0.4], [-1.0, -3.0, -4.0]])
    loss, m = orpo_loss(logps, lam=0.1)
    expected_or = odds_ratio_loss(logps[:, 0], logps[:, 1:]).mean()
    assert loss.item() == pytest.approx(0.75 + 0.1 * expected_or.item(), rel=1e-6)
    assert m["nll"] == pytest.approx(0.75) and m["or_loss"] == pytest.approx(expected_or.item())
    assert m["pref_accuracy"] == pytest.approx(3 / 4)  # -0.5 < -0.4 is the one miss
    assert set(m) >= {"nll", "or_loss", "log_odds", "logps/chosen", "logps/rejected", "pref_accuracy", "loss"}
    sft_k0, _ = orpo_loss(logps[:, :1], lam=0.1)
    sft_l0, m0 = orpo_loss(logps, lam=0.0)
    assert sft_k0.item() == pytest.approx(0.75) and sft_l0.item() == pytest.approx(0.75)
    assert "or_loss" not in m0 and "pref_accuracy" in m0


def test_each_sample_averages_over_its_own_negatives_only():
    """Ragged K: padding never enters the mean, and a sample without negatives adds nothing to the term."""
    logps = torch.tensor([[-0.5, -2.0, -9.0, -9.0], [-1.0, -3.0, -0.2, -4.0], [-0.7, -9.0, -9.0, -9.0]])
    present = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    loss, m = orpo_loss(logps, lam=0.1, present=present)
    first = odds_ratio_loss(logps[:1, 0], logps[:1, 1:2])
    second = odds_ratio_loss(logps[1:2, 0], logps[1:2, 1:])
    expected_or = (first + second).item() / 2  # the third sample has no negative
    nll = -logps[:, 0].mean().item()
    assert m["or_loss"] == pytest.approx(expected_or, rel=1e-6)
    assert loss.item() == pytest.approx(nll + 0.1 * expected_or, rel=1e-6)
    assert m["pref_accuracy"] == pytest.approx(3 / 4)  # 4 real pairs; -1.0 < -0.2 is the one miss
    assert m["negatives_per_sample"] == pytest.approx(4 / 3)
    per_sample = odds_ratio_loss(logps[:, 0], logps[:, 1:], present[:, 1:])
    assert per_sample[2].item() == 0.0
    none, m0 = orpo_loss(logps, lam=0.1, present=torch.tensor([[True, False, False, False]] * 3))
    assert none.item() == pytest.approx(nll) and "or_loss" not in m0
