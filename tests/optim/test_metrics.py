from __future__ import annotations

import math

import pytest
import torch

from upgd_migrate.optim import NoiseRecorder, UPGD, amplification, noise_to_update_ratio, seed_metric


def test_noise_to_update_ratio_is_a_norm_ratio():
    assert noise_to_update_ratio(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])) == 0.5
    assert noise_to_update_ratio(torch.zeros(2), torch.zeros(2)) == 0.0
    assert noise_to_update_ratio(torch.ones(2), torch.zeros(2)) == math.inf


def test_amplification_and_seed_metric():
    assert amplification(0.10, 0.05) == pytest.approx(2.0)
    assert amplification(0.1, 0.0) == math.inf
    assert seed_metric(0.001, 0.5) == pytest.approx(0.002)


def test_recorder_weights_by_numel_and_splits_steps():
    big, small = torch.nn.Parameter(torch.zeros(300)), torch.nn.Parameter(torch.zeros(100))
    opt = UPGD([big, small], sigma=0.05, adaptive_noise=True)
    with NoiseRecorder(opt) as rec:
        for _ in range(3):
            big.grad, small.grad = torch.ones(300), torch.ones(100)
            opt.step()
    assert len(rec.steps) == 3 and rec.steps[0].numels == [300, 100]
    step = rec.steps[0]
    assert step.weighted_ratio() == pytest.approx((300 * step.ratios[0] + 100 * step.ratios[1]) / 400)
    assert not opt._noise_hooks  # removed on exit
    with pytest.raises(ValueError, match="no noisy step"):
        NoiseRecorder(opt).ratio()
