"""DICOM series written by an independent writer (SimpleITK's GDCM) from a known volume: sciconv
reads the same array and affine as from the NIfTI file SimpleITK writes of that volume, in axial,
sagittal and oblique orientations and whatever order the files are named in."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from sciconv import io

sitk = pytest.importorskip("SimpleITK")


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


# ITK directions (columns: where the x, y, z indices go, in LPS). Sagittal slices stack along
# right-left with the third column against the row x column normal, so the files' own slice order
# runs backwards along the normal the reader sorts by.
DIRECTIONS = {
    "axial": np.eye(3),
    "sagittal": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "oblique": rotation([1.0, 2.0, 0.5], 25.0),
}


def known_volume(direction: np.ndarray):
    rng = np.random.default_rng(7)
    # a different size on every axis, so a transposed read cannot pass
    array = rng.integers(-1000, 3000, (9, 10, 11)).astype(np.int16)  # (z, y, x), as SimpleITK holds it
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((12.5, -30.25, 41.0))
    image.SetDirection(direction.flatten().tolist())
    return image


def write_series(image, folder, file_order, series_uid="1.2.826.0.1.3680043.8.498.1", series_number="3"):
    """One file per slice, the way SimpleITK documents writing a series (its DicomSeriesFromArray
    example): each slice's position and the volume's orientation as tags, GDCM writing the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.8.498.0", "0020|000e": series_uid,
                "0020|0011": series_number, "0020|0013": str(k + 1), "0020|0037": orientation,
                "0020|0052": "1.2.826.0.1.3680043.8.498.9",  # FrameOfReferenceUID, as every scanner writes
                "0020|0032": "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
                "0018|0050": str(image.GetSpacing()[2])}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{file_order[k]}.dcm"))
        writer.Execute(plane)


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
@pytest.mark.parametrize("named", ["in_order", "shuffled"])
def test_a_series_reads_as_the_nifti_of_the_same_volume(tmp_path, orientation, named):
    image = known_volume(DIRECTIONS[orientation])
    depth = image.GetDepth()
    order = list(range(depth)) if named == "in_order" else list(np.random.default_rng(3).permutation(depth))
    write_series(image, tmp_path / "series", [f"IM{i:04d}" for i in order])
    sitk.WriteImage(image, str(tmp_path / "volume.nii.gz"))

    from_series, series_meta = io.read(tmp_path / "series")
    from_nifti, nifti_meta = io.read(tmp_path / "volume.nii.gz")
    assert from_series.shape == from_nifti.shape
    np.testing.assert_array_equal(from_series, from_nifti)
    np.testing.assert_allclose(series_meta["affine"], nifti_meta["affine"], atol=1e-4)
    np.testing.assert_allclose(series_meta["spacing"], nifti_meta["spacing"], atol=1e-5)
    assert series_meta["orientation"] == "RAS"
    # GDCM wrote SpacingBetweenSlices 1 from each 2D slice: the slice step must come from the positions
    assert float(pydicom.dcmread(next((tmp_path / "series").iterdir())).SpacingBetweenSlices) == 1.0
    assert sorted(series_meta["spacing"]) == pytest.approx([0.8, 0.9, 2.5])


def test_mixed_series_in_one_folder_are_told_apart_by_their_uid(tmp_path):
    from sciconv.io.dicom import read_dicom_series, series_in

    scan = known_volume(DIRECTIONS["axial"])
    localiser = known_volume(DIRECTIONS["sagittal"])
    write_series(scan, tmp_path / "export", [f"a{i}" for i in range(scan.GetDepth())], "1.2.3.10", "2")
    write_series(localiser, tmp_path / "export", [f"b{i}" for i in range(localiser.GetDepth())], "1.2.3.20", "1")

    assert list(series_in(tmp_path / "export")) == ["1.2.3.20", "1.2.3.10"]  # by SeriesNumber
    with pytest.raises(io.ReadError, match="holds 2 series.*1.2.3.10"):
        io.read(tmp_path / "export")
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))
    volume, meta = read_dicom_series(tmp_path / "export", "1.2.3.10")
    np.testing.assert_array_equal(volume, io.read(tmp_path / "scan.nii.gz")[0])
    assert meta["SeriesInstanceUID"] == "1.2.3.10"


def write_project(root, name, text):
    (root / "config/datasets").mkdir(parents=True, exist_ok=True)
    (root / "config/config.yaml").write_text(f"datasets: [{name}]\nseed: 5\ndevice: cpu\n")
    (root / f"config/datasets/{name}.yaml").write_text(text)


def test_series_folders_are_samples_in_the_folders_layout(tmp_path, monkeypatch, capsys):
    from sciconv.cli import main
    from sciconv.store import StoreReader

    scans = tmp_path / "scans"
    expected = {}
    for c, (cls, cases) in enumerate((("benign", ["case1", "1.2.840.113619.7"]), ("malignant", ["case2", "export"]))):
        for n, case in enumerate(cases):
            image = known_volume(DIRECTIONS["oblique" if n else "axial"])
            write_series(image, scans / cls / case, [f"s{i}" for i in range(image.GetDepth())], f"1.2.3.{c + 1}{n}")
            sitk.WriteImage(image, str(tmp_path / f"{case}.nii.gz"))
            expected[case] = io.read(tmp_path / f"{case}.nii.gz")[0]
    # an export folder with a second series (a localiser) beside the scan: two samples
    write_series(known_volume(DIRECTIONS["sagittal"]), scans / "malignant/export", [f"loc{i}" for i in range(9)],
                 "1.2.3.99", "1")
    write_project(tmp_path, "heads", "domain: generic\ntask: classification\nclasses: [benign, malignant]\n"
                  f"source: {{kind: files, layout: folders, path: {scans}}}\n")
    monkeypatch.chdir(tmp_path)

    assert main(["sources", "heads"]) == 0
    out = capsys.readouterr().out
    assert "samples: 5" in out and "per class: benign 2, malignant 3" in out and "DICOM series 5" in out
    assert main(["ingest", "heads"]) == 0
    with StoreReader(tmp_path / "results/heads/ingested.h5") as store:
        # a folder named by its UID keeps its whole name; the export's series follow their SeriesNumber
        assert sorted(store.ids) == sorted(["case1", "1.2.840.113619.7", "case2", "export_series1",
                                            "export_series2"])
        np.testing.assert_array_equal(store.sample("1.2.840.113619.7").image, expected["1.2.840.113619.7"])
        np.testing.assert_array_equal(store.sample("export_series2").image, expected["export"])
        assert store.sample_attrs("export_series1")["label"] == 1


def test_a_series_pairs_with_its_nifti_mask_in_the_paired_layout(tmp_path, monkeypatch):
    from sciconv.cli import main
    from sciconv.store import StoreReader

    for k in range(4):
        image = known_volume(DIRECTIONS["sagittal" if k % 2 else "oblique"])
        write_series(image, tmp_path / f"data/images/case{k}", [f"{i}" for i in range(image.GetDepth())],
                     f"1.2.3.{k}")
        labels = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 1000).astype(np.uint8))
        labels.CopyInformation(image)  # the mask on the series' own grid, as a segmentation tool saves it
        (tmp_path / "data/masks").mkdir(exist_ok=True)
        sitk.WriteImage(labels, str(tmp_path / f"data/masks/case{k}.nii.gz"))
    write_project(tmp_path, "lesions", "domain: generic\ntask: segmentation\nclasses: [background, lesion]\n"
                  f"source: {{kind: files, layout: paired, path: {tmp_path / 'data'}}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "lesions"]) == 0
    with StoreReader(tmp_path / "results/lesions/ingested.h5") as store:
        assert sorted(store.ids) == [f"case{k}" for k in range(4)]
        sample = store.sample("case1")
        # image and mask on one grid: the mask is where the image exceeds 1000, voxel for voxel
        np.testing.assert_array_equal(sample.mask, (sample.image[0] > 1000).astype(sample.mask.dtype))


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_a_predicted_mask_goes_back_as_a_dicom_seg_on_the_source_series(tmp_path, orientation):
    hd = pytest.importorskip("highdicom")
    image = known_volume(DIRECTIONS[orientation])
    write_series(image, tmp_path / "series", [f"IM{i}" for i in np.random.default_rng(4).permutation(9)])
    volume, meta = io.read(tmp_path / "series")
    mask = (volume[0] > 1500).astype(np.int64) + (volume[0] > 2500)  # two classes, on sciconv's RAS grid

    written = io.write_mask(mask, tmp_path / "series", tmp_path / "out/scan_mask", meta, {"affine": meta["affine"]},
                            class_names=["background", "bright", "brightest"])
    assert written.name == "scan_mask.dcm"
    seg = pydicom.dcmread(written)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["bright", "brightest"]
    # highdicom reads it back onto each source slice: exactly the mask, slice by slice
    segmentation = hd.seg.segread(written)
    for path in (tmp_path / "series").iterdir():
        source = pydicom.dcmread(path)
        pixels = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
        expected = source.pixel_array
        np.testing.assert_array_equal(pixels[0, ..., 0], (expected > 1500) & (expected <= 2500))
        np.testing.assert_array_equal(pixels[0, ..., 1], expected > 2500)


def test_predict_takes_each_series_as_one_volume_never_slice_by_slice(tmp_path):
    from sciconv.steps.predict import expand_inputs, output_stems

    scan = known_volume(DIRECTIONS["axial"])
    write_series(scan, tmp_path / "in/patient1/1.2.840.5", [f"{i}" for i in range(9)], "1.2.3.1")
    write_series(scan, tmp_path / "in/patient2", [f"a{i}" for i in range(9)], "1.2.3.2", "1")
    write_series(scan, tmp_path / "in/patient2", [f"b{i}" for i in range(9)], "1.2.3.3", "2")
    sitk.WriteImage(scan, str(tmp_path / "in/extra.nii.gz"))

    inputs = expand_inputs([str(tmp_path / "in")])
    assert [(i.path.relative_to(tmp_path / "in").as_posix(), i.series) for i in inputs] == [
        ("extra.nii.gz", None), ("patient1/1.2.840.5", None), ("patient2", "1.2.3.2"), ("patient2", "1.2.3.3")]
    stems = {str(item): stem.as_posix() for item, stem in output_stems(inputs).items()}
    assert sorted(stems.values()) == ["extra_mask", "patient1/1.2.840.5_mask", "patient2_series1_mask",
                                      "patient2_series2_mask"]
