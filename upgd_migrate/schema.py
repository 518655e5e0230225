"""Pydantic v2 models of optimizer and VGS configs, built from the table in :mod:`legacy`.

Built from the same table the linter reads, so the exported JSON Schema and ``lint`` cannot
drift apart. Importing this module costs pydantic's start-up, so ``lint`` never imports it;
only ``upgd-migrate schema`` (and tests) do.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from upgd_migrate.legacy import ALIASES, OPTIMIZERS, VGS_ONLY_IN, VGS_PARAMS, Param

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# strict: a quoted "1e-6" is a string, not a number, exactly as JSON Schema and lint see it.
_FORBID = ConfigDict(extra="forbid", strict=True)
# Containers hold the user's own keys (algo, n_steps, ...) beside the optimizer block.
_ALLOW = ConfigDict(extra="allow", strict=True)
_MODEL_NAMES = {"UPGD": "UPGD", "AdaptiveUPGD": "AdaptiveUPGD", "UPGDW": "UPGDW",
                "adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


def _bounded(base: Any, param: Param) -> Any:
    limits = {k: getattr(param, k) for k in ("ge", "gt", "lt", "le") if getattr(param, k) is not None}
    return Annotated[base, Field(**limits)] if limits else base


def _annotation(param: Param) -> Any:
    if param.kind == "betas":
        beta = Annotated[float, Field(ge=0.0, lt=1.0)]
        return tuple[beta, beta]
    if param.kind == "optional_float":
        return Optional[_bounded(float, param)]
    simple = {"float": float, "int": int, "bool": bool, "optional_bool": Optional[bool],
              "false": _FALSE}
    return _bounded(simple[param.kind], param)


def _must_be_false(value: bool) -> bool:
    if value:
        raise ValueError("must be false")
    return value


# Not Literal[False]: pydantic's literal check compares by equality and lets 0 and 0.0 in.
_FALSE = Annotated[bool, AfterValidator(_must_be_false), Field(json_schema_extra={"const": False})]


def _fields(params: dict[str, Param], notes: dict[str, str] | None = None) -> dict[str, Any]:
    notes = notes or {}
    return {key: (_annotation(p), Field(default=p.default, description=p.doc + notes.get(key, "")))
            for key, p in params.items()}


def _kwargs_model(optimizer: str) -> type[BaseModel]:
    name = f"{_MODEL_NAMES[optimizer]}Kwargs"
    return create_model(name, __config__=_FORBID, __doc__=f"Keyword arguments of {optimizer}.",
                        **_fields(OPTIMIZERS[optimizer]))


KWARGS_MODELS: dict[str, type[BaseModel]] = {name: _kwargs_model(name) for name in OPTIMIZERS}

_V31_KEYS = [k for k in VGS_PARAMS if k not in VGS_ONLY_IN]
VGSConfigV31 = create_model(
    "VGSConfigV31", __config__=_FORBID,
    __doc__="VGS settings read by every version from v1 to v3.1.",
    **_fields({k: VGS_PARAMS[k] for k in _V31_KEYS}))
VGSConfigV32 = create_model(
    "VGSConfigV32", __config__=_FORBID, __doc__="VGS settings of v3.2 (the current version).",
    **_fields(VGS_PARAMS, {k: f" Read only by VGS {v}." for k, v in VGS_ONLY_IN.items()}))


def _section_model(optimizer: str) -> type[BaseModel]:
    names = tuple(alias for alias, canonical in ALIASES.items() if canonical == optimizer)
    return create_model(
        f"{_MODEL_NAMES[optimizer]}Section", __config__=_ALLOW,
        __doc__=f"A config section that trains with {optimizer}.",
        optimizer_class=(Literal[names], Field(description="Optimizer to construct.")),
        optimizer_kwargs=(Optional[KWARGS_MODELS[optimizer]],
                          Field(default=None, description=f"Keyword arguments of {optimizer}.")),
        vgs=(Optional[VGSConfigV32], Field(default=None, description="Variance Gradient Scaler.")))


_SECTIONS = tuple(_section_model(name) for name in OPTIMIZERS)
OptimizerConfig = create_model(
    "OptimizerConfig", __config__=_ALLOW,
    __doc__="A training config in the layout of real configs: the optimizer and VGS under model:.",
    model=(Annotated[Union[_SECTIONS], Field(discriminator="optimizer_class")],
           Field(description="The model section holding optimizer_class, optimizer_kwargs, vgs.")))

# schemas/<name>.schema.json -> model
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "optimizer-config": OptimizerConfig,
    **{f"{name.lower()}-kwargs": model for name, model in
       zip(("upgd", "adaptive-upgd", "upgdw", "adam", "adamw", "sgd"), KWARGS_MODELS.values())},
    "vgs-v3.1": VGSConfigV31,
    "vgs-v3.2": VGSConfigV32,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}
