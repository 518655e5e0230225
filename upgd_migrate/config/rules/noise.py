"""Noise rules: what sigma means (UPG101, UPG102, UPG106, UPG107) and how VGS meets the noise
(UPG103-UPG105).

See docs/optimizers.md: with adaptive_noise on, sigma is a noise-to-update ratio; with it
off, an absolute std. VGS multiplies every gradient by c in [min_scaling_factor, 1]; fixed noise
on the raw gradient (UPGD) then grows by up to 1/c relative to the update, while Adam-type
directions absorb a steady c and see only a transient effect while v-hat catches up.
"""
from __future__ import annotations

from upgd_migrate.legacy import (OPTIMIZERS, SGD_TYPES, UPGD_TYPES, VGS_PARAMS,
                                 relative_sigma_excess, sigma_set_by_config)
from upgd_migrate.config.locate import ConfigBlock, VgsBlock
from upgd_migrate.config.rules import Context
from upgd_migrate.config.rules.keys import Kwargs
from upgd_migrate.config.yaml_io import Node, Scalar

_DEFAULT_NOISE_BETA = OPTIMIZERS["AdaptiveUPGD"]["noise_beta"].default


def _number(node: Node | None) -> float | None:
    if isinstance(node, Scalar) and node.tag in ("int", "float"):
        return float(node.value)
    return None


def _flag(kwargs: Kwargs, key: str, optimizer: str) -> tuple[bool | None, Node | None]:
    """(value, node) of a boolean kwarg the optimizer accepts; value None when not set."""
    if key not in OPTIMIZERS[optimizer] or key not in kwargs:
        return None, None
    node = kwargs[key][1]
    value = node.value if isinstance(node, Scalar) and node.tag == "bool" else None
    return value, node


def check_noise(ctx: Context, block: ConfigBlock, optimizer: str | None, kwargs: Kwargs) -> None:
    """Run the sigma-meaning and VGS-interaction rules on one located block."""
    if optimizer not in UPGD_TYPES:
        return
    adaptive, adaptive_node = _flag(kwargs, "adaptive_noise", optimizer)
    _check_sigma(ctx, optimizer, kwargs, bool(adaptive), adaptive_node)
    if block.vgs is not None and block.vgs.enabled:
        anchor = adaptive_node or (block.name[1] if block.name else block.vgs.anchor)
        _check_vgs_noise(ctx, optimizer, kwargs, bool(adaptive), anchor, block.vgs)


def _check_sigma(ctx: Context, optimizer: str, kwargs: Kwargs, adaptive: bool,
                 adaptive_node: Node | None) -> None:
    low, high = ctx.options.relative_sigma
    sigma_node = kwargs["sigma"][1] if "sigma" in kwargs else None
    sigma = _number(sigma_node)
    if adaptive and sigma_node is None:
        default = OPTIMIZERS[optimizer]["sigma"].default
        if default < low:
            ctx.report("UPG101", adaptive_node, f"adaptive_noise: true leaves sigma at its "
                       f"default {default:g}, below the plausible relative range {low:g}-{high:g}: "
                       f"the absolute default, {default * 100:g}% noise as a ratio")
    elif adaptive and sigma is not None and sigma_set_by_config(ctx.line(sigma_node)) == sigma:
        return  # the value `config` wrote (its marker says so): relative by decision, untouched
    elif adaptive and sigma is not None and sigma < low:
        ctx.report("UPG101", sigma_node, f"sigma {sigma_node.text} with adaptive_noise: true is "
                   f"below the plausible relative range {low:g}-{high:g}: an absolute noise std "
                   f"left from before adaptive noise ({sigma * 100:g}% noise as a ratio)")
    elif adaptive and sigma is not None and (excess := relative_sigma_excess(sigma, (low, high))):
        severity, why = excess
        ctx.report("UPG107" if severity == "error" else "UPG106", sigma_node,
                   f"sigma {sigma_node.text} with adaptive_noise: true is {why}")
    elif not adaptive and sigma is not None:
        limit = ctx.options.absolute_sigma_max.get(optimizer)
        if limit is not None and sigma > limit:
            ctx.report("UPG102", sigma_node, f"sigma {sigma_node.text} with adaptive_noise off "
                       f"is above the plausible absolute range for {optimizer} (up to {limit:g}): "
                       "a relative ratio read as an absolute noise std")


def _min_scaling_factor(vgs: VgsBlock) -> float:
    entry = vgs.entries.get("min_scaling_factor")
    value = _number(entry[1]) if entry else None
    return value if value is not None and 0 < value <= 1 else \
        VGS_PARAMS["min_scaling_factor"].default


def _check_vgs_noise(ctx: Context, optimizer: str, kwargs: Kwargs, adaptive: bool,
                     anchor: Node, vgs: VgsBlock) -> None:
    floor = _min_scaling_factor(vgs)
    amplification = f"{1 / floor:g}x"
    if not adaptive and optimizer in SGD_TYPES:
        ctx.report("UPG103", anchor, f"VGS with fixed noise on {optimizer}: VGS scales gradients "
                   f"down to min_scaling_factor {floor:g} while the noise std stays fixed, so "
                   f"noise grows up to {amplification} relative to the update; set "
                   "adaptive_noise: true with a relative sigma")
    elif not adaptive:
        advice = ("consider adaptive_noise: true" if "adaptive_noise" in OPTIMIZERS[optimizer]
                  else "AdaptiveUPGD with adaptive_noise: true avoids it")
        ctx.report("UPG104", anchor, f"VGS with fixed noise on {optimizer}: the Adam direction "
                   f"absorbs a steady VGS factor, but after a drop the noise runs up to "
                   f"{amplification} too large while the second moment catches up; {advice}")
    else:
        instant, instant_node = _flag(kwargs, "instant_noise_scale", optimizer)
        if instant is False:
            _report_ema_lag(ctx, kwargs, instant_node, amplification)


def _report_ema_lag(ctx: Context, kwargs: Kwargs, node: Node, amplification: str) -> None:
    beta = _number(kwargs["noise_beta"][1]) if "noise_beta" in kwargs else None
    beta = beta if beta is not None and 0 <= beta < 1 else _DEFAULT_NOISE_BETA
    ctx.report("UPG105", node, f"VGS with adaptive_noise and instant_noise_scale: false: the "
               f"noise scale is an EMA (noise_beta {beta:g}, about {round(1 / (1 - beta))} steps) "
               f"that lags VGS changes, so after a drop the noise runs up to {amplification} too "
               "large; set instant_noise_scale: true")

