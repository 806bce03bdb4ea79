"""The accuracy recipe's parts that need no training: test-time mirroring in the one inference path,
its load-time checks, normalised surface Dice, calibration, and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from sciconv import inference, metrics
from sciconv.config import ConfigError, load_dataset, load_global


class Lopsided(torch.nn.Module):
    """Not mirror-equivariant: each output pixel is its left neighbour's input (a shift along the last axis)."""

    def forward(self, x):
        return torch.cat([torch.roll(x, 1, dims=-1), -torch.roll(x, 1, dims=-1)], dim=1)


def test_mirroring_averages_every_flip_combination_flipped_back():
    image = np.random.default_rng(0).normal(size=(1, 8, 8)).astype(np.float32)
    net = Lopsided()
    averaged = inference.segment_probabilities(net, torch.from_numpy(image)[None], [8, 8], torch.device("cpu"),
                                               amp=False, mirror_axes=(0, 1))
    by_hand = 0
    for dims in ([], [2], [3], [2, 3]):
        x = torch.from_numpy(image)[None]
        logits = net(x.flip(dims) if dims else x)
        by_hand = by_hand + torch.softmax(logits.flip(dims) if dims else logits, 1)
    torch.testing.assert_close(averaged, by_hand / 4)
    plain = inference.segment_probabilities(net, torch.from_numpy(image)[None], [8, 8], torch.device("cpu"), amp=False)
    assert not torch.allclose(plain, averaged)  # the net is lopsided, so mirroring changes its answer
    assert inference.mirror_combinations((0, 2)) == [(), (0,), (2,), (0, 2)]


def test_image_level_outputs_are_averaged_over_the_mirrors():
    class Corner(torch.nn.Module):  # reads one corner pixel: flips move it
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], 1)

    images = [np.arange(16, dtype=np.float32).reshape(1, 4, 4)]
    out = inference.batched_outputs(Corner(), images, torch.device("cpu"), amp=False, mirror_axes=(0, 1))
    corners = [0.0, 12.0, 3.0, 15.0]  # as is, rows flipped, columns flipped, both
    np.testing.assert_allclose(out.numpy()[0], [np.mean(corners), -np.mean(corners)])


def dataset_with(tmp_path, name: str, **evaluate):
    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    cfg["evaluate"] = evaluate
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_dataset(str(path), load_global(REPO / "config/config.yaml"))


def test_mirroring_takes_the_axes_the_domain_flips_and_refuses_the_others(tmp_path):
    assert dataset_with(tmp_path, "mri_seg_full").cfg["evaluate"] == {
        "tta": "mirror", "tta_axes": [0, 1, 2], "surface_tolerance_mm": None, "bootstrap_samples": 2000}
    assert dataset_with(tmp_path, "mammo_demo").cfg["evaluate"]["tta"] == "none"  # classifiers: off by default
    # naming axes turns mirroring on
    assert dataset_with(tmp_path, "lightcone_demo", tta_axes=[1]).cfg["evaluate"]["tta"] == "mirror"
    with pytest.raises(ConfigError, match=r"key evaluate.tta_axes: axis 2 is not one the lightcone domain's "
                                          r"augmentation flips .*flips 0, 1"):
        dataset_with(tmp_path, "lightcone_demo", tta="mirror", tta_axes=[0, 2])  # the line of sight
    with pytest.raises(ConfigError, match="axis 1 is not one the mammography domain's augmentation flips"):
        dataset_with(tmp_path, "mammo_demo", tta="mirror", tta_axes=[1])  # left-right: the chest wall side


def test_surface_dice_counts_boundary_within_the_tolerance():
    truth = np.zeros((32, 32), bool)
    truth[8:24, 8:24] = True
    shifted = np.roll(truth, 1, axis=1)  # one pixel to the right
    assert metrics.surface_dice(truth, truth, 1.0, [1.0, 1.0]) == pytest.approx(1.0)
    assert metrics.surface_dice(shifted, truth, 1.5, [1.0, 1.0]) == pytest.approx(1.0)
    # at half a pixel's tolerance the shifted left and right edges miss, the top and bottom ones mostly meet
    assert 0.2 < metrics.surface_dice(shifted, truth, 0.5, [1.0, 1.0]) < 0.9
    # in mm: the same one-pixel shift is 2 mm on a 2 mm grid
    assert metrics.surface_dice(shifted, truth, 1.5, [2.0, 2.0]) < metrics.surface_dice(shifted, truth, 1.5, [1.0, 1.0])
    assert np.isnan(metrics.surface_dice(np.zeros_like(truth), np.zeros_like(truth), 1.0, [1.0, 1.0]))
    assert metrics.surface_dice(np.zeros_like(truth), truth, 1.0, [1.0, 1.0]) == 0.0


def test_calibration_of_a_perfect_and_an_overconfident_classifier():
    labels = np.array([0, 0, 1, 1] * 25)
    honest = np.where(labels[:, None] == 1, [0.0, 1.0], [1.0, 0.0])
    assert metrics.calibration_metrics(honest, labels) == {"ece": 0.0, "brier": 0.0}
    # always 90% sure of the positive class, right half of the time: ECE |0.5 - 0.9| = 0.4
    overconfident = np.tile([0.1, 0.9], (100, 1))
    result = metrics.calibration_metrics(overconfident, labels)
    assert result["ece"] == pytest.approx(0.4) and result["brier"] == pytest.approx(0.5 * 0.81 + 0.5 * 0.01)
    three = metrics.calibration_metrics(np.tile([0.2, 0.3, 0.5], (3, 1)), np.array([2, 2, 0]))
    assert three["ece"] == pytest.approx(abs(2 / 3 - 0.5))


def test_the_bootstrap_interval_covers_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.8, 0.1, 12), rng.normal(0.8, 0.1, 480)
    low, high = metrics.bootstrap_interval(lambda idx: small[idx].mean(), len(small), 2000, seed=3)
    assert low < small.mean() < high
    low_l, high_l = metrics.bootstrap_interval(lambda idx: large[idx].mean(), len(large), 2000, seed=3)
    assert (high_l - low_l) < (high - low) / 3  # the width shrinks as 1/sqrt(n): 480/12 = 40, sqrt 6.3
    assert (high_l - low_l) == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(480), rel=0.15)
    assert metrics.bootstrap_interval(lambda idx: small[idx].mean(), 1, 2000, seed=3) == (pytest.approx(np.nan,
                                                                                                        nan_ok=True),) * 2
    # AUROC of a resample with one class is undefined: those resamples are left out, not counted as 0
    labels, scores = np.array([0] * 10 + [1]), np.linspace(0, 1, 11)
    from sklearn.metrics import roc_auc_score

    def auroc(idx):
        return roc_auc_score(labels[idx], scores[idx]) if len(set(labels[idx])) == 2 else float("nan")

    low, high = metrics.bootstrap_interval(auroc, 11, 500, seed=0)
    assert low == high == 1.0
