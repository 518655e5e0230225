"""The ``noise_sync`` option and the distributed helpers, in one process (no process group)."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD
from upgd_migrate.optim import _dist


@pytest.mark.parametrize("cls", [UPGD, AdaptiveUPGD, UPGDW])
def test_noise_sync_takes_auto_or_off(cls):
    p = torch.nn.Parameter(torch.zeros(3))
    assert cls([p]).noise_sync == "auto"
    assert cls([p], noise_sync="off").noise_sync == "off"
    with pytest.raises(ValueError, match="Invalid noise_sync value: sometimes"):
        cls([p], noise_sync="sometimes")


def test_one_process_keeps_its_state_layout_and_draws_from_the_global_rng():
    p = torch.nn.Parameter(torch.ones(4))
    opt = AdaptiveUPGD([p], lr=0.1, sigma=0.5)
    p.grad = torch.ones(4)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    opt.step()
    assert not torch.equal(before, torch.get_rng_state())  # the user's RNG, as always
    group = opt.state_dict()["param_groups"][0]
    assert "noise_seed" not in group and "noise_draws" not in group and "noise_sync" not in group


def test_noise_sync_survives_pickling_and_copies_but_not_the_state_dict():
    opt = AdaptiveUPGD([torch.nn.Parameter(torch.zeros(2))], noise_sync="off")
    assert pickle.loads(pickle.dumps(opt)).noise_sync == "off"
    assert copy.deepcopy(opt).noise_sync == "off"
    fresh = AdaptiveUPGD([torch.nn.Parameter(torch.zeros(2))])
    fresh.load_state_dict(opt.state_dict())
    assert fresh.noise_sync == "auto"  # how this run's ranks relate is not the saved run's


def test_stream_seeds_differ_by_every_component_and_are_stable():
    base = _dist.mix(7, 0, 1, 0, 0)
    assert base == _dist.mix(7, 0, 1, 0, 0)
    others = {_dist.mix(8, 0, 1, 0, 0), _dist.mix(7, 1, 1, 0, 0), _dist.mix(7, 0, 2, 0, 0),
              _dist.mix(7, 0, 1, 1, 0), _dist.mix(7, 0, 1, 0, 1)}
    assert base not in others and len(others) == 5
    assert all(0 <= s < 2**63 for s in others | {base})


def test_without_a_process_group_nothing_is_distributed():
    t = torch.zeros(2)
    assert _dist.world_size() == 1
    assert not _dist.any_dtensor([t])
    assert _dist.local(t) is t
    means, sqs = _dist.grad_moments([torch.tensor([1.0, 3.0])], torch.device("cpu"))
    assert means[0].item() == 2.0 and sqs[0].item() == 5.0
