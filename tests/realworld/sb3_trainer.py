"""A stable-baselines3 PPO trainer wired to its optimizer and VGS the way the reference trainer
(``DistributionalPPO``) is, with the packaged classes.

As there: the optimizer and VGS settings are plain attributes (``_optimizer_kwargs``, ``_vgs_*``:
stable-baselines3 saves them into the zip's JSON ``data``); the scaler is built with
``logger=self.logger`` and kept as the attribute ``_variance_gradient_scaler``, so ``save``
cloudpickles it into ``data``; ``get_parameters`` adds its ``state_dict()`` as ``vgs_state``
(stable-baselines3 writes it as the ``vgs_state.pth`` member) and ``set_parameters`` restores it;
``_setup_dependent_components`` relinks it with ``update_parameters`` on setup and after every
load (which restarts its per-parameter statistics, as in the reference).

``vgs_class``/``optimizer_class`` are the classes a run builds; a subclass with the reference's
module names stands in for the reference code (see ``reference_layout``).

Imported inside the tests, so collecting them never needs stable-baselines3.
"""
from __future__ import annotations

from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

VGS_KEY = "vgs_state"
VGS_MEMBER = f"{VGS_KEY}.pth"
VGS_ATTR = "_variance_gradient_scaler"
SIGMA_ABS = 0.001  # the fixed (absolute) noise std every legacy config uses
OPTIMIZER_KWARGS = {"sigma": SIGMA_ABS, "adaptive_noise": False}  # lr: learning_rate


class VGSPPO(PPO):
    """PPO whose optimizer steps are wrapped by a VarianceGradientScaler."""

    vgs_class = VarianceGradientScaler

    def __init__(self, *args, vgs_alpha: float = 0.1, vgs_beta: float = 0.99,
                 vgs_warmup_steps: int = 4, log_dir: str | None = None, **kwargs) -> None:
        self._vgs_enabled = True
        self._vgs_alpha, self._vgs_beta, self._vgs_warmup_steps = vgs_alpha, vgs_beta, \
            vgs_warmup_steps
        self._log_dir = log_dir  # a CSV progress log there (this run's only: not saved)
        policy_kwargs = kwargs.get("policy_kwargs") or {}
        self._optimizer_kwargs = dict(policy_kwargs.get("optimizer_kwargs", {}))
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if getattr(self, "_log_dir", None) and not self._custom_logger:
            self.set_logger(configure(self._log_dir, ["csv"]))  # learn() keeps a set logger
        self._setup_dependent_components()
        # PPO.train() has no hook between backward() and clip_grad_norm_(), so the gradients
        # are scaled just before the optimizer step (after clipping): the nearest point a
        # trainer can reach without copying train().
        self.policy.optimizer.register_step_pre_hook(self._scale_gradients)
        self.policy.optimizer.register_step_post_hook(lambda *_: self._vgs_step())

    def _setup_dependent_components(self) -> None:
        """Build the scaler once (with the logger), else relink it to the current policy."""
        vgs = getattr(self, VGS_ATTR, None)
        if vgs is None:
            logger = self._logger if hasattr(self, "_logger") else None
            vgs = self.vgs_class(parameters=self.policy.parameters(), enabled=self._vgs_enabled,
                                 beta=self._vgs_beta, alpha=self._vgs_alpha,
                                 warmup_steps=self._vgs_warmup_steps, logger=logger)
            setattr(self, VGS_ATTR, vgs)
        vgs.update_parameters(self.policy.parameters())

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_log_dir"]

    @property
    def vgs(self):
        return getattr(self, VGS_ATTR)

    def _scale_gradients(self, *_) -> None:
        # A step pre-hook must return None (a value would replace the step's arguments).
        self.vgs.scale_gradients()

    def _vgs_step(self) -> None:
        self.vgs.step()

    def get_parameters(self) -> dict:
        params = super().get_parameters()
        params[VGS_KEY] = self.vgs.state_dict()
        return params

    def set_parameters(self, load_path_or_dict, exact_match: bool = True,
                       device="auto") -> None:
        # PPO.load hands every .pth member to set_parameters, which would look for an
        # attribute named after it: the VGS member is taken out and restored into the scaler.
        params = load_path_or_dict
        if isinstance(params, dict) and VGS_KEY in params:
            params = dict(params)
            self.vgs.load_state_dict(params.pop(VGS_KEY))
        super().set_parameters(params, exact_match=exact_match, device=device)

    @classmethod
    def load(cls, path, env=None, device="auto", log_dir: Path | None = None, **kwargs):
        """``log_dir``: where a later learn() logs (nothing is written there); without it SB3
        would make a folder of its own in the system temp folder."""
        model = super().load(path, env=env, device=device, **kwargs)
        model._setup_dependent_components()  # the reference trainer's load() does this last
        if log_dir is not None:
            model.set_logger(configure(str(log_dir), []))
        return model


def train(path: Path, steps: int = 256, trainer: type[VGSPPO] = VGSPPO,
          optimizer_class: type = AdaptiveUPGD, log_dir: Path | None = None) -> VGSPPO:
    """PPO on CartPole-v1 with a tiny rollout, ``steps`` environment steps, saved to ``path``."""
    model = trainer("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2,
                    device="cpu", seed=0, verbose=0,
                    log_dir=None if log_dir is None else str(log_dir),
                    policy_kwargs={"optimizer_class": optimizer_class,
                                   "optimizer_kwargs": dict(OPTIMIZER_KWARGS)})
    model.learn(steps)
    model.save(path)
    return model
