"""Checkpoint migration: load weights-only, find the optimizer and VGS states, migrate, save.

Data flow: :mod:`.runfolder` (walk a run folder, decide each file by content, mirror it to
``-o``) -> :mod:`.formats` (one module per format behind detect/open/write; torch files go
through :mod:`.io`, the only torch.load/torch.save) -> :mod:`.detect` -> :mod:`.steps` (pure
dict -> dict steps with an audit log) -> :mod:`.pipeline` (one input: check, dry-run or atomic
write) -> :mod:`.run` / :mod:`.render`. May import ``optim`` and the shared core; torch required.
"""
