"""Checkpoint migration: load weights-only, find the optimizer and VGS states, migrate, save.

Data flow: :mod:`.io` (the only torch.load/torch.save) -> :mod:`.containers` (raw, dict,
Lightning, PBT, sb3 zip; DCP folders in :mod:`.dcp`) -> :mod:`.detect` -> :mod:`.migrate`
(pure dict -> dict steps with an audit log) -> atomic save. May import ``optim`` and the
shared core; torch required.
"""
