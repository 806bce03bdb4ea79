"""domain: generic: a folder of TIFF images and masks from an unknown instrument, trained end to end."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from sciconv.cli import main
from sciconv.config import ConfigError, load_dataset, load_global


def write_cells(project, n: int = 10) -> None:
    """Bright discs on a noisy, unevenly lit background; masks mark the discs."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (project / "cells" / folder).mkdir(parents=True)
    rows, cols = np.indices((48, 48))
    for i in range(n):
        mask = np.zeros((48, 48), np.uint8)
        for _ in range(3):
            r, c, radius = rng.integers(6, 42), rng.integers(6, 42), rng.integers(3, 6)
            mask[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 1
        image = 1000 + 5 * cols + 400 * mask.astype(np.float64) + rng.normal(0, 30, (48, 48))
        tifffile.imwrite(project / "cells/images" / f"cell_{i}.tif", image.astype(np.uint16))
        tifffile.imwrite(project / "cells/masks" / f"cell_{i}.tif", mask)
    (project / "config/datasets/cells.yaml").write_text(yaml.safe_dump({
        "domain": "generic", "task": "segmentation", "classes": ["background", "cell"],
        "source": {"kind": "files", "layout": "paired", "path": "../../cells"},
        "preprocess": {"size": [32, 32]},
        "model": {"channels": [8, 16, 32], "strides": [2, 2]},
        "train": {"epochs": 3, "patch_size": [32, 32], "batch_size": 4, "patches_per_image": 2,
                  "class_sampling_ratios": [1, 1]},
        "explain": {"n_samples": 1}}))


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """A project whose TIFF dataset was run end to end once; the tests of this module read it."""
    project = tmp_path_factory.mktemp("cells_project")
    (project / "config/datasets").mkdir(parents=True)
    (project / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["cells"], "seed": 7, "device": "cpu"}))
    write_cells(project)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", "config/datasets/cells.yaml", "--device", "cpu", "--threads", "1"]) == 0
    return project


@pytest.fixture
def in_cells(cells, monkeypatch):
    monkeypatch.chdir(cells)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cells


def predict(*args: str) -> int:
    return main(["predict", "--model", "results/cells/model", "--device", "cpu", *args])


def test_generic_segmentation_runs_end_to_end(in_cells):
    metrics = json.loads((in_cells / "results/cells/metrics.json").read_text())
    assert {"dice_cell", "dice_mean", "iou_mean", "baseline_dice_cell", "n_test"} <= set(metrics)
    assert metrics["baseline_dice_cell"] > 0.5  # Otsu finds bright discs on this background
    from sciconv.store import StoreReader

    with StoreReader(in_cells / "results/cells/preprocessed.h5") as store:
        sample = store.sample(store.ids[0])
        assert sample.image.shape == (1, 32, 32) and sample.mask.shape == (32, 32)  # mask resized with the image
        assert set(np.unique(sample.mask)) <= {0, 1}
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0


def test_predict_writes_one_mask_per_input_and_a_row_each(in_cells):
    assert predict("cells/images", "--out", "pred") == 0
    assert len(list((in_cells / "pred").glob("*_mask.npy"))) == 10
    rows = list(csv.DictReader(open(in_cells / "pred/predictions.csv")))
    assert len(rows) == 10 and all(Path(r["mask"]).is_file() for r in rows)
    assert (in_cells / "pred/rejected.csv").read_text().splitlines() == ["path,reason"]
    assert not list((in_cells / "pred").glob(".predict-*"))  # the staging folder is gone


def test_predict_into_a_folder_inside_its_inputs_does_not_predict_its_own_outputs(in_cells):
    folder = in_cells / "inner"
    shutil.copytree(in_cells / "cells/images", folder)
    for _ in range(2):
        assert predict(str(folder), "--out", str(folder / "pred")) == 0
        rows = list(csv.DictReader(open(folder / "pred/predictions.csv")))
        assert len(rows) == 10 and not any("/pred/" in r["file"] for r in rows)


def test_predict_outputs_never_collide_when_inputs_share_a_name(in_cells):
    """a/scan.tif and b/scan.tif, and scan.tif beside scan.png: four inputs, four masks, each its own."""
    images = sorted((in_cells / "cells/images").glob("*.tif"))
    for folder, source in (("a", images[0]), ("b", images[1])):
        (in_cells / "clash" / folder).mkdir(parents=True)
        shutil.copy(source, in_cells / "clash" / folder / "scan.tif")
    from PIL import Image

    Image.fromarray((tifffile.imread(images[2]) // 16).astype(np.uint8)).save(in_cells / "clash/a/scan.png")
    assert predict("clash", "--out", "pred_clash") == 0
    rows = list(csv.DictReader(open(in_cells / "pred_clash/predictions.csv")))
    assert len(rows) == 3 and len({r["mask"] for r in rows}) == 3
    for row in rows:
        alone = in_cells / "alone" / Path(row["file"]).parent.name / Path(row["file"]).name
        assert predict(row["file"], "--out", str(alone)) == 0  # the same input predicted on its own
        (single,) = list(csv.DictReader(open(alone / "predictions.csv")))
        assert np.array_equal(np.load(row["mask"]), np.load(single["mask"])), row


def test_predict_is_all_or_nothing_on_a_bad_file(in_cells, capsys):
    folder = in_cells / "mixed"
    folder.mkdir()
    for source in sorted((in_cells / "cells/images").glob("*.tif"))[:3]:
        shutil.copy(source, folder / source.name)
    (folder / "zz_broken.tif").write_bytes(b"II*\x00 not a tiff")
    out = in_cells / "pred_mixed"
    out.mkdir()
    (out / "predictions.csv").write_text("an earlier run\n")
    assert predict(str(folder), "--out", str(out)) != 0
    error = capsys.readouterr().err
    assert "zz_broken.tif" in error and "nothing was written" in error
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]  # no mask, no staging folder left
    assert (out / "predictions.csv").read_text() == "an earlier run\n"

    assert predict(str(folder), "--out", str(out), "--on-bad-input", "skip") == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [Path(r["file"]).name for r in rows] == ["cell_0.tif", "cell_1.tif", "cell_2.tif"]
    (rejected,) = list(csv.DictReader(open(out / "rejected.csv")))
    assert rejected["path"].endswith("zz_broken.tif") and "without any image" in rejected["reason"]


@pytest.mark.parametrize("name,array,expected", [
    ("colour.png", np.zeros((40, 40, 3), np.uint8), "3 channel(s)"),
    ("volume.npy", np.zeros((8, 40, 40), np.float32), "a 3D image"),
])
def test_predict_refuses_input_that_does_not_fit_the_model_and_says_what_does(in_cells, capsys, name, array,
                                                                               expected):
    folder = in_cells / f"misfit_{name.split('.')[0]}"
    folder.mkdir()
    shutil.copy(sorted((in_cells / "cells/images").glob("*.tif"))[0], folder / "a_good.tif")
    if name.endswith(".png"):
        from PIL import Image

        Image.fromarray(array).save(folder / name)
    else:
        np.save(folder / name, array)
    out = in_cells / f"pred_{folder.name}"
    assert predict(str(folder), "--out", str(out)) != 0
    error = capsys.readouterr().err
    assert expected in error and "the model takes" in error, error
    assert not out.exists() or not list(out.glob("*_mask.npy"))


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
