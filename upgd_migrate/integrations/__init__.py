"""Thin adapters from :class:`~upgd_migrate.optim.monitor.NoiseMonitor` to the loggers trainers
already use: ``sb3`` (stable-baselines3's logger: TensorBoard, CSV, stdout), ``lightning`` (the
module's ``log``) and ``tensorboard`` (a plain ``SummaryWriter``).

May import ``upgd_migrate.optim`` and, each in its own module, its framework; nothing else of the
package. Importing this package imports no framework: ``upgd_migrate.integrations.sb3`` needs
stable-baselines3, ``.lightning`` needs Lightning, ``.tensorboard`` needs only a writer object.
"""
