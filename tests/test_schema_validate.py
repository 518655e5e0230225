"""schema: the public models validate with lint's rules, in a user's own pydantic model too."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pydantic
import pytest
from pydantic import BaseModel

from conftest import CONFIGS, REPO
from upgd_migrate.config.lint import lint_file
from upgd_migrate.findings import Severity
from upgd_migrate.legacy import OPTIMIZERS, UPGD_TYPES
from upgd_migrate.schema import (AdaptiveUPGDKwargs, OptimizerConfig, UPGDConfigWarning,
                                 UPGDKwargs, UPGDWKwargs, VGSConfig, validate)

sys.path.insert(0, str(REPO / "tests" / "config"))  # the corpus of the lint agreement test
from test_plain import CORPUS, plain_documents  # noqa: E402

GOLDEN = REPO / "tests" / "config" / "golden" / "config"
TEXT_CODES = {"UPG001", "UPG002", "UPG003", "UPG004", "UPG304", "UPG305"}
KWARGS = {"UPGD": UPGDKwargs, "AdaptiveUPGD": AdaptiveUPGDKwargs, "UPGDW": UPGDWKwargs}


class Model(BaseModel):
    optimizer_kwargs: AdaptiveUPGDKwargs


def kwargs_of(path) -> dict:
    return plain_documents(path.read_text())[0]["model"]["optimizer_kwargs"]


def outcome(model: type[BaseModel], data: dict) -> tuple[set, set]:
    """(codes in the ValidationError, codes warned) of validating ``data``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.model_validate(data)
            errors: set = set()
        except pydantic.ValidationError as e:
            errors = {error["type"] for error in e.errors()}
    return errors, {w.message.finding.code for w in caught if w.category is UPGDConfigWarning}


def lint_codes(text: str, severity: Severity) -> set:
    from upgd_migrate.config.lint import lint_text

    return {f.code for f in lint_text("x.yaml", text)
            if f.severity is severity and f.code not in TEXT_CODES}


LAYOUT_A = {name: text for name, text in CORPUS.items()
            if isinstance(docs := plain_documents(text), list) and len(docs) == 1
            and isinstance(docs[0], dict) and isinstance(docs[0].get("model"), dict)
            and "upgd-migrate:" not in text}  # a dict has no comments to suppress with


def test_the_layout_a_corpus_is_not_empty():
    assert len(LAYOUT_A) >= 20


@pytest.mark.parametrize("name", sorted(LAYOUT_A))
def test_optimizer_config_raises_and_warns_what_lint_reports(name):
    text = LAYOUT_A[name]
    errors, warned = outcome(OptimizerConfig, plain_documents(text)[0])
    assert errors == lint_codes(text, Severity.ERROR)
    if not errors:  # warnings come once the config is valid
        assert warned == lint_codes(text, Severity.WARNING)


def test_a_legacy_config_fails_in_the_users_model_with_lints_code_place_and_message():
    legacy = CONFIGS / "real-legacy-layout-a.yaml"
    with pytest.raises(pydantic.ValidationError) as e:
        Model.model_validate({"optimizer_kwargs": kwargs_of(legacy)})
    [error] = e.value.errors()
    [upg101] = [f for f in lint_file(str(legacy)) if f.code == "UPG101"]
    assert (error["type"], error["loc"], error["msg"]) == \
        ("UPG101", ("optimizer_kwargs", "sigma"), upg101.message)
    assert str(e.value).splitlines()[:2] == ["1 validation error for Model",
                                             "optimizer_kwargs.sigma"]


def test_the_migrated_config_loads_in_the_users_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Model.model_validate({"optimizer_kwargs": kwargs_of(GOLDEN / "layout-a.out.yaml")})
    assert (model.optimizer_kwargs.sigma, model.optimizer_kwargs.adaptive_noise) == (0.05, True)


def test_every_error_is_reported_at_once_with_its_code():
    with pytest.raises(pydantic.ValidationError) as e:
        OptimizerConfig.model_validate({"model": {"optimizer_class": "UPGDW", "optimizer_kwargs": {
            "adaptive_noise": True, "betas": [0.9, 1.5], "sigmma": 0.1}}})
    assert [(error["type"], error["loc"]) for error in e.value.errors()] == [
        ("UPG201", ("model", "optimizer_kwargs", "adaptive_noise")),
        ("UPG302", ("model", "optimizer_kwargs", "betas", 1)),
        ("UPG202", ("model", "optimizer_kwargs", "sigmma"))]


def test_warnings_are_one_documented_category_and_can_be_made_fatal():
    with pytest.warns(UPGDConfigWarning) as caught:
        vgs = VGSConfig.model_validate({"alpha": 0.2, "accumulation_steps": 4})
    assert vgs.model_dump()["alpha"] == 0.2 and "accumulation_steps" not in vgs.model_dump()
    [warning] = caught
    assert issubclass(UPGDConfigWarning, UserWarning)
    assert str(warning.message).startswith("accumulation_steps: UPG203 'accumulation_steps' is "
                                           "not a VGS parameter")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UPGDConfigWarning)
        with pytest.raises(UPGDConfigWarning):
            UPGDKwargs.model_validate({"sigma": 0.7, "adaptive_noise": True})


def test_minus_w_error_gates_a_warning_in_a_fresh_interpreter():
    # `python -W` resolves categories before site-packages are importable, so on the command
    # line the gate is UserWarning (ours is one); in code and in pytest, the class itself.
    code = ("from upgd_migrate.schema import UPGDKwargs\n"
            "UPGDKwargs.model_validate({'sigma': 0.05})\n")  # UPG102: a ratio read as absolute
    run = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == (
        "upgd_migrate.schema.UPGDConfigWarning: sigma: UPG102 sigma 0.05 with adaptive_noise off "
        "is above the plausible absolute range for UPGD (up to 0.01): a relative ratio read as "
        "an absolute noise std")


def test_validate_returns_lints_findings_for_a_dict():
    findings = validate({"optimizer": "AdaptiveUPGD", "optimizer_kwargs": {"adaptive_noise": True},
                         "vgs": {"enabled": True}})
    assert [(f.code, f.loc, f.line) for f in findings] == [
        ("UPG101", ("optimizer_kwargs", "adaptive_noise"), 0)]


def test_a_model_instance_and_json_pass_through():
    model = AdaptiveUPGDKwargs(sigma=0.05, adaptive_noise=True)
    assert Model(optimizer_kwargs=model).optimizer_kwargs is model
    assert UPGDWKwargs.model_validate_json('{"betas": [0.9, 0.99]}').betas == (0.9, 0.99)
    with pytest.raises(pydantic.ValidationError, match="UPG101"):
        AdaptiveUPGDKwargs(adaptive_noise=True)


VALID = {
    "UPGD": [{}, {"sigma": 0.05, "adaptive_noise": True, "noise_beta": 0.9,
                  "instant_noise_scale": False, "min_noise_std": 0.0}],
    "AdaptiveUPGD": [{}, {"lr": 3e-4, "sigma": 0.1, "adaptive_noise": True, "beta1": 0.8,
                          "beta2": 0.99, "eps": 1e-6, "beta_utility": 0.9}],
    "UPGDW": [{}, {"lr": 1e-3, "betas": [0.8, 0.99], "sigma": 0.002, "amsgrad": False}],
}


@pytest.mark.parametrize("optimizer,data", [(o, d) for o in VALID for d in VALID[o]])
def test_the_optimizer_accepts_the_validated_model(optimizer, data):
    torch = pytest.importorskip("torch")
    from upgd_migrate import optim

    model = KWARGS[optimizer].model_validate(data)
    assert set(model.model_dump()) == set(OPTIMIZERS[optimizer])
    param = torch.nn.Parameter(torch.ones(3))
    opt = getattr(optim, optimizer)([param], **model.model_dump())
    param.grad = torch.ones(3)
    opt.step()
    assert {k: opt.param_groups[0][k] for k in data} == model.model_dump(include=set(data)) | \
        ({"betas": tuple(data["betas"])} if "betas" in data else {})


def test_the_vgs_accepts_the_validated_model():
    torch = pytest.importorskip("torch")
    from upgd_migrate.optim import VarianceGradientScaler

    settings = VGSConfig.model_validate({"alpha": 0.2, "warmup_steps": 0, "variance_cap": None})
    VarianceGradientScaler([torch.nn.Parameter(torch.ones(2))], **settings.model_dump())


def test_every_upgd_type_has_a_public_model():
    assert set(KWARGS) == set(UPGD_TYPES)
    assert [m.__name__ for m in KWARGS.values()] == ["UPGDKwargs", "AdaptiveUPGDKwargs",
                                                     "UPGDWKwargs"]


VGS_CODES = {"UPG103", "UPG104", "UPG105"}  # need the VGS beside the kwargs: OptimizerConfig


def kwargs_blocks() -> list[tuple[str, str, dict, set, set]]:
    """(case, optimizer, kwargs, lint's error codes, lint's warning codes) for every block of
    the corpus, in any layout, whose optimizer is known and whose kwargs are a mapping."""
    from upgd_migrate.config.locate import locate
    from upgd_migrate.config.plain import PlainMapping, to_node
    from upgd_migrate.legacy import ALIASES

    found = []
    for name, text in CORPUS.items():
        for document in plain_documents(text):
            if not isinstance(document, dict) or "upgd-migrate:" in text:
                continue
            findings = validate(document)
            for block in locate(to_node(document)):
                optimizer = ALIASES.get(block.name[1].value) if block.name else None
                kwargs = block.kwargs[1] if block.kwargs else None
                if not isinstance(optimizer, str) or not isinstance(kwargs, PlainMapping):
                    continue
                mine = [f for f in findings if f.loc[:len(kwargs.loc)] == kwargs.loc
                        and len(f.loc) > len(kwargs.loc) and f.code not in VGS_CODES]
                data = document
                for part in kwargs.loc:
                    data = data[part]
                found.append((name, optimizer, data,
                              {f.code for f in mine if f.severity is Severity.ERROR},
                              {f.code for f in mine if f.severity is Severity.WARNING}))
    return found


BLOCKS = kwargs_blocks()


def test_blocks_of_every_layout_are_in_the_kwargs_corpus():
    names = {name for name, *_ in BLOCKS}
    assert {"fixtures/seed-layout-b.yaml", "fixtures/flat-trainer-kwargs-c.yaml",
            "golden/layout-b.in.yaml", "golden/layout-c.in.yaml"} <= names
    assert len(BLOCKS) >= 40


@pytest.mark.parametrize("case", range(len(BLOCKS)), ids=[b[0] for b in BLOCKS])
def test_kwargs_models_raise_and_warn_what_lint_reports_for_the_block(case):
    from upgd_migrate.schema import KWARGS_MODELS

    _, optimizer, data, errors, warned = BLOCKS[case]
    got_errors, got_warned = outcome(KWARGS_MODELS[optimizer], data)
    assert got_errors == errors
    if not errors:
        assert got_warned == warned
