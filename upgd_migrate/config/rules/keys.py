"""Key rules: optimizer names (UPG303), kwargs (UPG201, UPG202), VGS keys (UPG202-UPG204)."""
from __future__ import annotations

import difflib
from typing import Iterable

from upgd_migrate.legacy import (ALIASES, FLAT_VGS_PREFIX, FLAT_VGS_SWITCH, OPTIMIZERS,
                                 UNSAFE_FIXES_OPTION, VGS_IGNORED_KEYS, VGS_ONLY_IN, VGS_PARAMS,
                                 owners)
from upgd_migrate.config.locate import ConfigBlock, VgsBlock
from upgd_migrate.config.rules import Context
from upgd_migrate.config.rules.values import check_value, describe
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar

Kwargs = dict[str, tuple[Scalar, Node]]
KNOWN_NAMES = ", ".join(OPTIMIZERS)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, ignoring case, or ''."""
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def check_optimizer_name(ctx: Context, block: ConfigBlock) -> str | None:
    """The canonical optimizer the block names, or None (reported) when it is not known."""
    if block.name is None:
        return None
    key, value = block.name
    if not isinstance(value, Scalar) or value.tag != "str":
        ctx.report("UPG301", value, f"{key.text}: expected an optimizer name, got {describe(value)}")
        return None
    canonical = ALIASES.get(value.text)
    if canonical is None:
        ctx.report("UPG303", value, f"unknown optimizer {value.text!r}"
                   f"{did_you_mean(value.text, ALIASES)}; known: {KNOWN_NAMES}")
    return canonical


def check_kwargs(ctx: Context, block: ConfigBlock, optimizer: str | None) -> Kwargs:
    """Check each optimizer_kwargs entry against ``optimizer``; return the entries by name."""
    if block.kwargs is None:
        return {}
    key, node = block.kwargs
    if not isinstance(node, Mapping):
        if not (isinstance(node, Scalar) and node.tag == "null"):
            ctx.report("UPG301", node, f"{key.text}: expected a mapping, got {describe(node)}")
        return {}
    found: Kwargs = {}
    for k, v in node.items:
        if isinstance(k, Scalar):
            found[k.text] = (k, v)
            _check_kwarg(ctx, k, v, optimizer)
    return found


def _check_kwarg(ctx: Context, key: Scalar, value: Node, optimizer: str | None) -> None:
    name, takers = key.text, owners(key.text)
    if optimizer is None:
        if not takers:
            known = {k for params in OPTIMIZERS.values() for k in params}
            ctx.report("UPG202", key, f"unknown optimizer_kwargs key {name!r}"
                       f"{did_you_mean(name, known)}")
    elif name in OPTIMIZERS[optimizer]:
        check_value(ctx, name, OPTIMIZERS[optimizer][name], value, optimizer)
    elif takers:
        ctx.report("UPG201", key, f"{name!r} is not a keyword argument of {optimizer} "
                   f"(TypeError at construction); {', '.join(takers)} take it")
    else:
        ctx.report("UPG202", key, f"unknown optimizer_kwargs key {name!r} for {optimizer}"
                   f"{did_you_mean(name, OPTIMIZERS[optimizer])}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_version(ctx: Context, name: str, key: Scalar) -> None:
    since, target = VGS_ONLY_IN.get(name), ctx.options.vgs_version
    if since is not None and _version(target) < _version(since):
        ctx.report("UPG204", key, f"{key.text!r} is read only by VGS {since} and later; "
                   f"VGS {target} (--vgs-version) ignores it")


def check_vgs_shape(ctx: Context, block: ConfigBlock) -> None:
    """A ``vgs:`` that is not a mapping (``vgs: true``) configures nothing: say so."""
    entry = block.container.get("vgs")
    if entry is not None and not isinstance(entry[1], Mapping):
        if not (isinstance(entry[1], Scalar) and entry[1].tag == "null"):
            ctx.report("UPG301", entry[1], f"vgs: expected a mapping of VGS settings, got "
                       f"{describe(entry[1])}")


def check_vgs_keys(ctx: Context, vgs: VgsBlock) -> None:
    """Check each VGS setting: known and well-typed, ignored by all versions, or unknown."""
    prefix = FLAT_VGS_PREFIX if vgs.layout == "flat" else ""
    if vgs.layout == "flat" and vgs.switch is not None:
        check_value(ctx, FLAT_VGS_SWITCH, VGS_PARAMS["enabled"], vgs.switch, "VGS")
    for name, (key, value) in vgs.entries.items():
        if name in VGS_PARAMS:
            check_value(ctx, key.text, VGS_PARAMS[name], value, "VGS")
            _check_version(ctx, name, key)
        elif name in VGS_IGNORED_KEYS:
            ctx.report("UPG203", key, f"{key.text!r} is not a VGS parameter: no VGS version "
                       "reads it, so VGS silently ignores it (your own trainer may read it: "
                       f"`config` comments it out only with {UNSAFE_FIXES_OPTION})")
        else:
            known = [prefix + k for k in VGS_PARAMS]  # never suggest a key that is ignored
            ctx.report("UPG202", key, f"unknown VGS key {key.text!r}"
                       f"{did_you_mean(key.text, known)}")
