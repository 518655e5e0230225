"""Property test: any mix of legacy group keys migrates once, loads, and is then current."""
from __future__ import annotations

import copy

import torch
from ckpt_helpers import assert_same, assert_state_tensors_kept, optim_state
from hypothesis import given, settings
from hypothesis import strategies as st

from upgd_migrate.checkpoint.detect import FORMAT_KEY
from upgd_migrate.checkpoint.steps import Context, migrate_optimizer
from upgd_migrate.optim import AdaptiveUPGD

BASE = optim_state("adaptive_upgd_g0.pt")
LATE = {"adaptive_noise": st.booleans(), "noise_beta": st.sampled_from([0.99, 0.999]),
        "min_noise_std": st.sampled_from([0.0, 1e-6]), "instant_noise_scale": st.booleans()}


@st.composite
def legacy_groups(draw):
    extra = {k: draw(s) for k, s in LATE.items() if draw(st.booleans())}
    sigma = draw(st.sampled_from([0.0, 1e-4, 1e-3, 1e-2]))
    return {**BASE["param_groups"][0], **extra, "sigma": sigma}


@settings(max_examples=40, deadline=None)
@given(group=legacy_groups(), ratio=st.none() | st.sampled_from([0.01, 0.05]),
       instant=st.booleans())
def test_any_legacy_group_migrates_once_and_loads(group, ratio, instant):
    sd = {"state": BASE["state"], "param_groups": [group]}
    pristine = copy.deepcopy(sd)
    ctx = Context(sigma_ratio=ratio, instant_noise=instant)
    result = migrate_optimizer(sd, ctx)
    assert_same(pristine, sd)
    assert_state_tensors_kept(sd, result.state)
    new = result.state["param_groups"][0]
    assert new[FORMAT_KEY] == 1
    assert new["adaptive_noise"] is (group["sigma"] > 0 or group.get("adaptive_noise", False))
    assert not migrate_optimizer(result.state, ctx).applied
    params = [torch.nn.Parameter(torch.zeros(e["avg_utility"].shape))
              for e in BASE["state"].values()]
    opt = AdaptiveUPGD(params)
    opt.load_state_dict(copy.deepcopy(result.state))
    assert opt.param_groups[0]["sigma"] == new["sigma"]
