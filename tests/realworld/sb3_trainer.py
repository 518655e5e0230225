"""A stable-baselines3 PPO trainer with the packaged AdaptiveUPGD and a VGS, as teams write one.

Like the reference trainer it keeps its optimizer and VGS settings as plain attributes
(``_optimizer_kwargs``, ``_vgs_*``: stable-baselines3 saves them into the zip's JSON ``data``)
and stores the VGS state as an extra ``vgs_state.pth`` member of the saved zip.

Imported inside the tests, so collecting them never needs stable-baselines3.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from stable_baselines3 import PPO

from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

VGS_KEY = "vgs_state"
VGS_MEMBER = f"{VGS_KEY}.pth"
SIGMA_ABS = 0.001  # the fixed (absolute) noise std every legacy config uses
OPTIMIZER_KWARGS = {"sigma": SIGMA_ABS, "adaptive_noise": False}  # lr: learning_rate


class VGSPPO(PPO):
    """PPO whose optimizer steps are wrapped by a VarianceGradientScaler."""

    def __init__(self, *args, vgs_alpha: float = 0.1, vgs_beta: float = 0.99,
                 vgs_warmup_steps: int = 4, **kwargs) -> None:
        self._vgs_enabled = True
        self._vgs_alpha, self._vgs_beta, self._vgs_warmup_steps = vgs_alpha, vgs_beta, \
            vgs_warmup_steps
        policy_kwargs = kwargs.get("policy_kwargs") or {}
        self._optimizer_kwargs = dict(policy_kwargs.get("optimizer_kwargs", {}))
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.vgs = VarianceGradientScaler(self.policy.parameters(), enabled=self._vgs_enabled,
                                          alpha=self._vgs_alpha, beta=self._vgs_beta,
                                          warmup_steps=self._vgs_warmup_steps)
        # PPO.train() has no hook between backward() and clip_grad_norm_(), so the gradients
        # are scaled just before the optimizer step (after clipping): the nearest point a
        # trainer can reach without copying train().
        self.policy.optimizer.register_step_pre_hook(self._scale_gradients)
        self.policy.optimizer.register_step_post_hook(lambda *_: self.vgs.step())

    def _scale_gradients(self, *_) -> None:
        # A step pre-hook must return None (a value would replace the step's arguments).
        self.vgs.scale_gradients()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "vgs"]  # saved as its own member instead

    def save(self, path, *args, **kwargs) -> None:
        super().save(path, *args, **kwargs)
        buf = io.BytesIO()
        torch.save(self.vgs.state_dict(), buf)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(VGS_MEMBER, buf.getvalue())

    def set_parameters(self, load_path_or_dict, exact_match: bool = True,
                       device="auto") -> None:
        # PPO.load reads every .pth member of the zip (with weights_only=True) and hands them
        # all to set_parameters, which would look for an attribute named after the member: the
        # VGS member is taken out here and restored into the scaler.
        params = load_path_or_dict
        if isinstance(params, dict) and VGS_KEY in params:
            params = dict(params)
            self.vgs.load_state_dict(params.pop(VGS_KEY))
        super().set_parameters(params, exact_match=exact_match, device=device)


def train(path: Path, steps: int = 256) -> VGSPPO:
    """PPO on CartPole-v1 with a tiny rollout, ``steps`` environment steps, saved to ``path``."""
    model = VGSPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2,
                   device="cpu", seed=0, verbose=0,
                   policy_kwargs={"optimizer_class": AdaptiveUPGD,
                                  "optimizer_kwargs": dict(OPTIMIZER_KWARGS)})
    model.learn(steps)
    model.save(path)
    return model
