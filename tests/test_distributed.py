"""Data-parallel training (`gpus: N`): N processes over gloo on CPU train what one process trains.

Every random draw (sample order, crops, augmentation) is made for the global batch and each process
takes its rows, DDP averages the gradients, so with a per-sample loss and no batch statistics
(cross-entropy, a U-Net without normalisation) two processes and one agree to float rounding.
"""

import shutil
import subprocess

import mlflow
import pytest
import torch
import yaml

from sciconv import config


def train(tool_env, project) -> dict:
    out = subprocess.run(["sciconv", "train", "ccd_micro", "--device", "cpu", "--threads", "2"], cwd=project,
                         env=tool_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"log": out.stderr, "model": torch.load(project / "results/ccd_micro/model/model.pt", weights_only=True)}


def test_two_processes_train_what_one_process_trains(project, tool_env):
    from sciconv.steps import ingest, plan, preprocess, simulate, split

    dataset_yaml = project / "config/datasets/ccd_micro.yaml"
    cfg = yaml.safe_load(dataset_yaml.read_text())
    cfg["train"].update(loss="ce", epochs=2, batch_size=8, patches_per_image=2)
    dataset_yaml.write_text(yaml.safe_dump(cfg))
    ds = config.load_dataset("ccd_micro", config.load_global("config/config.yaml"))
    for step in (simulate, ingest, split, preprocess, plan):
        step.run(ds)

    single = train(tool_env, project)
    shutil.move(project / "results/ccd_micro/model", project / "single_model")
    dataset_yaml.write_text(yaml.safe_dump(cfg | {"gpus": 2}))
    parallel = train(tool_env, project)

    assert "data-parallel training over 2 processes" in parallel["log"]
    # each process trains on half of each global batch of 8 patches, not on all of it
    assert all(f"process {p} of 2 trains on 4 samples per step" in parallel["log"] for p in (1, 2))
    one, two = single["model"], parallel["model"]
    assert len(one["history"]) == len(two["history"]) == 2  # one history: only process 0 records
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_dice_mean"] == pytest.approx(a["val_dice_mean"], abs=1e-3)
    assert one["model_state"].keys() == two["model_state"].keys()
    for name, weights in one["model_state"].items():
        torch.testing.assert_close(two["model_state"][name], weights, rtol=1e-3, atol=1e-4, msg=name)
    # and they did train: the weights moved from their initial values by far more than the tolerance
    assert one["history"][0]["train_loss"] != one["history"][1]["train_loss"]

    client = mlflow.MlflowClient(f"sqlite:///{project}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ccd_micro").experiment_id])
    parallel_runs = [r for r in runs if r.data.tags.get("processes") == "2"]
    assert len(runs) == 2 and len(parallel_runs) == 1  # one MLflow run for the two processes
    losses = client.get_metric_history(parallel_runs[0].info.run_id, "train_loss")
    assert [m.step for m in losses] == [1, 2]
