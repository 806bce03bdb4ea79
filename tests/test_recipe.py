"""The accuracy recipe's parts that need no training: test-time mirroring in the one inference path,
its load-time checks, normalised surface Dice, calibration, and the bootstrap interval."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, shrunk_ccd_config

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


def test_a_fold_out_of_range_or_without_k_folds_is_a_load_time_error(tmp_path):
    cfg = shrunk_ccd_config()
    for split, message in (({"k_folds": 3, "fold": 3}, "key split.fold: 3 is out of range: the folds of "
                                                       "split.k_folds 3 are 0 to 2"),
                           ({"fold": 1}, "key split.fold: 1 needs split.k_folds")):
        path = tmp_path / "ccd_micro.yaml"
        path.write_text(yaml.safe_dump(cfg | {"split": split}))
        with pytest.raises(ConfigError, match=message):
            load_dataset(str(path), load_global(REPO / "config/config.yaml"))


@pytest.mark.e2e
def test_all_folds_train_in_one_snakemake_run_and_their_ensemble_is_evaluated(project, tool_env):
    """ccd_cv_demo's recipe, shrunk: two folds instead of five, one epoch each."""
    cfg = yaml.safe_load((REPO / "config/datasets/ccd_cv_demo.yaml").read_text())
    micro = shrunk_ccd_config(n_frames=12, epochs=1)
    cfg |= {"source": micro["source"], "train": micro["train"], "explain": {"n_samples": 1}}
    cfg["split"]["k_folds"] = 2
    cfg["evaluate"]["bootstrap_samples"] = 200
    (project / "config/datasets/ccd_cv.yaml").write_text(yaml.safe_dump(cfg))
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    (project / "config/config.yaml").write_text(yaml.safe_dump(config | {"datasets": ["ccd_cv"]}))
    run = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project), "--cores", "2"],
                         capture_output=True, text=True, env=tool_env, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    root = project / "results/ccd_cv"
    split = json.loads((root / "split.json").read_text())
    metrics = json.loads((root / "metrics.json").read_text())
    # every non-test frame scored once, by the fold that did not train on it; the ensemble on the test set
    assert metrics["k_folds"] == 2 and metrics["n_cv"] == sum(len(f) for f in split["folds"])
    assert metrics["n_test"] == len(split["test"]) and not set(split["test"]) & set(sum(split["folds"], []))
    assert {"cv_dice_mean", "cv_dice_tritium", "cv_dice_mean_before_postprocessing", "dice_mean", "nsd_mean",
            "dice_mean_ci_low", "dice_mean_ci_high", "baseline_dice_mean"} <= set(metrics)
    ensemble = json.loads((root / "ensemble.json").read_text())
    assert ensemble["members"] == [f"folds/fold_{f}/model/model.pt" for f in range(2)]
    assert set(ensemble["chosen"]["postprocessing"]) <= {"tritium", "other_point", "track", "alpha"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")
    parent = client.get_run(metrics["mlflow_run_id"])
    assert parent.data.tags["k_folds"] == "2" and parent.info.status == "FINISHED"
    assert parent.data.metrics["test_dice_mean"] == pytest.approx(metrics["dice_mean"])
    assert parent.data.metrics["cv_dice_mean"] == pytest.approx(metrics["cv_dice_mean"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"evaluation", "saliency", "plots"}
    folds = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["fold"] for r in folds) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in folds)

    # predict takes the dataset's ensemble: both folds, mirrored, post-processed
    frame = sorted((root / "raw/frames").glob("*.fits"))[0]
    predicted = subprocess.run(["sciconv", "predict", "--model", str(root), str(frame), "--out", "predictions"],
                               cwd=project, capture_output=True, text=True, env=tool_env, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert len((project / "predictions/predictions.csv").read_text().splitlines()) == 2

    # a missing fold: evaluate names it, and the other fold's model stays
    (root / "folds/fold_1/model/model.pt").unlink()
    failed = subprocess.run(["sciconv", "evaluate", "ccd_cv"], cwd=project, capture_output=True, text=True,
                            env=tool_env, timeout=300)
    assert failed.returncode == 2 and "train --fold 1" in failed.stderr
    assert (root / "folds/fold_0/model/model.pt").is_file()


def test_an_ensemble_is_the_mean_of_its_members_probabilities_or_outputs():
    torch.manual_seed(0)
    members = [torch.nn.Conv2d(1, 3, 3, padding=1) for _ in range(3)]
    x = torch.randn(2, 1, 8, 8)
    ensemble = inference.EnsembleNet(members, "probabilities")
    expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    # every inference path applies a softmax to what a network returns: it gets the members' mean back
    torch.testing.assert_close(torch.softmax(ensemble(x), 1), expected)
    # regressors: each member's outputs back in physical units by its own fold's scaler, then the mean
    heads = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)) for _ in range(2)]
    scales, shifts = [[2.0, 10.0], [4.0, 20.0]], [[1.0, -1.0], [3.0, 5.0]]
    regression = inference.EnsembleNet(heads, "outputs", scales, shifts)
    by_hand = sum(h(x) * torch.tensor(s) + torch.tensor(b) for h, s, b in zip(heads, scales, shifts)) / 2
    torch.testing.assert_close(regression(x), by_hand)


def test_post_processing_keeps_only_the_largest_component_of_its_class():
    from sciconv.tasks.segmentation import keep_largest_component, postprocess

    mask = np.zeros((10, 10), np.uint8)
    mask[0:3, 0:3] = 1  # the largest lesion
    mask[6:8, 6:8] = 1  # a smaller one of the same class: removed
    mask[5, 0] = 2      # another class: untouched
    kept = keep_largest_component(mask, 1)
    assert (kept == 1).sum() == 9 and kept[6, 6] == 0 and kept[5, 0] == 2
    volume = np.zeros((6, 6, 6), np.uint8)
    volume[0, 0, 0] = volume[1, 1, 1] = volume[4, 4, 4] = 1  # corner-touching voxels are one component
    assert (keep_largest_component(volume, 1) == 1).sum() == 2
    assert np.array_equal(postprocess(mask, {"edema": "largest_component"}, ["background", "lesion", "edema"]),
                          np.where(mask == 2, 2, mask))  # class 2 has one component: nothing removed
