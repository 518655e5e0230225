"""UPGD, AdaptiveUPGD and UPGDW: the reference interface, the corrected adaptive noise.

Constructor signatures and defaults are the reference code's (docs/optimizers.md). With
``adaptive_noise=True`` the per-element noise std is ``max(sigma * rms(x), min_noise_std)`` where
``x`` is what the noise is added to (the gradient for UPGD, the Adam direction for AdaptiveUPGD),
so ``||noise|| / ||x|| == sigma`` in expectation for any tensor size and any gradient scale.

Under torch.distributed (docs/distributed.md): ``noise_sync="auto"`` (the default) draws the noise
from streams shared by all ranks, so DDP replicas stay identical and FSDP2 shards get independent
streams; ``"off"`` draws from each rank's global RNG, as one process does. DTensor (FSDP2)
parameters step on their local shards with whole-tensor statistics.

``update="paper"`` (UPGD and AdaptiveUPGD) applies the UPGD paper's gate and ``2*lr`` step on the
single-tensor implementation (docs/optimizers.md, "Relation to the UPGD paper").
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from upgd_migrate.optim import _dist
from upgd_migrate.optim import _functional as F
from upgd_migrate.optim import _multi_tensor as M
from upgd_migrate.optim import _two_lane as two_lane

FORMAT_KEY = "upgd_migrate_format"
FORMAT_VERSION = 1

# Options added after the first generation, with the value that reproduces the old behaviour.
NOISE_OPTIONS = {"adaptive_noise": False, "noise_beta": 0.999, "min_noise_std": 1e-6,
                 "instant_noise_scale": True}
LATE_OPTIONS = {**NOISE_OPTIONS, "foreach": None}
# The update rule (docs/optimizers.md, "Relation to the UPGD paper"). Only the paper's rule is
# written into the groups: a group without the key runs the reference rule, so a default
# optimizer's groups and saved states keep the exact layout of earlier versions (states written
# before load as they always did, torch.distributed.checkpoint loads them both ways, checkpoint
# migration has nothing to fill).
UPDATE_CHOICES = ("reference", "paper")


def _check(ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"Invalid {what}: {value}")


def _check_beta(name: str, value: float) -> None:
    _check(0.0 <= value < 1.0, f"{name} parameter", value)  # the reference's wording


def _check_common(lr: float, weight_decay: float, sigma: float, eps: float | None,
                  eps_name: str = "eps") -> None:
    _check(lr >= 0.0, "learning rate", lr)
    _check(weight_decay >= 0.0, "weight_decay value", weight_decay)
    _check(sigma >= 0.0, "sigma value", sigma)
    if eps is not None:
        _check(eps >= 0.0, f"{eps_name} value", eps)


def _check_noise(noise_beta: float, min_noise_std: float) -> None:
    _check_beta("noise_beta", noise_beta)
    _check(min_noise_std >= 0.0, "min_noise_std value", min_noise_std)


def _paper_mode(groups: list[dict[str, Any]]) -> bool:
    """Whether this step runs the paper's rule; refused before any state moves when the
    groups disagree (its gate divides by one maximum over every group)."""
    rules = {g.get("update", "reference") for g in groups}
    for rule in rules:
        _check(rule in UPDATE_CHOICES, "update value", rule)
    _check(len(rules) == 1, "update values across param groups (one rule for all: the "
           "utility maximum is taken over every group)", sorted(rules))
    paper = rules == {"paper"}
    for g in groups:
        _check(not paper or not g.get("foreach"), "foreach value for update='paper' (it runs "
               "the single-tensor implementation; leave foreach None or False)", g.get("foreach"))
    return paper


def _update_option(update: str, foreach: Optional[bool]) -> dict[str, str]:
    _paper_mode([{"update": update, "foreach": foreach}])
    return {"update": update} if update != "reference" else {}


class _UPGDBase(Optimizer):
    """Shared machinery: lazy state, backward-compatible loading, the two-pass step."""

    _kind = "adam"  # "sgd": noise on the gradient; "adam": noise on the Adam direction
    _moment_keys: tuple[str, str] | None = ("first_moment", "sec_moment")
    _late_options: dict[str, Any] = LATE_OPTIONS

    def __init__(self, params: Iterable, defaults: dict[str, Any], noise_sync: str = "auto") -> None:
        _check(noise_sync in _dist.NOISE_SYNC_CHOICES, "noise_sync value", noise_sync)
        super().__init__(params, {**defaults, FORMAT_KEY: FORMAT_VERSION})
        # A property of the run (how its ranks relate), not of the state: kept off the groups.
        self.noise_sync = noise_sync
        self._scratch: dict = {}
        self._noise_hooks: OrderedDict[int, Callable] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # getattr: an optimizer unpickled from an older generation has no noise_sync yet
        return {**super().__getstate__(), "noise_sync": getattr(self, "noise_sync", "auto")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for target in (self.defaults, *self.param_groups):
            for key, value in self._late_options.items():
                target.setdefault(key, value)
            target.setdefault(FORMAT_KEY, FORMAT_VERSION)
        self.__dict__.setdefault("_scratch", {})
        self.__dict__.setdefault("noise_sync", "auto")
        self.__dict__.setdefault("_noise_hooks", OrderedDict())

    def register_noise_hook(self, hook: Callable[[Tensor, Tensor, Tensor], None]) -> RemovableHandle:
        """Call ``hook(param, x, noise)`` for every noisy update, before it is applied.

        ``x`` is the quantity the noise is added to. Used by the noise metrics and ``verify``;
        with no hook registered the step does no extra work.
        """
        handle = RemovableHandle(self._noise_hooks)
        self._noise_hooks[handle.id] = hook
        return handle

    def observe_next_step(self, observer: F.StepObserver) -> None:
        """Have the next step show ``observer`` the norms of its parts while they are apart.

        ``observer(batch, row)`` is called once per param group (the row: :mod:`._observe`).
        Unlike a noise hook it keeps the step on its fast path and changes none of its
        results; it applies to one step only, so steps not observed cost nothing. Used by
        :class:`~upgd_migrate.optim.monitor.NoiseMonitor`.
        """
        self._observer = observer

    def _hyperparameters(self, group: dict[str, Any], index: int) -> dict[str, Any]:
        return {**group, "_kind": self._kind, "_index": index}

    def _init_group(self, group: dict[str, Any], index: int) -> F.GroupBatch:
        batch = F.GroupBatch(hp=self._hyperparameters(group, index))
        ema_path = batch.hp.get("adaptive_noise") and not batch.hp.get("instant_noise_scale", True)
        stepping = []
        # DTensors (FSDP2) step on their local shards, where the fast paths apply.
        local = _dist.local if _dist.any_dtensor(group["params"]) else _dist.unchanged
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            self._ensure_state(p, state)
            state["step"] = int(state["step"]) + 1
            stepping.append(p)
            batch.params.append(local(p))
            batch.grads.append(local(p.grad))
            batch.utils.append(local(state["avg_utility"]))
            batch.steps.append(state["step"])
            if self._moment_keys is not None:
                batch.exp_avgs.append(local(state[self._moment_keys[0]]))
                batch.exp_avg_sqs.append(local(state[self._moment_keys[1]]))
            if ema_path:
                self._ensure_noise_ema(p, state, batch)
        if local is _dist.local and stepping:
            batch.sharding = F.cached_for(self._scratch, ("sharding", index), stepping,
                                          lambda: _dist.sharding_of(stepping))
        return batch

    def _attach_noise_streams(self, batches: list[F.GroupBatch]) -> None:
        """Under torch.distributed (``noise_sync="auto"``), noise from streams shared by every
        rank instead of each rank's global RNG (see :mod:`._dist`)."""
        noisy = [b for b in batches if F.is_noisy(b)]
        if not noisy or self.noise_sync == "off" or _dist.world_size() < 2:
            return
        _dist.seed_groups(self.param_groups, noisy[0].params[0].device)
        for b in noisy:
            group = self.param_groups[b.hp["_index"]]
            group["noise_draws"] += 1
            b.rng = _dist.stream(self._scratch, group, b.hp["_index"])

    def _ensure_state(self, p: Tensor, state: dict[str, Any]) -> None:
        """Create whatever is missing: a fresh param, or a legacy state lacking later keys."""
        state.setdefault("step", 0)
        keys = ("avg_utility", *(self._moment_keys or ()))
        for key in keys:
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _ensure_noise_ema(p: Tensor, state: dict[str, Any], batch: F.GroupBatch) -> None:
        # Zero-initialised and bias-corrected by its own update count, so switching the EMA
        # path on mid-run (or over a legacy state) starts at the current scale, not a spike.
        # A legacy `grad_norm_ema` measured something else (an L2 norm, initialised at 1.0)
        # and is left untouched.
        if "noise_scale_ema" not in state:
            state["noise_scale_ema"] = torch.zeros((), dtype=p.dtype, device=p.device)
            state["noise_scale_steps"] = 0
        state["noise_scale_steps"] = int(state["noise_scale_steps"]) + 1
        batch.noise_emas.append(state["noise_scale_ema"])
        batch.noise_steps.append(state["noise_scale_steps"])

    def _use_foreach(self, batches: list[F.GroupBatch]) -> bool:
        choice = batches[0].hp.get("foreach")
        if choice is False or not all(M.supports(b) for b in batches):
            return False
        if choice:
            return True
        # As torch does, decide per device: the in-place multi-tensor path wins on CPU and
        # CUDA; other devices (or tensor subclasses) take the single-tensor reference.
        return all(p.device.type in ("cpu", "cuda") and type(p) in (Tensor, torch.nn.Parameter)
                   for b in batches for p in b.params)

    def _noise_hook(self) -> Optional[F.NoiseHook]:
        if not self._noise_hooks:
            return None
        hooks = list(self._noise_hooks.values())

        def call_all(p: Tensor, x: Tensor, xi: Tensor) -> None:
            for hook in hooks:
                hook(p, x, xi)
        return call_all

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One update. Utility traces of every group are updated first, because the utility's
        min and max are taken over all tensors of the optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Taken after the closure: a trainer may ask to observe this step from inside it
        # (Lightning's on_before_optimizer_step runs there).
        observe = self.__dict__.pop("_observer", None)
        # Refuse before any state moves, so a failed step leaves the optimizer as it was.
        if any(p.grad is not None and p.grad.is_sparse
               for g in self.param_groups for p in g["params"]):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        paper = _paper_mode(self.param_groups)
        batches = [b for i, g in enumerate(self.param_groups)
                   if (b := self._init_group(g, i)).params]
        if not batches:
            return loss
        self._attach_noise_streams(batches)
        # The paper's rule runs on the single-tensor implementation only.
        multi = not paper and self._use_foreach(batches)
        hook = self._noise_hook()
        if multi and two_lane.pays(batches, hook):
            two_lane.step(batches, self._scratch, observe)
            return loss
        if multi:
            ranges = [M.utility_update(b, self._scratch) for b in batches]
        else:
            # the paper's gate divides by the maximum of the raw trace u, not of û
            ranges = [F.single_utility_update(b, corrected=not paper) for b in batches]
        lo, hi = F.utility_range(batches, ranges)
        update = M.param_update if multi else F.single_param_update
        for b in batches:
            dev = b.params[0].device
            update(b, lo.to(dev), hi.to(dev), self._scratch, hook, observe)
        return loss


class AdaptiveUPGD(_UPGDBase):
    """UPGD with Adam moments: ``p <- p*(1-lr*wd) - lr*(d + noise)*(1-s)``, ``d = m̂/(sqrt(v̂)+eps)``.

    ``sigma`` is an absolute noise std when ``adaptive_noise=False`` (the default, as before) and
    a relative noise-to-update ratio when ``adaptive_noise=True`` (0.05 = 5% of ``||d||``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-5, weight_decay: float = 0.001,
                 beta_utility: float = 0.999, sigma: float = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, adaptive_noise: bool = False,
                 noise_beta: float = 0.999, min_noise_std: float = 1e-6,
                 instant_noise_scale: bool = True, *, foreach: Optional[bool] = None,
                 noise_sync: str = "auto", update: str = "reference") -> None:
        _check_common(lr, weight_decay, sigma, eps)
        for name, value in (("beta_utility", beta_utility), ("beta1", beta1), ("beta2", beta2)):
            _check_beta(name, value)
        _check_noise(noise_beta, min_noise_std)
        super().__init__(params, dict(
            lr=lr, weight_decay=weight_decay, beta_utility=beta_utility, sigma=sigma,
            beta1=beta1, beta2=beta2, eps=eps, adaptive_noise=adaptive_noise,
            noise_beta=noise_beta, min_noise_std=min_noise_std,
            instant_noise_scale=instant_noise_scale, foreach=foreach,
            **_update_option(update, foreach)), noise_sync)


class UPGD(_UPGDBase):
    """SGD-type UPGD: ``p <- p*(1-lr*wd) - lr*(g + noise)*(1-s)``.

    The four noise options are an extension of the reference signature; with
    ``adaptive_noise=True`` the noise is relative to ``rms(g)``, so a VGS factor scales both.
    """

    _kind = "sgd"
    _moment_keys = None

    def __init__(self, params: Iterable, lr: float = 1e-5, weight_decay: float = 0.001,
                 beta_utility: float = 0.999, sigma: float = 0.001,
                 adaptive_noise: bool = False, noise_beta: float = 0.999,
                 min_noise_std: float = 1e-6, instant_noise_scale: bool = True, *,
                 foreach: Optional[bool] = None, noise_sync: str = "auto",
                 update: str = "reference") -> None:
        _check_common(lr, weight_decay, sigma, None)
        _check_beta("beta_utility", beta_utility)
        _check_noise(noise_beta, min_noise_std)
        super().__init__(params, dict(
            lr=lr, weight_decay=weight_decay, beta_utility=beta_utility, sigma=sigma,
            adaptive_noise=adaptive_noise, noise_beta=noise_beta,
            min_noise_std=min_noise_std, instant_noise_scale=instant_noise_scale,
            foreach=foreach, **_update_option(update, foreach)), noise_sync)


class UPGDW(_UPGDBase):
    """AdamW-style UPGD with the reference signature: ``betas[1]`` doubles as the utility decay.

    Fixed noise only (``sigma`` is an absolute std); ``amsgrad=True`` raises NotImplementedError.
    """

    _moment_keys = ("exp_avg", "exp_avg_sq")
    _late_options = {"foreach": None}

    def __init__(self, params: Iterable, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, sigma: float = 0.001, amsgrad: bool = False, *,
                 foreach: Optional[bool] = None, noise_sync: str = "auto") -> None:
        _check_common(lr, weight_decay, sigma, eps, eps_name="epsilon")  # as the reference UPGDW
        for index, beta in enumerate(betas):
            _check(0.0 <= beta < 1.0, f"beta parameter at index {index}", beta)
        if amsgrad:  # NotImplementedError, as the reference raises: callers catch that type
            raise NotImplementedError("UPGDW does not support amsgrad: AMSGrad's max(v) is "
                                      "not combined with the utility gate; use amsgrad=False")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, sigma=sigma, amsgrad=amsgrad,
                                      foreach=foreach), noise_sync)

    def _hyperparameters(self, group: dict[str, Any], index: int) -> dict[str, Any]:
        b1, b2 = group["betas"]
        return {**group, "beta1": b1, "beta2": b2, "beta_utility": b2,
                "_kind": self._kind, "_index": index}
