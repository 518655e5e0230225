from __future__ import annotations

import inspect

import pytest

from upgd_migrate.legacy import (ALIASES, OPTIMIZERS, UPGD_TYPES, VGS_IGNORED_KEYS, VGS_PARAMS,
                                 ratio_caution, relative_sigma_excess)


@pytest.mark.parametrize("name,cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")])
def test_torch_optimizer_kwargs_match_torch(name, cls):
    torch_optim = pytest.importorskip("torch.optim")
    params = inspect.signature(getattr(torch_optim, cls).__init__).parameters
    expected = {k: p.default for k, p in params.items() if k not in ("self", "params")}
    assert {k: p.default for k, p in OPTIMIZERS[name].items()} == expected


def test_reference_defaults_of_upgd_types():
    package_only = {"foreach": None, "noise_sync": "auto"}  # the reference has neither
    assert {k: p.default for k, p in OPTIMIZERS["UPGDW"].items()} == {
        "lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "sigma": 0.001,
        "amsgrad": False, **package_only}
    adaptive = {k: p.default for k, p in OPTIMIZERS["AdaptiveUPGD"].items()}
    assert adaptive == {
        "lr": 1e-5, "weight_decay": 0.001, "beta_utility": 0.999, "sigma": 0.001, "beta1": 0.9,
        "beta2": 0.999, "eps": 1e-8, "adaptive_noise": False, "noise_beta": 0.999,
        "min_noise_std": 1e-6, "instant_noise_scale": True, **package_only, "update": "reference"}
    assert set(OPTIMIZERS["UPGD"]) == set(adaptive) - {"beta1", "beta2", "eps"}


@pytest.mark.parametrize("name", ["UPGD", "AdaptiveUPGD", "UPGDW"])
def test_the_table_knows_every_keyword_of_the_packaged_constructors(name):
    """A keyword the packaged optimizer takes but the table lacks would be linted as unknown."""
    import upgd_migrate.optim as optim

    signature = inspect.signature(getattr(optim, name).__init__)
    keywords = {k: v.default for k, v in signature.parameters.items()
                if k not in ("self", "params")}
    assert keywords == {k: p.default for k, p in OPTIMIZERS[name].items()}


def test_aliases_cover_every_spelling_seen():
    seen = ["AdaptiveUPGD", "adaptive_upgd", "UPGD", "upgd", "UPGDW", "upgdw", "adam", "adamw",
            "sgd"]
    assert all(ALIASES[name] in OPTIMIZERS for name in seen)
    assert set(ALIASES.values()) == set(OPTIMIZERS) and set(UPGD_TYPES) <= set(OPTIMIZERS)


def test_ignored_vgs_keys_are_not_vgs_parameters():
    assert not set(VGS_IGNORED_KEYS) & set(VGS_PARAMS)


def test_every_migration_has_a_pass_and_fixes_real_rules():
    from upgd_migrate.legacy import MIGRATED_CODES, MIGRATIONS
    from upgd_migrate.config.migrations import PASSES
    from upgd_migrate.config.rules import FIX_CONFIG, RULES

    assert list(PASSES) == [m.id for m in MIGRATIONS]  # registered in registry order
    assert MIGRATED_CODES <= set(RULES)
    assert {code for code, rule in RULES.items() if rule.fix == FIX_CONFIG} == MIGRATED_CODES
    from upgd_migrate.config.rules import FIX_CONFIG_UNSAFE
    from upgd_migrate.legacy import UNSAFE_CODES

    # only the fix that may change what the user's own trainer reads waits for --unsafe-fixes
    assert [m.id for m in MIGRATIONS if m.unsafe] == ["vgs-unread-keys"]
    assert UNSAFE_CODES == {"UPG203"} and not UNSAFE_CODES & MIGRATED_CODES
    assert {code for code, rule in RULES.items() if rule.fix == FIX_CONFIG_UNSAFE} == UNSAFE_CODES


@pytest.mark.parametrize("sigma,expected", [
    (0.05, None), (0.5, None), (1e-6, None),
    (0.7, ("warning", "above the plausible relative range 0.01-0.5: noise 70% of the update")),
    (1.0, ("warning", "above the plausible relative range 0.01-0.5: noise 100% of the update")),
    (5.0, ("error", "a noise-to-update ratio of 500%: above 1 the noise outweighs the update "
                    "(did you mean 0.05?)")),
    (50, ("error", "a noise-to-update ratio of 5000%: above 1 the noise outweighs the update "
                   "(did you mean 0.5?)")),
])
def test_relative_sigma_excess_is_one_check_for_lint_and_the_command(sigma, expected):
    assert relative_sigma_excess(sigma) == expected


def test_relative_sigma_excess_follows_the_plausible_range_below_one():
    assert relative_sigma_excess(0.7, (0.01, 0.8)) is None
    assert relative_sigma_excess(1.5, (0.01, 3.0))[0] == "error"


def test_ratio_caution_covers_both_sides_of_the_plausible_range():
    assert ratio_caution(0.05) is None
    assert ratio_caution(0.005) == ("below the plausible relative range 0.01-0.5: noise 0.5% of "
                                    "the update (written all the same; lint trusts the value "
                                    "config writes while it stays unedited)")
    assert ratio_caution(0.7) == relative_sigma_excess(0.7)[1]
