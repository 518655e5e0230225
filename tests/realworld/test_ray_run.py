"""Ray Tune: a PBT experiment of a function trainable (``torch.save({"model", "optimizer", ...})``
into ``checkpoint_00000N/``) saved with a legacy optimizer and stopped by an error, migrated as a
whole experiment folder, then ``Tuner.restore(path, trainable, resume_errored=True)`` from the
``-o`` copy and from the in-place folder: every trial goes on from its migrated checkpoint with
adaptive noise at the calibrated sigma.

Ray runs in this process with 2 CPUs, no dashboard, its temporary files under the test's folder
(a short path: Ray's socket paths must stay under 107 characters)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from runfolder_helpers import (G1AdaptiveUPGD, Packaged, assert_resumed, expected_sigmas, is_g1,
    migrate_run, tiny_model)

# reuse_actors stays off (Ray suggests it for PBT): with it, a try here lost rows of the trials'
# progress.csv (the checks read each trial's last result since, see _check_restored).
pytestmark = [pytest.mark.realworld,
              pytest.mark.filterwarnings("ignore:Consider boosting PBT performance:UserWarning")]

HERE = Path(__file__).resolve().parent
FIRST, LAST, INTERVAL = 2, 3, 2  # iterations: saved before the error, in all; PBT's interval
LRS = [1e-4, 3e-4]
GROUP_KEYS = ("adaptive_noise", "instant_noise_scale", "sigma")  # reported every iteration


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """Ray for this module, shut down after: its session folder and every temporary file of the
    driver and the workers under pytest's folder, none in the system's."""
    ray = pytest.importorskip("ray")
    temp = tmp_path_factory.mktemp("ray")
    assert len(str(temp)) <= 40, temp  # + "/session_<date>_<pid>/sockets/plasma_store"
    system_temp = Path(tempfile.gettempdir())
    before = {p.name for p in system_temp.iterdir() if "ray" in p.name}
    path = os.pathsep.join([str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temp))  # where Ray's file locks go (_ray_lockfiles)
        patch.setattr(tempfile, "tempdir", str(temp))
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TMPDIR": str(temp)}})
        try:
            yield
        finally:
            ray.shutdown()
    assert {p.name for p in system_temp.iterdir() if "ray" in p.name} == before


def trainable(config: dict) -> None:
    """Train one step per iteration, checkpoint every iteration; the first run stops with an
    error at FIRST + 1 (the run that resumes after the migration, ``go_on`` exists, does not)."""
    from ray import tune

    after = Path(config["go_on"]).exists()
    model = tiny_model()
    optimizer = (Packaged if after else G1AdaptiveUPGD)(model.parameters(), lr=config["lr"])
    start, loaded_from = 0, ""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / "checkpoint.pt", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, loaded_from = saved["step"], str(checkpoint.path)
    x = torch.randn(LAST, 8, 6, generator=torch.Generator().manual_seed(0))
    for step in range(start + 1, LAST + 1):
        if step == FIRST + 1 and not after:
            raise RuntimeError("stopped: to be resumed after the migration")
        loss = torch.nn.functional.mse_loss(model(x[step - 1]), x[step - 1].sum(1, keepdim=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        group = optimizer.param_groups[0]
        metrics = {"loss": loss.item(), "step": step, "after": after, "loaded_from": loaded_from,
                   **{key: group.get(key) for key in GROUP_KEYS}}
        with tempfile.TemporaryDirectory(dir=".") as folder:  # the trial's working folder
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, Path(folder) / "checkpoint.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _tuner(storage: Path, go_on: Path):
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=INTERVAL,
                                  hyperparam_mutations={"lr": LRS}, synch=False)
    return tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search(LRS), "go_on": str(go_on)},
        tune_config=tune.TuneConfig(scheduler=pbt, metric="loss", mode="min"),
        run_config=tune.RunConfig(name="pbt", storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))


def _legacy_states(experiment: Path) -> dict[str, list[float]]:
    """``{checkpoint folder (relative): expected sigmas}`` of every saved state."""
    table = {}
    for path in sorted(experiment.glob("*/checkpoint_*/checkpoint.pt")):
        state = torch.load(path, weights_only=True)["optimizer"]
        assert is_g1(state), path
        table[path.parent.relative_to(experiment).as_posix()] = expected_sigmas(state)
    return table


def test_tuner_restore_resumes_every_trial_from_the_migrated_experiment(tmp_path, ray_session):
    from ray import tune

    go_on = tmp_path / "go_on"
    experiment, out = tmp_path / "results" / "pbt", tmp_path / "mirror" / "pbt"
    first = _tuner(tmp_path / "results", go_on).fit()
    assert first.num_errors == 2 and len(first) == 2
    table = _legacy_states(experiment)
    assert len(table) == 2 * FIRST
    files = {p.relative_to(experiment).as_posix() for p in experiment.rglob("*") if p.is_file()}
    assert "tuner.pkl" in files and any(f.startswith("experiment_state-") for f in files)
    for trial in {Path(rel).parent.as_posix() for rel in table}:
        assert {"params.json", "params.pkl", "result.json", "progress.csv"} <= {
            Path(f).name for f in files if f.startswith(trial + "/")}

    migrate_run(experiment, out, {f"{rel}/checkpoint.pt" for rel in table})

    go_on.touch()
    for folder in (out, experiment):
        _check_restored(tune.Tuner.restore(str(folder), trainable, resume_errored=True).fit(),
                        folder, table)


def _check_restored(results, folder: Path, table: dict[str, list[float]]) -> None:
    """Every trial finished, going on from this folder's migrated checkpoints.

    The check reads ``result.metrics``, the last result the driver received: the step the
    resumed run trained. Not ``result.metrics_dataframe``: Ray reads it from the trial's
    ``result.json``, which loses rows whenever PBT pauses a trial and starts it again before
    the driver's periodic sync (Ray's JSON logger then copies the stored, older file over the
    staged one), so its rows depend on timing."""
    assert results.num_errors == 0 and len(results) == 2
    saved = {str(folder / rel): rel for rel in table}
    for result in results:
        row = result.metrics
        assert Path(result.path).parent == folder
        assert row["step"] == LAST and row["after"] is True
        # A checkpoint of this folder as saved (PBT may have cloned the other trial's).
        assert row["loaded_from"] in saved, row["loaded_from"]
        assert_resumed([{key: row[key] for key in GROUP_KEYS}], table[saved[row["loaded_from"]]])
