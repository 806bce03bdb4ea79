"""domain: generic: a folder of TIFF images and masks from an unknown instrument, trained end to end."""

import json

import numpy as np
import pytest
import tifffile
import yaml

from sciconv.cli import main
from sciconv.config import ConfigError, load_dataset, load_global


@pytest.fixture
def tiff_dataset(project):
    """Bright discs on a noisy, unevenly lit background; masks mark the discs."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (project / "cells" / folder).mkdir(parents=True)
    rows, cols = np.indices((48, 48))
    for i in range(10):
        mask = np.zeros((48, 48), np.uint8)
        for _ in range(3):
            r, c, radius = rng.integers(6, 42), rng.integers(6, 42), rng.integers(3, 6)
            mask[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 1
        image = 1000 + 5 * cols + 400 * mask.astype(np.float64) + rng.normal(0, 30, (48, 48))
        tifffile.imwrite(project / "cells/images" / f"cell_{i}.tif", image.astype(np.uint16))
        tifffile.imwrite(project / "cells/masks" / f"cell_{i}.tif", mask)
    path = project / "config/datasets/cells.yaml"
    path.write_text(yaml.safe_dump({
        "domain": "generic", "task": "segmentation", "classes": ["background", "cell"],
        "source": {"kind": "files", "layout": "paired", "path": "../../cells"},
        "preprocess": {"size": [32, 32]},
        "model": {"channels": [8, 16, 32], "strides": [2, 2]},
        "train": {"epochs": 3, "patch_size": [32, 32], "batch_size": 4, "patches_per_image": 2,
                  "class_sampling_ratios": [1, 1]},
        "explain": {"n_samples": 1}}))
    return path


def test_generic_segmentation_runs_end_to_end(project, tiff_dataset):
    assert main(["run", str(tiff_dataset), "--device", "cpu", "--threads", "1"]) == 0
    metrics = json.loads((project / "results/cells/metrics.json").read_text())
    assert {"dice_cell", "dice_mean", "iou_mean", "baseline_dice_cell", "n_test"} <= set(metrics)
    assert metrics["baseline_dice_cell"] > 0.5  # Otsu finds bright discs on this background
    from sciconv.store import StoreReader

    with StoreReader(project / "results/cells/preprocessed.h5") as store:
        sample = store.sample(store.ids[0])
        assert sample.image.shape == (1, 32, 32) and sample.mask.shape == (32, 32)  # mask resized with the image
        assert set(np.unique(sample.mask)) <= {0, 1}
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
    assert main(["predict", "--model", "results/cells/model", "cells/images", "--out", "pred", "--device", "cpu"]) == 0
    assert len(list((project / "pred").glob("*_mask.npy"))) == 10


def test_generic_needs_classes_and_has_no_simulator(project):
    g = load_global("config/config.yaml")
    path = project / "config/datasets/x.yaml"
    path.write_text(yaml.safe_dump({"domain": "generic", "task": "segmentation",
                                    "source": {"kind": "files", "layout": "paired", "path": "."}}))
    with pytest.raises(ConfigError, match="key classes: domain 'generic' needs the list of class names"):
        load_dataset(str(path), g)
    path.write_text(yaml.safe_dump({"domain": "generic", "task": "segmentation", "classes": ["a", "b"],
                                    "source": {"kind": "simulate"}}))
    with pytest.raises(ConfigError, match="has no simulator; use kind: files"):
        load_dataset(str(path), g)
    path.write_text(yaml.safe_dump({"domain": "ccd", "task": "segmentation", "classes": ["a", "b"],
                                    "source": {"kind": "simulate"}}))
    with pytest.raises(ConfigError, match="fixes its classes"):
        load_dataset(str(path), g)
