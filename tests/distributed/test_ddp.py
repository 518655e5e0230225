"""The optimizers under DDP: replicas stay bit-identical with per-rank seeds (2 gloo ranks)."""
from __future__ import annotations

import pytest
from dist_helpers import run_ranks, skip_unless_gloo

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def ranks():
    skip_unless_gloo()
    return run_ranks("ddp_worker.py")


def test_the_ranks_really_had_different_global_seeds(ranks):
    assert [r["initial_seed"] for r in ranks] == [100, 101]


@pytest.mark.parametrize("case", ["single-tensor fixed", "multi-tensor adaptive",
                                  "two-lane adaptive EMA", "two-lane UPGD adaptive",
                                  "UPGDW fixed"])
def test_replicas_are_bit_identical_after_50_noisy_steps(ranks, case):
    for r in ranks:
        assert r[case]["max_diff"] == 0.0
        assert r[case]["global_rng_untouched"], "the noise must not advance the user's RNG"


def test_the_two_lane_cases_really_took_the_two_lane_step(ranks):
    for r in ranks:
        assert r["two-lane adaptive EMA"]["two_lane_steps"] == 50
        assert r["two-lane UPGD adaptive"]["two_lane_steps"] == 50
        assert r["multi-tensor adaptive"]["two_lane_steps"] == 0


def test_seed_and_draw_count_travel_in_the_param_groups(ranks):
    groups = [r["multi-tensor adaptive"]["groups"] for r in ranks]
    assert groups[0] == groups[1]
    assert groups[0][0]["noise_draws"] == 50
    assert isinstance(groups[0][0]["noise_seed"], int)


def test_each_optimizer_of_a_process_gets_its_own_seed(ranks):
    seeds = [ranks[0][case]["groups"][0]["noise_seed"] for case in
             ("single-tensor fixed", "multi-tensor adaptive", "two-lane adaptive EMA")]
    assert len(set(seeds)) == 3


def test_off_switch_lets_the_replicas_drift(ranks):
    for r in ranks:
        assert r["off switch"]["max_diff"] > 0.0
        assert not r["off switch"]["global_rng_untouched"]  # drawn from the user's RNG, as before
        assert r["off switch"]["groups"] == [{}]  # nothing added to the state


def test_a_resumed_optimizer_continues_the_same_streams(ranks):
    for r in ranks:
        assert r["saved_groups"][0]["noise_draws"] == 3
        assert r["resume_diff"] == 0.0
