"""Datasets in the layouts they are published in: nnU-Net / Decathlon raw folders (one file per
channel, dataset.json), NumPy archives of whole splits (MedMNIST), channels in separate files, and
`sciconv sources`, which shows what sciconv sees in a folder before anything is written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from astropy.io import fits

from sciconv.cli import main
from sciconv.store import StoreReader

CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
LABELS = {"background": 0, "edema": 1, "tumour_core": 2}


def write_nnunet_folder(root: Path, n_train: int = 10, n_test: int = 3, test_labels: bool = True,
                        size: int = 24) -> Path:
    """A raw dataset as nnU-Net v2 documents it (documentation/dataset_format.md): dataset.json with
    channel_names, labels (consecutive integers, background 0), numTraining and file_ending;
    imagesTr/{case}_{XXXX}.nii.gz, one file per channel; labelsTr/{case}.nii.gz; imagesTs/ (and
    labelsTs/, which nnU-Net leaves to the user)."""
    rng = np.random.default_rng(0)
    folder = root / "Dataset042_Spheres"
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(float)
    for subset, labels_folder, cases in (("imagesTr", "labelsTr", range(n_train)),
                                         ("imagesTs", "labelsTs", range(n_train, n_train + n_test))):
        (folder / subset).mkdir(parents=True)
        if subset == "imagesTr" or test_labels:
            (folder / labels_folder).mkdir()
        for case in cases:
            centre = rng.uniform(size / 3, 2 * size / 3, 3)
            distance = np.linalg.norm(grid - centre, axis=-1)
            label = np.where(distance < size / 8, 2, np.where(distance < size / 4, 1, 0)).astype(np.uint8)
            name = f"sphere_{case:03d}"
            for channel in range(len(CHANNELS)):
                # each contrast shows the structures differently, as MRI contrasts do
                contrast = (1 + channel) * (label == 1) + (4 - channel) * (label == 2)
                volume = (contrast + rng.normal(0, 0.3, label.shape)).astype(np.float32)
                nib.save(nib.Nifti1Image(volume, affine), folder / subset / f"{name}_{channel:04d}.nii.gz")
            if subset == "imagesTr" or test_labels:
                nib.save(nib.Nifti1Image(label, affine), folder / labels_folder / f"{name}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": CHANNELS, "labels": LABELS,
                                                     "numTraining": n_train, "file_ending": ".nii.gz"}))
    return folder


def write_config(root: Path, name: str, text: str) -> None:
    (root / "config/datasets").mkdir(parents=True, exist_ok=True)
    (root / "config/config.yaml").write_text(yaml.safe_dump({"datasets": [name], "seed": 5, "device": "cpu"}))
    (root / f"config/datasets/{name}.yaml").write_text(text)


@pytest.mark.e2e
def test_an_nnunet_raw_folder_is_ingested_with_its_channels_labels_and_test_set_and_trains(tmp_path, tool_env):
    folder = write_nnunet_folder(tmp_path)
    # classes and their label values come from dataset.json: the YAML names only what sciconv cannot know
    write_config(tmp_path, "spheres", "domain: generic\ntask: segmentation\n"
                 f"source: {{kind: files, layout: nnunet, path: {folder}}}\n"
                 "train: {epochs: 2, patch_size: [16, 16, 16], batch_size: 2}\n"
                 "model: {channels: [8, 16], strides: [2]}\nexplain: {n_samples: 1}\n")
    done = subprocess.run(["sciconv", "run", "spheres"], cwd=tmp_path, env=tool_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results/spheres"
    with StoreReader(results / "ingested.h5") as store:
        assert len(store.ids) == 13
        sample = store.sample("sphere_004")
        assert sample.image.shape == (4, 24, 24, 24)
        # the channels in dataset.json's order: channel c is file sphere_004_000c
        for c in range(4):
            source = nib.load(folder / f"imagesTr/sphere_004_{c:04d}.nii.gz")
            assert np.allclose(sample.image[c], np.asarray(nib.as_closest_canonical(source).dataobj), atol=1e-5)
        assert store.sample_attrs("sphere_004")["meta"]["channel_names"] == list(CHANNELS.values())
    split = json.loads((results / "split.json").read_text())
    assert split["test"] == ["sphere_010", "sphere_011", "sphere_012"]  # imagesTs, as labelsTs exists
    assert len(split["train"]) + len(split["val"]) == 10 and split["val"]
    metrics = json.loads((results / "metrics.json").read_text())
    assert {"dice_edema", "dice_tumour_core", "n_test"} <= set(metrics) and metrics["n_test"] == 3


def test_sources_shows_a_layout_before_anything_is_written(tmp_path, capsys):
    folder = write_nnunet_folder(tmp_path, n_train=4, n_test=2, test_labels=False, size=16)
    (folder / "imagesTr/sphere_002_0003.nii.gz").unlink()
    assert main(["sources", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "layout: nnunet" in out and "channels (4): T1, T1ce, T2, FLAIR" in out
    assert "classes: background=0, edema=1, tumour_core=2" in out
    assert "train: 3" in out and "imagesTs without labelsTs: 2 cases left for `sciconv predict`" in out
    assert "sphere_002: no channel file sphere_002_0003.nii.gz" in out
    assert not list(tmp_path.glob("results")) and not list(folder.glob("*.h5"))


def nnunet_project(tmp_path, monkeypatch, **folder_args):
    folder = write_nnunet_folder(tmp_path, size=16, **folder_args)
    write_config(tmp_path, "spheres", f"domain: generic\ntask: segmentation\n"
                 f"source: {{kind: files, layout: nnunet, path: {folder}}}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


@pytest.mark.parametrize("damage, message", [
    ("channel", "sphere_003: no channel file sphere_003_0002.nii.gz in"),
    ("orphan_label", "sphere_099.nii.gz: a label file with no image (no sphere_099_0000.nii.gz"),
    ("unused_label", "declared classes with no example: cyst"),
    ("unlabelled_image", "sphere_005: no label file sphere_005.nii.gz in"),
])
def test_a_damaged_nnunet_folder_stops_ingest_with_the_reason_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                                 damage, message):
    folder = nnunet_project(tmp_path, monkeypatch)
    if damage == "channel":
        (folder / "imagesTr/sphere_003_0002.nii.gz").unlink()
    elif damage == "orphan_label":
        (folder / "labelsTr/sphere_001.nii.gz").rename(folder / "labelsTr/sphere_099.nii.gz")
    elif damage == "unused_label":
        meta = json.loads((folder / "dataset.json").read_text())
        meta["labels"]["cyst"] = 3
        (folder / "dataset.json").write_text(json.dumps(meta))
    else:
        (folder / "labelsTr/sphere_005.nii.gz").unlink()
    assert main(["ingest", "spheres"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results/spheres/ingested.h5").exists()


def test_under_skip_a_case_missing_a_channel_is_a_rejected_row(tmp_path, monkeypatch):
    folder = nnunet_project(tmp_path, monkeypatch)
    (folder / "imagesTr/sphere_003_0002.nii.gz").unlink()
    path = tmp_path / "config/datasets/spheres.yaml"
    path.write_text(path.read_text() + "on_bad_input: skip\n")
    assert main(["ingest", "spheres"]) == 0
    rejected = (tmp_path / "results/spheres/rejected.csv").read_text().splitlines()
    assert len(rejected) == 2 and "sphere_003" in rejected[1] and "no channel file" in rejected[1]
    with StoreReader(tmp_path / "results/spheres/ingested.h5") as store:
        assert len(store.ids) == 12 and "sphere_003" not in store.ids


def test_yaml_classes_that_contradict_dataset_json_are_a_config_error(tmp_path, monkeypatch, capsys):
    folder = nnunet_project(tmp_path, monkeypatch)
    path = tmp_path / "config/datasets/spheres.yaml"
    path.write_text(path.read_text() + "classes: [background, tumour_core, edema]\n")
    assert main(["ingest", "spheres"]) == 2
    err = capsys.readouterr().err
    assert "key classes" in err and str(folder / "dataset.json") in err and "edema=1" in err


def write_medmnist_like(path: Path, counts=(14, 4, 6), colour: bool = False) -> dict:
    """An archive as MedMNIST ships one: {split}_images (N, 28, 28[, 3]) uint8, {split}_labels (N, 1)."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, (n, 28, 28) + ((3,) if colour else ()), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 4 + 6 * label: 10 + 6 * label, 8:20] = 200  # the class is where the bright bar is
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_an_npz_of_split_arrays_keeps_its_split_exactly(tmp_path, monkeypatch, colour):
    arrays = write_medmnist_like(tmp_path / "bars.npz", colour=colour)
    write_config(tmp_path, "bars", "domain: generic\ntask: classification\nclasses: [top, middle, bottom]\n"
                 f"source: {{kind: files, layout: npz, path: {tmp_path / 'bars.npz'}}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "bars"]) == 0 and main(["split", "bars"]) == 0
    split = json.loads((tmp_path / "results/bars/split.json").read_text())
    assert {k: len(split[k]) for k in ("train", "val", "test")} == {"train": 14, "val": 4, "test": 6}
    assert split["test"] == [f"test_{i:06d}" for i in range(6)]
    with StoreReader(tmp_path / "results/bars/ingested.h5") as store:
        sample = store.sample("val_000002")
        expected = arrays["val_images"][2]
        assert sample.image.shape == ((3, 28, 28) if colour else (1, 28, 28))
        assert np.array_equal(sample.image, np.moveaxis(expected, -1, 0) if colour else expected[None])
        assert store.sample_attrs("val_000002")["label"] == int(arrays["val_labels"][2, 0])


def test_npz_members_without_a_known_split_are_named_in_the_error(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "odd.npz", x_train=np.zeros((3, 8, 8)), y_train=np.zeros(3))
    write_config(tmp_path, "odd", "domain: generic\ntask: classification\nclasses: [a, b]\n"
                 f"source: {{kind: files, layout: npz, path: {tmp_path / 'odd.npz'}}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "odd"]) == 2
    err = capsys.readouterr().err
    assert "x_train, y_train" in err and "train_images" in err


def test_channels_in_separate_files_are_stacked_in_the_declared_order(tmp_path, monkeypatch):
    """Photometric filters of one object in one FITS file each: {id}_{channel}.fits, in class folders."""
    rng = np.random.default_rng(2)
    written = {}
    for cls in ("star", "galaxy"):
        (tmp_path / "sky" / cls).mkdir(parents=True)
        for k in range(3):
            for band in ("i", "g", "r"):  # written out of order: the declared order must win
                data = rng.normal(0, 1, (16, 16)).astype(np.float32)
                fits.PrimaryHDU(data).writeto(tmp_path / "sky" / cls / f"{cls}{k}_{band}.fits")
                written[(f"{cls}{k}", band)] = data
    write_config(tmp_path, "sky", "domain: generic\ntask: classification\nclasses: [star, galaxy]\n"
                 f"source: {{kind: files, layout: folders, path: {tmp_path / 'sky'}, channels: [g, r, i]}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "sky"]) == 0
    with StoreReader(tmp_path / "results/sky/ingested.h5") as store:
        assert sorted(store.ids) == sorted(f"{c}{k}" for c in ("star", "galaxy") for k in range(3))
        sample = store.sample("galaxy1")
        for c, band in enumerate("gri"):
            assert np.array_equal(sample.image[c], written[("galaxy1", band)])
        assert store.sample_attrs("galaxy1")["label"] == 1
