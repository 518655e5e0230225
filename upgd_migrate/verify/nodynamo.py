"""Drive optimizers without importing ``torch._dynamo``.

torch wraps ``Optimizer.add_param_group``, ``load_state_dict``, ``state_dict`` and ``zero_grad``
in ``torch._disable_dynamo``, whose first call imports ``torch._dynamo`` (about 1.3 s of CPU,
more than a quarter of a whole ``verify`` of 64 files on 2 cores, and paid again in every
worker) only to keep those methods out of ``torch.compile`` graphs. verify compiles nothing.
While :func:`no_dynamo_import` is active, and only if ``torch._dynamo`` is not loaded yet,
each such wrapper is handed its own plain method as the "disabled" one it caches on first use;
on exit that cache is cleared again, so a later ``torch.compile`` in the same process gets
torch's behaviour. Where torch's wrapper is not the one recognised here, nothing is touched
and the import simply happens as before.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

_CACHE = "__dynamo_disable"  # where torch._compile's wrapper caches the disabled function


def _lazy_wrapper_code():
    """The code object of torch's lazily importing wrapper, or None if torch has none."""
    try:
        return torch._compile._disable_dynamo(lambda: None).__code__
    except (AttributeError, TypeError):
        return None


def _wrapped_methods() -> list[Callable]:
    code = _lazy_wrapper_code()
    if code is None:
        return []
    found = []
    for attr in vars(torch.optim.Optimizer).values():
        plain = getattr(attr, "__wrapped__", None)
        if plain is not None and getattr(attr, "__code__", None) is code:
            found.append(plain)
    return found


@contextmanager
def no_dynamo_import() -> Iterator[None]:
    if "torch._dynamo" in sys.modules:  # already paid for: torch's own behaviour
        yield
        return
    patched = [fn for fn in _wrapped_methods() if getattr(fn, _CACHE, None) is None]
    for fn in patched:
        setattr(fn, _CACHE, fn)
    try:
        yield
    finally:
        for fn in patched:
            if getattr(fn, _CACHE, None) is fn:
                delattr(fn, _CACHE)
