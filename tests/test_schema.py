from __future__ import annotations

import json

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, run_lint
from upgd_migrate.cli import main
from upgd_migrate.legacy import OPTIMIZERS, VGS_PARAMS
from upgd_migrate.schema import (KWARGS_MODELS, SCHEMA_MODELS, VGSConfigV31, VGSConfigV32,
                                 types_only)


def test_committed_schemas_are_fresh(capsys):
    assert main(["schema", "--check", "--output-dir", str(REPO / "schemas")]) == 0
    assert capsys.readouterr().out == ""


def test_check_reports_stale_files_and_write_fixes_them(tmp_path, capsys):
    out = tmp_path / "schemas"
    assert main(["schema", "--check", "--output-dir", str(out)]) == 1
    assert main(["schema", "--output-dir", str(out)]) == 0
    assert main(["schema", "--check", "--output-dir", str(out)]) == 0
    (out / "vgs-v3.2.schema.json").write_text("{}\n")
    capsys.readouterr()
    assert main(["schema", "--check", "--output-dir", str(out)]) == 1
    assert capsys.readouterr().out == f"{out}/vgs-v3.2.schema.json: stale; run `upgd-migrate schema`\n"
    assert main(["schema", "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}/vgs-v3.2.schema.json\n"


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_every_field_is_described_and_extra_keys_forbidden(name):
    model = SCHEMA_MODELS[name]
    assert all(field.description for field in model.model_fields.values())
    schema = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
    if name != "optimizer-config":  # the document holds the user's own keys too
        assert schema["additionalProperties"] is False


def test_models_mirror_the_legacy_table():
    for optimizer, params in OPTIMIZERS.items():
        assert list(KWARGS_MODELS[optimizer].model_fields) == list(params)
    assert list(VGSConfigV32.model_fields) == list(VGS_PARAMS)
    assert set(VGSConfigV31.model_fields) == set(VGS_PARAMS) - {"min_scaling_factor",
                                                                 "variance_cap"}


def test_document_schema_discriminates_on_optimizer_class():
    document = {"model": {"algo": "ppo", "optimizer_class": "adaptive_upgd",
                          "optimizer_kwargs": {"sigma": 0.05, "adaptive_noise": True},
                          "vgs": {"enabled": True}}}
    SCHEMA_MODELS["optimizer-config"].model_validate_json(json.dumps(document))
    document["model"]["optimizer_kwargs"]["betas"] = [0.9, 0.99]
    with pytest.raises(pydantic.ValidationError):
        SCHEMA_MODELS["optimizer-config"].model_validate_json(json.dumps(document))


VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-3, 300),
    st.booleans(), st.none(), st.sampled_from(["", "yes", "0.1"]),
    st.lists(st.sampled_from([0.0, 0.5, 0.999, 1.0, -0.1, True]), max_size=3))
KEYS = st.sampled_from([(o, k) for o, params in OPTIMIZERS.items() for k in params])


@settings(max_examples=300, deadline=None)
@given(KEYS, VALUES)
def test_lint_value_rules_agree_with_the_schema(optimizer_key, value):
    optimizer, key = optimizer_key
    text = f"optimizer_class: {optimizer}\noptimizer_kwargs:\n  {key}: {json.dumps(value)}\n"
    lint_rejects = any(f.split()[1] in ("UPG301", "UPG302") for f in run_lint(text))
    try:
        with types_only():  # the exported layer alone; with the rules it is lint itself
            KWARGS_MODELS[optimizer].model_validate_json(json.dumps({key: value}))
        schema_rejects = False
    except pydantic.ValidationError:
        schema_rejects = True
    assert lint_rejects == schema_rejects


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(VGS_PARAMS)), VALUES)
def test_lint_vgs_value_rules_agree_with_the_schema(key, value):
    text = f"vgs:\n  {key}: {json.dumps(value)}\n"
    lint_rejects = any(f.split()[1] in ("UPG301", "UPG302") for f in run_lint(text))
    try:
        with types_only():
            VGSConfigV32.model_validate_json(json.dumps({key: value}))
        schema_rejects = False
    except pydantic.ValidationError:
        schema_rejects = True
    assert lint_rejects == schema_rejects
