"""The HDF5 store layout, the split, and the segmentation metrics."""

import json

import h5py
import numpy as np
import pytest

from sciconv.metrics import ConfusionCounts, segmentation_metrics
from sciconv.steps.split import split_groups
from sciconv.store import Sample, StoreReader, StoreWriter


def test_store_round_trip_and_documented_layout(tmp_path):
    path = tmp_path / "ingested.h5"
    with StoreWriter(path, domain="ccd", task="segmentation", class_names=["background", "a"]) as w:
        w.add(Sample("s1", np.ones((1, 4, 5), np.float32), np.zeros((4, 5), np.uint8),
                     {"source": "x.fits", "sha256": "ab", "meta": json.dumps({"GAIN": 2.0})}))
    with h5py.File(path) as f:  # the layout README.md documents, read with plain h5py
        assert f["samples/s1/image"].shape == (1, 4, 5)
        assert f["samples/s1/image"].compression == "gzip"
        assert json.loads(f.attrs["class_names"]) == ["background", "a"]
        assert f.attrs["domain"] == "ccd" and "sciconv_version" in f.attrs
    with StoreReader(path) as r:
        sample = r.sample("s1")
        assert sample.attrs["meta"] == {"GAIN": 2.0}
        assert sample.mask.shape == (4, 5)


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "ingested.h5"
    with pytest.raises(RuntimeError):
        with StoreWriter(path, domain="ccd") as w:
            w.add(Sample("s1", np.ones((1, 2, 2))))
            raise RuntimeError("killed")
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_split_is_deterministic_grouped_and_fills_every_set():
    groups = {f"g{i}": ("rare" if i % 10 == 0 else "common") for i in range(50)}
    a = split_groups(groups, 0.15, 0.2, seed=3)
    assert a == split_groups(groups, 0.15, 0.2, seed=3)
    assert a != split_groups(groups, 0.15, 0.2, seed=4)
    assert sorted(sum(a.values(), [])) == sorted(groups)  # every group once
    for name in ("train", "val", "test"):
        assert any(groups[g] == "rare" for g in a[name]), name  # stratified: the rare stratum everywhere
    assert len(a["test"]) == 10 and len(a["val"]) == 8  # 20% and 15% of 50, rounded per stratum


def test_pooled_dice_and_iou():
    truth = np.array([[0, 1, 1, 2]])
    prediction = np.array([[0, 1, 0, 2]])
    counts = ConfusionCounts(3)
    counts.update(prediction, truth)
    metrics = segmentation_metrics(counts, ["bg", "a", "b"])
    assert metrics["dice_a"] == pytest.approx(2 / 3)
    assert metrics["dice_b"] == 1.0
    assert metrics["dice_mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["iou_mean"] == pytest.approx((0.5 + 1) / 2)
    empty = ConfusionCounts(3)
    empty.update(np.zeros((2, 2)), np.zeros((2, 2)))
    assert np.isnan(segmentation_metrics(empty, ["bg", "a", "b"])["dice_a"])  # absent class: undefined, not 0 or 1


def test_kfold_deals_every_group_once_and_stratifies():
    from sciconv.steps.split import kfold_groups

    groups = {f"g{i}": ("rare" if i < 5 else "common") for i in range(23)}
    folds = kfold_groups(groups, 5, seed=1)
    assert sorted(sum(folds, [])) == sorted(groups)
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    assert all(sum(groups[g] == "rare" for g in fold) == 1 for fold in folds)  # one rare group per fold
    assert folds == kfold_groups(groups, 5, seed=1)


def test_split_step_with_folds_keeps_groups_whole(project):
    import yaml

    from sciconv.cli import main

    path = project / "config/datasets/ccd_micro.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["split"] = {"k_folds": 3, "fold": 1}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["simulate", "ccd_micro"]) == 0 and main(["ingest", "ccd_micro"]) == 0
    assert main(["split", "ccd_micro"]) == 0
    split = json.loads((project / "results/ccd_micro/split.json").read_text())
    assert split["k_folds"] == 3 and split["val"] == split["folds"][1]
    assert sorted(split["train"] + split["val"]) == sorted(sum(split["folds"], []))
    assert not set(split["test"]) & set(split["train"] + split["val"])


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_the_rank_auroc_equals_scikit_learns_with_ties(n_classes):
    from sklearn.metrics import roc_auc_score

    from sciconv.metrics import auroc

    rng = np.random.default_rng(n_classes)
    probabilities = np.round(rng.dirichlet(np.ones(n_classes), 400), 1) + 1e-3  # coarse: many ties
    probabilities /= probabilities.sum(1, keepdims=True)
    labels = rng.integers(0, n_classes, 400)
    expected = (roc_auc_score(labels, probabilities[:, 1]) if n_classes == 2 else
                roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    assert auroc(probabilities, labels) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(auroc(probabilities, np.zeros(400, dtype=int)))
