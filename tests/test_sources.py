"""Bring your own files: layouts in the dataset YAML become ingested samples, paths relative to the YAML."""

import csv

import numpy as np
import pytest
import yaml

from sciconv import io
from sciconv.cli import main
from sciconv.config import ConfigError, load_dataset, load_global, schema_defaults
from sciconv.domains import ccd
from sciconv.store import StoreReader


@pytest.fixture
def user_frames(tmp_path):
    """A user's folder of CCD frames and masks (FITS), written by the simulator as any detector code would."""
    src = schema_defaults(ccd.SCHEMAS["source"]) | {"n_frames": 6, "frame_size": [32, 32]}
    src["events_per_frame"] = {"tritium": 6, "xray": 4, "muon": 1, "electron": 1, "alpha": 1}
    ccd.simulate(src, tmp_path / "lab" / "run1", seed=3)
    return tmp_path / "lab" / "run1"


def minimal_yaml(project, source):
    """Only domain, task and source: every other section takes its defaults."""
    path = project / "config" / "datasets" / "my_ccd.yaml"
    path.write_text(yaml.safe_dump({"domain": "ccd", "task": "segmentation", "source": source}))
    return path


def test_paired_folders_relative_to_the_yaml(project, user_frames):
    # relative to config/datasets/, not to the working directory (from which it would miss)
    path = minimal_yaml(project, {"kind": "files", "layout": "paired", "path": "../../lab/run*",
                                  "images": "frames", "masks": "masks"})
    assert main(["ingest", str(path)]) == 0
    with StoreReader(project / "results/my_ccd/ingested.h5") as store:
        assert len(store.ids) == 6
        sample = store.sample(store.ids[0])
        assert sample.image.shape == (1, 32, 32) and sample.mask.shape == (32, 32)
        assert sample.attrs["meta"]["GAIN"] == 2.0  # the FITS header travels as metadata


def test_manifest_layout_and_forced_format(project, user_frames):
    for f in (user_frames / "frames").iterdir():  # files from a controller that writes no suffix
        f.rename(f.with_suffix(""))
    with open(user_frames / "list.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "group"])
        for i in range(6):
            writer.writerow([f"frames/frame_{i:05d}", f"masks/frame_{i:05d}.fits", f"night{i % 2}"])
    path = minimal_yaml(project, {"kind": "files", "layout": "manifest", "manifest": str(user_frames / "list.csv"),
                                  "format": "fits"})
    assert main(["ingest", str(path)]) == 0
    assert main(["split", str(path)]) == 0
    with StoreReader(project / "results/my_ccd/ingested.h5") as store:
        assert {store.sample_attrs(i)["group"] for i in store.ids} == {"night0", "night1"}


def test_missing_mask_is_a_bad_input(project, user_frames, capsys):
    (user_frames / "masks/frame_00003.fits").unlink()
    path = minimal_yaml(project, {"kind": "files", "layout": "paired", "path": str(user_frames),
                                  "images": "frames"})
    assert main(["ingest", str(path)]) == 2
    assert "frame_00003.fits: no mask named frame_00003" in capsys.readouterr().err


def test_files_source_keys_are_validated(project):
    path = minimal_yaml(project, {"kind": "files", "layout": "tree", "path": "x"})
    with pytest.raises(ConfigError, match="source.layout: 'tree' is not one of the allowed values: folders"):
        load_dataset(str(path), load_global("config/config.yaml"))
    path = minimal_yaml(project, {"kind": "download"})
    with pytest.raises(ConfigError, match="source.kind: 'download' is not one of the allowed values: simulate, files"):
        load_dataset(str(path), load_global("config/config.yaml"))


def test_sample_ids_stay_unique_across_folders():
    from sciconv.steps.ingest import sample_ids

    rows = [{"image": p} for p in ("/d/a/x.fits", "/d/b/x.fits", "/d/b/y.fits")]
    assert sample_ids(rows) == ["a__x", "b__x", "b__y"]
    assert sample_ids([{"image": "/d/a/x.fits"}, {"image": "/d/a/y.fits"}]) == ["x", "y"]
    assert np.unique(sample_ids(rows)).size == 3
    # a layout's own ids (nnU-Net cases, archive items) win over file names
    assert sample_ids([{"image": "/d/c_0000.nii.gz", "id": "c"}, {"image": "/d/e_0000.nii.gz", "id": "e"}]) == ["c", "e"]


def _corrupt(frames, masks, case):
    """Make frame_00001 bad in one way; return the reason ingest must give."""
    from astropy.io import fits

    image, mask = frames / "frame_00001.fits", masks / "frame_00001.fits"
    if case == "nan":
        fits.PrimaryHDU(np.full((32, 32), np.nan, np.float32)).writeto(image, overwrite=True)
        return "NaN or Inf"
    if case == "shape":
        fits.PrimaryHDU(np.zeros((16, 32), np.uint8)).writeto(mask, overwrite=True)
        return "mask shape (16, 32) differs"
    if case == "labels":
        fits.PrimaryHDU(np.full((32, 32), 9, np.uint8)).writeto(mask, overwrite=True)
        return "outside the 5 declared classes"
    if case == "dimensionality":
        fits.PrimaryHDU(np.zeros((3, 32, 32), np.float32)).writeto(image, overwrite=True)
        fits.PrimaryHDU(np.zeros((3, 32, 32), np.uint8)).writeto(mask, overwrite=True)
        return "mixed dimensionality"
    if case == "tiny":
        fits.PrimaryHDU(np.zeros((1, 1), np.float32)).writeto(image, overwrite=True)
        fits.PrimaryHDU(np.zeros((1, 1), np.uint8)).writeto(mask, overwrite=True)
        return "image is 1 x 1 pixels; sciconv needs at least 8 along its two longest axes"
    if case == "unknown format":
        image.rename(image.with_suffix(".xyz"))
        return "no reader for files ending in '.xyz'"
    raise ValueError(case)


@pytest.mark.parametrize("policy", ["fail", "skip"])
@pytest.mark.parametrize("case", ["nan", "shape", "labels", "dimensionality", "tiny", "unknown format"])
def test_each_bad_input_under_each_policy(project, user_frames, capsys, case, policy):
    reason = _corrupt(user_frames / "frames", user_frames / "masks", case)
    path = minimal_yaml(project, {"kind": "files", "layout": "paired", "path": str(user_frames), "images": "frames"})
    cfg = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(cfg | {"on_bad_input": policy}))
    status = main(["ingest", str(path)])
    ingested = project / "results/my_ccd/ingested.h5"
    if policy == "fail":
        assert status == 2 and not ingested.exists()
        assert reason in capsys.readouterr().err
    else:
        assert status == 0
        rows = list(csv.DictReader((project / "results/my_ccd/rejected.csv").open()))
        assert len(rows) == 1 and reason in rows[0]["reason"] and "frame_00001" in rows[0]["path"]
        with StoreReader(ingested) as store:
            assert len(store.ids) == 5


def test_class_without_example_and_empty_dataset(project, user_frames, capsys):
    path = minimal_yaml(project, {"kind": "files", "layout": "paired", "path": str(user_frames), "images": "frames"})
    from astropy.io import fits

    for mask in (user_frames / "masks").iterdir():  # no alpha anywhere
        data = fits.getdata(mask)
        fits.PrimaryHDU(np.where(data == ccd.ALPHA, 0, data).astype(np.uint8)).writeto(mask, overwrite=True)
    assert main(["ingest", str(path)]) == 2
    assert "declared classes with no example: alpha" in capsys.readouterr().err
    for frame in (user_frames / "frames").iterdir():
        frame.write_bytes(b"not a fits file")
    assert main(["ingest", str(path)]) == 2
    assert "no usable input among 6 files" in capsys.readouterr().err


def test_hdf5_files_with_configured_image_mask_and_label_paths(project, user_frames):
    """One HDF5 file per sample, parts at the dataset paths the config names; label as an attribute."""
    import h5py
    from astropy.io import fits

    folder = project / "h5data"
    folder.mkdir()
    for frame in sorted((user_frames / "frames").iterdir()):
        with h5py.File(folder / f"{frame.stem}.h5", "w") as f:
            f.create_dataset("detector/adu", data=io.read(frame)[0][0])  # the exposed pixels, without overscan
            f.create_dataset("truth/classes", data=fits.getdata(user_frames / "masks" / frame.name))
            f["detector/adu"].attrs["GAIN"] = 2.0
    with open(folder / "list.csv", "w") as handle:
        handle.write("image,group\n" + "".join(f"{p.name},g{i}\n" for i, p in enumerate(sorted(folder.glob("*.h5")))))
    path = minimal_yaml(project, {"kind": "files", "layout": "manifest", "manifest": str(folder / "list.csv"),
                                  "hdf5": {"image": "detector/adu", "mask": "truth/classes"}})
    assert main(["ingest", str(path)]) == 0
    with StoreReader(project / "results/my_ccd/ingested.h5") as store:
        sample = store.sample(store.ids[0])
        expected = fits.getdata(user_frames / "masks" / "frame_00000.fits")
        np.testing.assert_array_equal(sample.mask, expected)
        assert sample.attrs["meta"]["GAIN"] == 2.0 and sample.attrs["meta"]["dataset"] == "detector/adu"


def test_hdf5_label_from_attribute():
    import tempfile
    from pathlib import Path

    import h5py

    from sciconv.io.arrays import read_hdf5_sample

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=np.zeros((4, 4)))
            f.attrs["diagnosis"] = "malignant"
        image, _, mask, label = read_hdf5_sample(path, label="diagnosis")
        assert image.shape == (1, 4, 4) and mask is None and label == "malignant"
