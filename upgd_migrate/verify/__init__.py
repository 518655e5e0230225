"""Verify a state by running it: drive the packaged optimizers over proxy parameters, judge the
noise it produces (verdicts, levels) and render the result.

May import ``optim``, ``checkpoint`` (to open containers) and the shared core; torch required.
"""
