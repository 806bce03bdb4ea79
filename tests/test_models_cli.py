"""Network building and conv arithmetic; the command line."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from sciconv import models
from sciconv.cli import STEPS, main


def unet_args(**overrides):
    args = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 5, "channels": [8, 16, 32],
            "strides": [2, 2], "num_res_units": 1, "dropout": 0.0, "norm": "batch"}
    return args | overrides


def test_receptive_field_of_a_plain_conv_stack():
    # two 3x3 convs (RF 5), a stride-2 3x3 conv (RF 7, jump 2), another 3x3 conv (RF 11)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1),
                        nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, padding=1))
    rows, receptive_field, total = models.layer_table(net, (1, 1, 16, 16))
    assert receptive_field == 11
    assert [r.output_shape for r in rows][-1] == (1, 2, 8, 8)
    assert total == sum(p.numel() for p in net.parameters())


def test_receptive_field_through_a_transposed_convolution_grows_on_the_finer_grid():
    # a stride-2 3x3 conv (RF 3, jump 2), then a stride-2 3x3 transposed conv: back on the input grid
    # (jump 1), its 3 taps widen the field by 2 input pixels (RF 5), not by 2 coarse ones (RF 7)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1),
                        nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1))
    _, receptive_field, _ = models.layer_table(net, (1, 1, 16, 16))
    assert receptive_field == 5


def test_unet_output_matches_input_and_size_check_explains_the_fix():
    net = models.build(unet_args())
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 5, 32, 32)
    models.check_input_size(unet_args(), [32, 32])
    with pytest.raises(models.ModelConfigError, match=r"multiple of 4.*\[36, 36\] or \[40, 40\]"):
        models.check_input_size(unet_args(), [38, 38])


def test_mismatched_strides_are_reported():
    with pytest.raises(models.ModelConfigError, match="len\\(model.channels\\) - 1"):
        models.build(unet_args(strides=[2]))


def test_help_for_every_step():
    out = subprocess.run([sys.executable, "-m", "sciconv.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for step in STEPS:
        assert step in out.stdout
        step_help = subprocess.run([sys.executable, "-m", "sciconv.cli", step, "--help"],
                                   capture_output=True, text=True)
        assert step_help.returncode == 0 and "dataset" in step_help.stdout


def test_inspect_prints_shapes_and_stops_on_a_bad_patch(project, capsys):
    assert main(["inspect", "ccd_micro"]) == 0
    out = capsys.readouterr().out
    assert "receptive field" in out and "parameters" in out
    bad = (project / "config/datasets/ccd_micro.yaml").read_text().replace("- 32\n  - 32", "- 30\n  - 30")
    (project / "config/datasets/ccd_micro.yaml").write_text(bad)
    assert main(["inspect", "ccd_micro"]) == 2
    assert "multiple of 4" in capsys.readouterr().err  # strides [1, 2, 2]


def test_config_error_exits_2_with_the_key(project, capsys):
    path = project / "config/datasets/ccd_micro.yaml"
    path.write_text(path.read_text() + "\nlearning_rate: 0.1\n")
    assert main(["ingest", "ccd_micro"]) == 2
    err = capsys.readouterr().err
    assert "ccd_micro.yaml" in err and "learning_rate is not allowed" in err


def test_steps_run_without_snakemake_and_resume_training(project, caplog):
    """simulate..explain through the CLI; a second train resumes from last.pt instead of starting over."""
    import json
    import logging

    caplog.set_level(logging.INFO, logger="sciconv")
    assert main(["run", "ccd_micro", "--device", "cpu", "--threads", "1"]) == 0
    metrics = json.loads((project / "results/ccd_micro/metrics.json").read_text())
    assert metrics["n_test"] >= 1
    # Pretend the job died after epoch 1 of 2: roll the checkpoint back and train again.
    checkpoint_path = project / "results/ccd_micro/model/last.pt"
    state = torch.load(checkpoint_path, weights_only=True)
    state["epoch"], state["history"] = 0, state["history"][:1]
    torch.save(state, checkpoint_path)
    caplog.clear()
    assert main(["train", "ccd_micro", "--device", "cpu", "--threads", "1"]) == 0
    assert any("resuming from" in r.getMessage() and "epoch 2 of 2" in r.getMessage() for r in caplog.records)

    # predict on the raw frames, from the model folder and from the MLflow run
    from astropy.io import fits

    for model, out in (("results/ccd_micro/model", "pred_local"), (f"runs:/{metrics['mlflow_run_id']}", "pred_run")):
        assert main(["predict", "--model", model, "results/ccd_micro/raw/frames", "--out", out,
                     "--device", "cpu"]) == 0
        masks = sorted((project / out).glob("*_mask.fits"))
        assert len(masks) == 12
        with fits.open(masks[0]) as hdul:
            assert hdul[0].data.shape == (64, 64) and hdul[0].data.max() < 5
            assert hdul[0].header["GAIN"] == 2.0  # the source frame's header is kept
        assert len((project / out / "predictions.csv").read_text().splitlines()) == 13


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_bad_inputs_fail_with_every_reason_or_are_skipped_and_listed(project, capsys, policy):
    import csv
    import shutil

    import yaml

    config_path = project / "config/datasets/ccd_micro.yaml"
    cfg = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump(cfg | {"on_bad_input": policy}))
    assert main(["simulate", "ccd_micro"]) == 0
    raw = project / "results/ccd_micro/raw"
    frame0 = raw / "frames/frame_00000.fits"
    frame0.write_bytes(frame0.read_bytes()[:4000])  # truncated
    shutil.copy(raw / "frames/frame_00001.fits", raw / "frames/frame_00002.fits")  # a duplicate image
    status = main(["ingest", "ccd_micro"])
    ingested = project / "results/ccd_micro/ingested.h5"
    if policy == "fail":
        err = capsys.readouterr().err
        assert status == 2 and not ingested.exists()
        assert "frame_00000.fits" in err and "frame_00002.fits: duplicate of" in err
        assert not list(ingested.parent.glob("*.partial"))
    else:
        assert status == 0
        rows = list(csv.DictReader((project / "results/ccd_micro/rejected.csv").open()))
        assert sorted(r["path"].split("/")[-1] for r in rows) == ["frame_00000.fits", "frame_00002.fits"]
        from sciconv.store import StoreReader

        with StoreReader(ingested) as store:
            assert len(store.ids) == 10 and store.attrs["n_rejected"] == 2


def test_training_shows_a_progress_bar_on_a_terminal_only(monkeypatch):
    import io as text_io

    from sciconv.steps.train import progress_bar

    class Terminal(text_io.StringIO):
        def isatty(self):
            return True

    batches = [1, 2, 3]
    monkeypatch.setattr("sys.stderr", text_io.StringIO())
    assert progress_bar(batches, 0, 5) is batches  # a log file: one line per epoch instead
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress_bar(batches, 1, 5)
    assert list(bar) == batches
    bar.close()
    assert "epoch 2/5" in terminal.getvalue() and "batch" in terminal.getvalue()
