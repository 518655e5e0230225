"""--calibrate-from end to end: a checkpoint with known moments -> the sigma written to the config.

The written relative sigma must reproduce the checkpoint's absolute noise level within 2% when
the real AdaptiveUPGD runs with it (tests/optim/test_calibrate.py covers the math itself).
"""
from __future__ import annotations

import copy
import re

import pytest
import torch

from conftest import REPO
from upgd_migrate.cli import main
from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder

FIXTURES = REPO / "fixtures" / "optim"
CONFIG = "optimizer: AdaptiveUPGD\noptimizer_kwargs:\n  sigma: 0.001\n  adaptive_noise: true\n"
B1, B2, STEP = 0.9, 0.999, 50


def known_moments_state(rms: float) -> dict:
    """Two tensors whose bias-corrected Adam direction is +-``rms`` everywhere, sigma 0.001."""
    state = {}
    for pid, numel in enumerate((48, 6)):
        v_hat = torch.full((numel,), 4e-4)
        d = torch.tensor([rms, -rms]).repeat(numel // 2)
        state[pid] = {"step": STEP, "avg_utility": torch.zeros(numel),
                      "first_moment": d * (v_hat.sqrt() + 1e-8) * (1 - B1**STEP),
                      "sec_moment": v_hat * (1 - B2**STEP)}
    group = {"lr": 1e-4, "weight_decay": 0.0, "beta_utility": 0.999, "sigma": 0.001,
             "beta1": B1, "beta2": B2, "eps": 1e-8, "adaptive_noise": False,
             "noise_beta": 0.999, "min_noise_std": 1e-6, "params": [0, 1]}
    return {"state": state, "param_groups": [group]}


def first_step_noise(saved: dict, **group_settings) -> float:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros_like(e["avg_utility"]))
              for e in saved["state"].values()]
    opt = AdaptiveUPGD(params)
    opt.load_state_dict(copy.deepcopy(saved))
    for group in opt.param_groups:
        group.update(group_settings)
    with NoiseRecorder(opt) as recorder:
        for p in params:  # the expected gradient keeps the moments, so d stays where it was
            p.grad = opt.state[p]["first_moment"] / (1 - B1 ** opt.state[p]["step"])
        opt.step()
    return recorder.first_step_noise_rms()


def written_sigma(path) -> float:
    return float(re.search(r"sigma: (\S+)", path.read_text()).group(1))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


def test_calibrated_sigma_reproduces_the_absolute_noise_level(tmp_path, config, capsys):
    saved = known_moments_state(0.04)
    torch.save({"model": {}, "optimizer": saved, "epoch": 3}, tmp_path / "run.pt")
    assert main(["config", "--calibrate-from", str(tmp_path / "run.pt"), str(config)]) == 1
    assert written_sigma(config) == 0.025  # 0.001 absolute / direction rms 0.04
    assert f"{config}:3: adaptive-noise: sigma 0.001 (absolute) -> 0.025 (relative; calibrated " \
           f"from {tmp_path / 'run.pt'}: absolute sigma 0.001 / Adam direction rms 0.04)" \
        in capsys.readouterr().err  # the path as given
    absolute = first_step_noise(saved)
    relative = first_step_noise(saved, sigma=written_sigma(config), adaptive_noise=True)
    assert relative == pytest.approx(absolute, rel=0.02)


def test_legacy_fixture_calibration_within_2_percent(tmp_path, config):
    saved = torch.load(FIXTURES / "adaptive_upgd_g1.pt", weights_only=True)
    torch.save({"optimizer_states": [saved], "state_dict": {}}, tmp_path / "lightning.ckpt")
    assert main(["config", "--calibrate-from", str(tmp_path / "lightning.ckpt"), str(config)]) == 1
    absolute = first_step_noise(saved)
    relative = first_step_noise(saved, sigma=written_sigma(config), adaptive_noise=True)
    assert relative == pytest.approx(absolute, rel=0.02)


def test_raw_state_dict_and_training_dict_keys(tmp_path, config):
    saved = known_moments_state(0.05)
    for key in (None, "optimizer_state_dict", "optimizer_state"):
        path = tmp_path / f"{key}.pt"
        torch.save(saved if key is None else {key: saved}, path)
        config.write_text(CONFIG)
        assert main(["config", "--calibrate-from", str(path), str(config)]) == 1
        assert written_sigma(config) == 0.02


def test_upgd_config_is_not_given_an_adam_calibration(tmp_path, config, capsys):
    torch.save(known_moments_state(0.04), tmp_path / "run.pt")
    config.write_text("optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.001\n")
    assert main(["config", "--calibrate-from", str(tmp_path / "run.pt"), str(config)]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{config}:3: adaptive-noise: not migrated: UPGD adds noise to the raw gradient: a ratio "
        f"calibrated from {tmp_path / 'run.pt'}: absolute sigma 0.001 / Adam direction rms 0.04 "
        "does not apply; pass --sigma-ratio")


class Opaque:
    pass


def _bad_checkpoints(tmp_path) -> list[tuple[str, str]]:
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "model.pt")
    torch.save({"optimizer": known_moments_state(0.04), "extra": Opaque()}, tmp_path / "unsafe.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    return [
        ("model.pt", f"error: no optimizer state found in {tmp_path / 'model.pt'} (a torch file)"),
        ("unsafe.pt", f"error: refusing to load checkpoint {tmp_path / 'unsafe.pt'}: it needs "
                      "arbitrary "
                      "unpickling (globals test_calibration_source.Opaque); only weights_only "
                      "checkpoints are read"),
        ("junk.pt", f"error: {tmp_path / 'junk.pt'}: not a readable torch checkpoint"),
        (str(FIXTURES / "upgd.pt"), f"error: cannot calibrate from {FIXTURES / 'upgd.pt'}: "
                                    "param group 0 has no saved Adam moments to calibrate from"),
    ]


def test_unusable_checkpoints_are_one_line_errors(tmp_path, config, capsys):
    for name, message in _bad_checkpoints(tmp_path):
        assert main(["config", "--calibrate-from", str(tmp_path / name), str(config)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, err
    assert config.read_text() == CONFIG


def test_stable_baselines3_zip_is_read_through_the_shared_loader(config, capsys):
    """The checkpoint package's loader: every container it reads calibrates configs too."""
    zip_path = REPO / "fixtures" / "containers" / "ppo.zip"
    assert main(["config", "--calibrate-from", str(zip_path), str(config)]) == 1
    assert f"calibrated from {zip_path}:" in capsys.readouterr().err
    assert 0 < written_sigma(config) != 0.001


def test_a_migrated_checkpoint_gives_its_relative_sigma(tmp_path, config, capsys):
    """Where a user settles the config from: the ratio the run already uses, as is."""
    current = AdaptiveUPGD([torch.nn.Parameter(torch.ones(3))], sigma=0.0123456,
                           adaptive_noise=True)
    torch.save(current.state_dict(), tmp_path / "current.pt")
    assert main(["config", "--calibrate-from", str(tmp_path / "current.pt"), str(config)]) == 1
    assert written_sigma(config) == 0.0123  # 3 significant digits, as calibration writes
    assert f"(relative; the relative sigma of {tmp_path / 'current.pt'}, param group 0)" \
        in capsys.readouterr().err
    assert "set 0.0123" in config.read_text()


# Calibrated ratios of every fixture state `--calibrate-from` accepts (group 0), as quoted in
# docs/lint.md ("Plausible sigma ranges"): all below the plausible relative range.
CALIBRATED = {"containers/lightning.ckpt": 0.0046, "containers/pbt.pt": 0.00408,
              "containers/ppo.zip": 0.00461, "containers/training_loop.pt": 0.00405,
              "optim/adaptive_upgd_g0.pt": 0.0046, "optim/adaptive_upgd_g1.pt": 0.00405,
              "optim/adaptive_upgd_g1_ema.pt": 0.00461, "optim/adaptive_upgd_g2.pt": 0.00427,
              "optim/adaptive_upgd_g2_two_groups.pt": 0.00408, "optim/upgdw.pt": 0.00448}


def test_every_fixture_calibrates_below_the_range_and_the_result_lints_clean(tmp_path, capsys):
    """The measured figures behind the plausible range: what --calibrate-from writes from each
    fixture checkpoint is a ratio lint would report as UPG101 if hand-written, and is trusted
    because the marker records it. The legacy absolute values of real configs (0.0005-0.005)
    overlap these ratios, so no lower bound could tell them apart; the marker does."""
    from upgd_migrate.legacy import RELATIVE_SIGMA_RANGE

    found = sorted(p.relative_to(REPO / "fixtures").as_posix()
                   for p in (REPO / "fixtures").rglob("*") if p.suffix in (".pt", ".ckpt", ".zip"))
    uncalibratable = {"optim/upgd.pt", "containers/sac.zip"}  # UPGD: no Adam moments saved
    assert sorted(CALIBRATED) == sorted(set(found) - uncalibratable - {
        p for p in found if p.startswith("vgs/")})
    config = tmp_path / "c.yaml"
    for name, ratio in CALIBRATED.items():
        config.write_text(CONFIG)
        assert main(["config", "--calibrate-from", str(REPO / "fixtures" / name),
                     str(config)]) == 1, name
        assert written_sigma(config) == ratio < RELATIVE_SIGMA_RANGE[0], name
        assert f"set {ratio:g}" in config.read_text()
        assert main(["lint", str(config)]) == 0, capsys.readouterr()
        capsys.readouterr()
