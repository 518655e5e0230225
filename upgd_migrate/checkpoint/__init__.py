"""Checkpoint migration and verification (torch required).

Data flow: :mod:`.io` (weights-only load, atomic save) -> :mod:`.containers` (find the optimizer
and VGS states inside a file) -> :mod:`.migrate` (pure dict -> dict steps with an audit log) ->
atomic save; :mod:`.verify` runs the packaged optimizers over the states.
"""
