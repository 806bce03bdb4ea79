"""Every MLflow run ends in a true state (FAILED, KILLED, FINISHED), a step interrupted while retraining
leaves no old model behind, a second process of a step stops, and --set overrides validate like YAML."""

import json
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def sciconv(env, *args, **kwargs):
    return subprocess.run(["sciconv", *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)


def start(env, *args):
    return subprocess.Popen(["sciconv", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture
def prepared(project, tool_env):
    for step in ("simulate", "ingest", "split", "preprocess", "plan"):
        done = sciconv(tool_env, step, "ccd_micro")
        assert done.returncode == 0, done.stderr[-2000:]
    return project, tool_env


def runs(project) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")
    experiment = client.get_experiment_by_name("ccd_micro")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def checkpoint_run(project) -> str | None:
    """The MLflow run of the last saved epoch (last.pt), or None."""
    try:
        state = torch.load(project / "results/ccd_micro/model/last.pt", map_location="cpu", weights_only=True)
    except (FileNotFoundError, EOFError, RuntimeError):
        return None
    return state["mlflow_run_id"]


def interrupt_training(project, env):
    """Start a long training and wait until it has saved its first epoch; the process."""
    before = checkpoint_run(project)
    process = start(env, "train", "ccd_micro", "--set", "train.epochs=40")
    deadline = time.monotonic() + 300
    while checkpoint_run(project) in (None, before):
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return process


def test_a_non_finite_loss_mid_training_fails_the_run_with_the_reason(prepared):
    project, env = prepared
    split = json.loads((project / "results/ccd_micro/split.json").read_text())
    with h5py.File(project / "results/ccd_micro/preprocessed.h5", "r+") as store:
        for sample_id in split["train"]:
            image = store[f"samples/{sample_id}/image"]
            image[...] = np.full(image.shape, np.nan, dtype=image.dtype)
    failed = sciconv(env, "train", "ccd_micro")
    assert failed.returncode == 2
    assert "training loss became nan in epoch 1" in failed.stderr and "Traceback" not in failed.stderr
    (run,) = runs(project)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("TrainingError: the training loss")


def test_an_interrupted_retraining_is_killed_and_leaves_no_old_model(prepared):
    project, env = prepared
    first = sciconv(env, "train", "ccd_micro", "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    model = project / "results/ccd_micro/model/model.pt"
    assert model.is_file()

    process = interrupt_training(project, env)
    # a second training of the same dataset meanwhile stops at once, naming the first
    second = sciconv(env, "train", "ccd_micro")
    assert second.returncode == 2 and f"already running (pid {process.pid}" in second.stderr
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 143, out[-2000:]
    assert "interrupted by SIGTERM" in out
    assert sorted(run.info.status for run in runs(project)) == ["FINISHED", "KILLED"]
    # the model of the earlier settings is gone: evaluate cannot report it as the new one's
    assert not model.exists()
    assert sciconv(env, "evaluate", "ccd_micro").returncode != 0

    # Ctrl-C (SIGINT) ends a fresh training (not a resumption of the killed one) the same way,
    # with the shell's code for it
    (project / "results/ccd_micro/model/last.pt").unlink()
    process = interrupt_training(project, env)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out[-2000:]
    assert "interrupted by SIGINT" in out
    assert sorted(run.info.status for run in runs(project)) == ["FINISHED", "KILLED", "KILLED"]
    assert not model.exists()


def test_set_overrides_are_validated_like_the_yaml_and_logged(prepared):
    project, env = prepared
    wrong = sciconv(env, "train", "ccd_micro", "--set", "train.epoch=1")
    assert wrong.returncode == 2
    assert "--set train.epoch=1" in wrong.stderr and "train.epoch is not allowed" in wrong.stderr
    malformed = sciconv(env, "train", "ccd_micro", "--set", "train.epochs")
    assert malformed.returncode == 2 and "expected KEY=VALUE" in malformed.stderr
    done = sciconv(env, "train", "ccd_micro", "--set", "train.epochs=1", "--set", "model.channels=[8,16,32,64]")
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.channels"] == "[8, 16, 32, 64]"
    assert run.data.params["overrides"] == "train.epochs=1; model.channels=[8,16,32,64]"
