"""Pydantic v2 models of optimizer and VGS configs that validate with lint's own rules.

Validate a config when training starts, inside the trainer's own pydantic config::

    class TrainConfig(BaseModel):
        optimizer_kwargs: AdaptiveUPGDKwargs

A config ``lint`` reports with an error-severity code raises :class:`pydantic.ValidationError`
with one entry per finding: its ``type`` is the code (``UPG101``), its ``loc`` the field
(``optimizer_kwargs.sigma``), its ``msg`` lint's message. Warning-severity codes are emitted as
:class:`UPGDConfigWarning`, a ``UserWarning`` (``warnings.simplefilter("error",
UPGDConfigWarning)`` makes them fatal); info-severity ones only come back from :func:`validate`. The checks are lint's own
(:mod:`upgd_migrate.config.plain` feeds them the dict), never a second copy.

Built from the table in :mod:`legacy`, so the exported JSON Schema, ``lint`` and these models
cannot drift apart. Importing this module costs pydantic's start-up, so ``lint`` never does.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      create_model, model_validator)
from pydantic_core import PydanticCustomError

from upgd_migrate.config import plain
from upgd_migrate.config.rules import LintOptions
from upgd_migrate.findings import Finding, Severity
from upgd_migrate.legacy import (ALIASES, OPTIMIZERS, VGS_IGNORED_KEYS, VGS_ONLY_IN, VGS_PARAMS,
                                 Param)

__all__ = ["UPGDKwargs", "AdaptiveUPGDKwargs", "UPGDWKwargs", "VGSConfig", "VGSConfigV31",
           "OptimizerConfig", "UPGDConfigWarning", "validate", "Finding"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# strict: a quoted "1e-6" is a string, not a number, exactly as JSON Schema and lint see it.
_FORBID = ConfigDict(extra="forbid", strict=True)
# Containers hold the user's own keys (algo, n_steps, ...) beside the optimizer block.
_ALLOW = ConfigDict(extra="allow", strict=True)
_MODEL_NAMES = {"UPGD": "UPGD", "AdaptiveUPGD": "AdaptiveUPGD", "UPGDW": "UPGDW",
                "adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


class UPGDConfigWarning(UserWarning):
    """A warning-severity lint finding met while validating; ``finding`` is lint's Finding."""

    def __init__(self, finding: Finding) -> None:
        where = ".".join(str(part) for part in finding.loc) or "config"
        super().__init__(f"{where}: {finding.code} {finding.message}")
        self.finding = finding


def validate(mapping: Mapping, options: LintOptions | None = None) -> list[Finding]:
    """Lint's findings for a whole config as a mapping (any layout lint knows), all severities.

    The same :class:`Finding` objects lint produces, with ``path`` empty, ``line`` and ``col``
    0 and ``loc`` the keys leading to the value.
    """
    return plain.validate(mapping, options)


# Set while an outer model's rules have run over the whole input, so nested models do not
# report the same findings again.
_CHECKED = contextvars.ContextVar("upgd_migrate_schema_checked", default=False)


@contextlib.contextmanager
def types_only() -> Any:
    """Validate with pydantic's types and bounds alone, the layer the JSON Schema exports
    (tests compare it with lint's UPG301/UPG302)."""
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def _at(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _line_error(finding: Finding, data: Any) -> dict:
    # The message goes in through the context: a user's value may contain braces.
    return {"type": PydanticCustomError(finding.code, "{message}", {"message": finding.message}),
            "loc": finding.loc, "input": _at(data, finding.loc)}


def _apply_rules(cls: type[BaseModel], data: Any, handler: Callable,
                 check: Callable[[Mapping], list[Finding]],
                 tidy: Callable[[dict], dict] = dict) -> Any:
    """Lint ``data``: raise on errors, warn on warnings, then let pydantic build the model."""
    if not isinstance(data, Mapping):  # a model instance, or a type pydantic will refuse
        return handler(data)
    if _CHECKED.get():
        return handler(tidy(dict(data)))
    findings = check(data)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        raise ValidationError.from_exception_data(cls.__name__,
                                                  [_line_error(f, data) for f in errors])
    for finding in findings:
        if finding.severity is Severity.WARNING:
            warnings.warn(UPGDConfigWarning(finding), stacklevel=4)
    token = _CHECKED.set(True)
    try:
        return handler(tidy(dict(data)))
    finally:
        _CHECKED.reset(token)


def _bounded(base: Any, param: Param) -> Any:
    limits = {k: getattr(param, k) for k in ("ge", "gt", "lt", "le") if getattr(param, k) is not None}
    return Annotated[base, Field(**limits)] if limits else base


def _annotation(param: Param) -> Any:
    if param.kind == "betas":
        beta = Annotated[float, Field(ge=0.0, lt=1.0)]
        return tuple[beta, beta]
    if param.kind == "optional_float":
        return Optional[_bounded(float, param)]
    if param.kind == "choice":
        return Literal[param.choices]
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
    # YAML and JSON give a list where the model holds a tuple (Adam betas); lint accepts both.
    pairs = [key for key, p in OPTIMIZERS[optimizer].items() if p.kind == "betas"]

    def tidy(data: dict) -> dict:
        return {k: tuple(v) if k in pairs and isinstance(v, list) else v for k, v in data.items()}

    class Base(BaseModel):
        model_config = _FORBID

        @model_validator(mode="wrap")
        @classmethod
        def _lint_rules(cls, data: Any, handler: Callable) -> Any:
            return _apply_rules(cls, data, handler,
                                lambda d: plain.check_kwargs(optimizer, d), tidy)

    return create_model(f"{_MODEL_NAMES[optimizer]}Kwargs", __base__=Base,
                        __doc__=f"Keyword arguments of {optimizer}.",
                        **_fields(OPTIMIZERS[optimizer]))


KWARGS_MODELS: dict[str, type[BaseModel]] = {name: _kwargs_model(name) for name in OPTIMIZERS}
UPGDKwargs = KWARGS_MODELS["UPGD"]
AdaptiveUPGDKwargs = KWARGS_MODELS["AdaptiveUPGD"]
UPGDWKwargs = KWARGS_MODELS["UPGDW"]


class _VGSBase(BaseModel):
    model_config = _FORBID

    @model_validator(mode="wrap")
    @classmethod
    def _lint_rules(cls, data: Any, handler: Callable) -> Any:
        # Keys no VGS reads are a warning (UPG203), not a failure: the model drops them.
        return _apply_rules(cls, data, handler, plain.check_vgs, lambda d: {
            k: v for k, v in d.items() if k not in VGS_IGNORED_KEYS})


_V31_KEYS = [k for k in VGS_PARAMS if k not in VGS_ONLY_IN]
VGSConfigV31 = create_model(
    "VGSConfigV31", __config__=_FORBID,
    __doc__="VGS settings read by every version from v1 to v3.1.",
    **_fields({k: VGS_PARAMS[k] for k in _V31_KEYS}))
VGSConfig = create_model(
    "VGSConfig", __base__=_VGSBase, __doc__="VGS settings of v3.2 (the current version).",
    **_fields(VGS_PARAMS, {k: f" Read only by VGS {v}." for k, v in VGS_ONLY_IN.items()}))
VGSConfigV32 = VGSConfig  # the name of earlier releases


def _section_model(optimizer: str) -> type[BaseModel]:
    names = tuple(alias for alias, canonical in ALIASES.items() if canonical == optimizer)
    return create_model(
        f"{_MODEL_NAMES[optimizer]}Section", __config__=_ALLOW,
        __doc__=f"A config section that trains with {optimizer}.",
        optimizer_class=(Literal[names], Field(description="Optimizer to construct.")),
        optimizer_kwargs=(Optional[KWARGS_MODELS[optimizer]],
                          Field(default=None, description=f"Keyword arguments of {optimizer}.")),
        vgs=(Optional[VGSConfig], Field(default=None, description="Variance Gradient Scaler.")))


class _DocumentBase(BaseModel):
    model_config = _ALLOW

    @model_validator(mode="wrap")
    @classmethod
    def _lint_rules(cls, data: Any, handler: Callable) -> Any:
        # Every block lint would find in the document, VGS interactions (UPG103-105) included.
        return _apply_rules(cls, data, handler, plain.validate)


_SECTIONS = tuple(_section_model(name) for name in OPTIMIZERS)
OptimizerConfig = create_model(
    "OptimizerConfig", __base__=_DocumentBase,
    __doc__="A training config in the layout of real configs: the optimizer and VGS under model:.",
    model=(Annotated[Union[_SECTIONS], Field(discriminator="optimizer_class")],
           Field(description="The model section holding optimizer_class, optimizer_kwargs, vgs.")))

# schemas/<name>.schema.json -> model
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "optimizer-config": OptimizerConfig,
    **{f"{name.lower()}-kwargs": model for name, model in
       zip(("upgd", "adaptive-upgd", "upgdw", "adam", "adamw", "sgd"), KWARGS_MODELS.values())},
    "vgs-v3.1": VGSConfigV31,
    "vgs-v3.2": VGSConfig,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}
