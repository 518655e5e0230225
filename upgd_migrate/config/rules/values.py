"""Value rules: wrong types (UPG301), out-of-range values (UPG302), YAML 1.1 strings (UPG304)
and booleans (UPG305)."""
from __future__ import annotations

import math
import re
from typing import Iterable, Iterator

from upgd_migrate.legacy import VGS_PARAMS, Param
from upgd_migrate.config.locate import ConfigBlock
from upgd_migrate.config.rules import Context
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar, Sequence, walk

_EXPECTED = {
    "float": "a number", "int": "an integer", "bool": "true or false", "false": "false",
    "betas": "a list of two numbers", "optional_float": "a number or null",
    "optional_bool": "true, false or null", "choice": "a string",
}
_ACCEPTED_TAGS = {
    "float": ("int", "float"), "int": ("int",), "bool": ("bool",), "false": ("bool",),
    "optional_float": ("int", "float", "null"), "optional_bool": ("bool", "null"),
    "choice": ("str",),
}
# PyYAML's YAML 1.1 booleans: a plain `off` is the string 'off' to YAML 1.2, False to PyYAML.
_YAML11_BOOL = re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
                          r"|on|On|ON|off|Off|OFF")

# PyYAML's YAML 1.1 resolver patterns (yaml/resolver.py). A plain scalar that YAML 1.2 reads
# as a number but that matches neither of these reaches PyYAML-based trainers as a string.
_YAML11_FLOAT = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_YAML11_INT = re.compile(
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+")
_EXPONENT = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?([eE])([-+]?)([0-9]+)")
_SIGNED_FRACTION = re.compile(r"([-+])\.([0-9]+)")


def describe(node: Node) -> str:
    """How a value reads in a message: the string 'abc', the number 3, a mapping."""
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    if node.tag == "str":
        return f"the string {node.text!r}"
    if node.tag in ("int", "float"):
        return f"the number {node.text}"
    return "null" if node.tag == "null" else node.text


def check_value(ctx: Context, key: str, param: Param, node: Node, owner: str) -> None:
    """Report a wrong type or an out-of-range value of ``key`` (a kwarg of ``owner``)."""
    if param.kind == "betas":
        _check_betas(ctx, key, node)
        return
    if not isinstance(node, Scalar) or node.tag not in _ACCEPTED_TAGS[param.kind]:
        ctx.report("UPG301", node, f"{key}: expected {_EXPECTED[param.kind]}, got {describe(node)}")
        return
    if param.kind == "false" and node.value is True:
        ctx.report("UPG302", node, f"{key}: {owner} refuses true (must be false)")
    elif param.kind == "choice":
        _check_choice(ctx, key, param, node)
    elif node.tag in ("int", "float"):
        _check_bounds(ctx, key, param, node)


def _check_choice(ctx: Context, key: str, param: Param, node: Scalar) -> None:
    allowed = " or ".join(repr(c) for c in param.choices or ())
    if node.text not in (param.choices or ()):
        ctx.report("UPG302", node, f"{key}: {node.text!r} is not {allowed}")
    elif node.plain and _YAML11_BOOL.fullmatch(node.text):
        ctx.report("UPG305", node, f"{node.text} is read as the boolean "
                   f"{node.text.lower() in ('y', 'yes', 'true', 'on')} by PyYAML (YAML 1.1); "
                   f"write \"{node.text}\"")


def _check_betas(ctx: Context, key: str, node: Node) -> None:
    if not isinstance(node, Sequence) or len(node.items) != 2:
        ctx.report("UPG301", node, f"{key}: expected a list of two numbers, got {describe(node)}")
        return
    beta = Param("float", None, "", ge=0.0, lt=1.0)
    for index, item in enumerate(node.items):
        check_value(ctx, f"{key}[{index}]", beta, item, "")


def _check_bounds(ctx: Context, key: str, param: Param, node: Scalar) -> None:
    value = node.value
    ok = not math.isnan(value) and all((
        param.ge is None or value >= param.ge, param.gt is None or value > param.gt,
        param.le is None or value <= param.le, param.lt is None or value < param.lt))
    if not ok:
        ctx.report("UPG302", node, f"{key}: {node.text} is out of range (must be {bounds(param)})")


def bounds(param: Param) -> str:
    """The accepted range in words, e.g. '>= 0 and < 1'."""
    parts = [f"{op} {_num(limit)}" for op, limit in
             ((">=", param.ge), (">", param.gt), ("<=", param.le), ("<", param.lt))
             if limit is not None]
    return " and ".join(parts)


def _num(value: float) -> str:
    return f"{value:g}"


def read_values(blocks: Iterable[ConfigBlock]) -> Iterator[Node]:
    """The values the optimizer and VGS read: optimizer_kwargs and the known VGS settings.

    Only these: the rest of a config file (``slippage.eps: 1e-12``) belongs to the user's own
    code, which may load it with a YAML 1.2 reader, so it is not ours to flag or respell.
    """
    for block in blocks:
        if block.kwargs is not None:
            yield block.kwargs[1]
        if block.vgs is not None:
            if block.vgs.layout == "flat" and block.vgs.switch is not None:
                yield block.vgs.switch
            yield from (value for name, (_, value) in block.vgs.entries.items()
                        if name in VGS_PARAMS)


def yaml11_strings(roots: Iterable[Node]) -> Iterator[Scalar]:
    """Every plain scalar under ``roots`` that YAML 1.2 reads as a number and PyYAML as a string."""
    seen: set[int] = set()
    for root in roots:
        for node in walk(root):
            if id(node) in seen or not isinstance(node, Scalar) or not node.plain \
                    or node.tag not in ("int", "float"):
                continue
            seen.add(id(node))
            if not (_YAML11_FLOAT.fullmatch(node.text) or _YAML11_INT.fullmatch(node.text)):
                yield node


def check_yaml11_numbers(ctx: Context, blocks: list[ConfigBlock]) -> None:
    """Report every number the optimizer or VGS reads that PyYAML would load as a string."""
    for node in yaml11_strings(read_values(blocks)):
        better = yaml11_spelling(node.text)
        advice = f"write {better}" if better else "spell it so YAML 1.1 reads a number too"
        ctx.report("UPG304", node, f"{node.text} is read as the string {node.text!r} by PyYAML "
                   f"(YAML 1.1); {advice}")


def yaml11_spelling(text: str) -> str | None:
    """``1e-6`` -> ``1.0e-6``, ``-.5`` -> ``-0.5``: a spelling YAML 1.1 and 1.2 read alike."""
    m = _EXPONENT.fullmatch(text)
    if m is not None:
        sign, whole, frac, e, exp_sign, exp = m.groups()
        return f"{sign}{whole or '0'}.{frac or '0'}{e}{exp_sign or '+'}{exp}"
    m = _SIGNED_FRACTION.fullmatch(text)
    return f"{m.group(1)}0.{m.group(2)}" if m else None
