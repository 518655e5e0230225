"""Plain PyTorch: write the noise metrics to a ``torch.utils.tensorboard.SummaryWriter``.

::

    writer = SummaryWriter("runs/exp")
    with watch(writer, optimizer, vgs=vgs):
        for batch in data:
            ...  # backward, vgs.scale_gradients(), optimizer.step(), vgs.step()

Any object with ``add_scalar(tag, value, global_step)`` works as the writer, so this module
imports no TensorBoard itself (``pip install tensorboard`` for the real one).

Under FSDP2 a logged step is a collective (the metrics are of the whole tensors), so every rank
must watch; the ranks that write nothing pass ``None`` as the writer::

    writer = SummaryWriter("runs/exp") if dist.get_rank() == 0 else None
    monitor = watch(writer, optimizer)   # on every rank
"""
from __future__ import annotations

from typing import Any

from upgd_migrate.integrations._find import describe, find_optimizers, find_vgs
from upgd_migrate.optim.monitor import DEFAULT_EVERY, NoiseMonitor


def watch(writer: Any, trainer: Any, vgs=None, every: int = DEFAULT_EVERY,
          first_step: int = 0) -> NoiseMonitor:
    """A NoiseMonitor writing to ``writer`` (global step: ``first_step`` + steps since attached);
    with ``writer=None`` it measures (``monitor.latest``) and writes nothing.

    ``trainer`` is an optimizer, a list of them, or any object holding them as attributes; the
    VGS is ``vgs`` if given, else the first ``VarianceGradientScaler`` found the same way.
    Close the returned monitor (or use it as a context manager) to stop.
    """
    if writer is not None and not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(f"watch: the writer ({type(writer).__name__}) has no add_scalar(tag, "
                        f"value, step): pass a SummaryWriter, or None on ranks that do not write")

    optimizers = find_optimizers([trainer])
    if not optimizers:
        raise TypeError(f"watch: no UPGD-family optimizer in {type(trainer).__name__} "
                        f"({describe([trainer])})")
    vgs = vgs if vgs is not None else find_vgs([trainer])

    def write(step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            writer.add_scalar(key, value, first_step + step)
    return NoiseMonitor(optimizers, vgs=vgs, every=every,
                        callback=None if writer is None else write)

