"""The optimizers and the VGS under FSDP2 (fully_shard, DTensor parameters), 2 gloo ranks."""
from __future__ import annotations

import pytest
from dist_helpers import run_ranks, skip_unless_fully_shard

pytestmark = pytest.mark.distributed

SIGMA = 0.05
PATHS = ("instant", "instant single-tensor", "EMA")


@pytest.fixture(scope="module")
def ranks():
    skip_unless_fully_shard()
    return run_ranks("fsdp_worker.py")


@pytest.mark.parametrize("opt", ["AdaptiveUPGD", "AdaptiveUPGD single-tensor", "UPGD"])
def test_sigma_zero_equals_one_process_over_10_steps(ranks, opt):
    for r in ranks:
        assert r[f"sigma0 {opt}"] <= 1e-6


@pytest.mark.parametrize("opt", ["AdaptiveUPGD", "UPGD"])
def test_shards_keep_their_cached_step_buffers(ranks, opt):
    # Keyed by tensor identity: a fresh view of each shard every step would reallocate them.
    for r in ranks:
        assert r[f"buffers rebuilt {opt}"] == 0


@pytest.mark.parametrize("path", PATHS)
def test_the_ratio_is_of_whole_tensors_the_same_on_every_rank(ranks, path):
    assert ranks[0][f"{path} c=1.0"] == ranks[1][f"{path} c=1.0"]


@pytest.mark.parametrize("path", ["instant", "instant single-tensor"])
def test_noise_to_update_ratio_is_sigma_within_5_percent(ranks, path):
    assert abs(ranks[0][f"{path} c=1.0"] / SIGMA - 1.0) < 0.05


def test_the_ema_path_keeps_the_level_of_one_process(ranks):
    # The EMA lags rms(x) while Adam's direction settles, in one process as under FSDP2.
    assert abs(ranks[0]["EMA c=1.0"] / ranks[0]["EMA one process"] - 1.0) < 0.03


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("c", [0.5, 0.1])
def test_no_amplification_under_gradient_scaling(ranks, path, c):
    amplification = ranks[0][f"{path} c={c}"] / ranks[0][f"{path} c=1.0"]
    assert abs(amplification - 1.0) <= 0.03


@pytest.mark.parametrize("opt", ["AdaptiveUPGD", "UPGD"])
def test_fixed_noise_has_its_std_over_whole_tensors(ranks, opt):
    key = f"fixed {opt} noise rms / sigma"
    assert ranks[0][key] == ranks[1][key]
    assert abs(ranks[0][key] - 1.0) < 0.05


@pytest.mark.parametrize("path", ["instant", "EMA"])
def test_shards_100x_apart_in_size_get_one_per_element_std(ranks, path):
    # The small shard's gradient is 100x larger: a shard-local rms would miss by ~10x.
    for r in ranks:
        assert abs(r[f"{path} std / expected"] - 1.0) < 0.03


def test_the_noise_scale_ema_is_the_whole_tensors(ranks):
    for r in ranks:
        assert abs(r["EMA state / expected"] - 1.0) < 1e-5


def test_vgs_factor_is_one_value_on_every_rank_and_that_of_one_process(ranks):
    for r in ranks:
        assert r["vgs rank spread"] == 0.0
        assert 0.0 < r["vgs sharded"] < 0.99  # a real factor, not a clamp
        assert abs(r["vgs sharded"] - r["vgs reference"]) <= 1e-6
        assert r["vgs ema rel diff"] < 1e-6


def test_hsdp_replicas_draw_the_same_noise(ranks):
    for r in ranks:
        assert r["hsdp replica diff"] == 0.0
        assert abs(r["hsdp ratio"] / SIGMA - 1.0) < 0.05


def test_a_monitor_on_hsdp_counts_each_replica_once(ranks):
    logged = ranks[0]["hsdp monitor"]
    assert len(logged) == 10 and logged == ranks[1]["hsdp monitor"]
    for key, expected in ranks[0]["hsdp recorder"].items():  # twice counted: noise_rms x1.41
        assert [m[key] for m in logged] == pytest.approx(expected, rel=1e-5)
    assert all(0.27 <= m["gate_mean"] <= 0.73 for m in logged)  # twice counted: about 1


def test_get_and_set_state_dict_keep_the_noise_streams(ranks):
    # What DCP saves: param groups flattened per parameter, the seed and draw count included.
    for r in ranks:
        assert r["flat noise keys"] == ["noise_draws", "noise_seed"]
        assert r["resumed draws"] == 2
        assert r["resumed diff"] == 0.0  # the resumed run took the very same 3 noisy steps


MONITOR_PATHS = (*PATHS, "fixed")


@pytest.mark.parametrize("path", MONITOR_PATHS)
def test_a_monitor_reports_whole_tensors_the_same_on_every_rank(ranks, path):
    for run in ("recorded", "alone"):
        logged = [r[f"monitor {path} {run}"] for r in ranks]
        assert len(logged[0]) == 4 and logged[0] == logged[1]


@pytest.mark.parametrize("path", MONITOR_PATHS)
def test_a_monitor_logs_what_the_recorder_measures(ranks, path):
    # (the run without the recorder is another optimizer: other noise streams)
    for key, expected in ranks[0][f"recorder {path}"].items():
        got = [m[key] for m in ranks[0][f"monitor {path} recorded"]]
        assert got == pytest.approx(expected, rel=1e-5)


def test_every_rank_watches_and_rank_0_writes(ranks):
    written, latest = ranks[0]["watch written"], ranks[1]["watch latest"]
    assert ranks[1]["watch written"] == [] and ranks[0]["watch latest"] == latest
    assert [step for _, _, step in written] == [1] * 4 + [3] * 4
    assert {tag: value for tag, value, step in written if step == 3} == latest


@pytest.mark.parametrize("path", ["instant", "instant single-tensor"])
def test_a_monitor_shows_sigma_under_fsdp2(ranks, path):
    for m in ranks[0][f"monitor {path} alone"]:
        assert m["noise_to_update_ratio"] == pytest.approx(SIGMA, rel=0.05)
        assert 0.27 <= m["gate_mean"] <= 0.73
