"""Predicted masks of DICOM series written back as DICOM Segmentation objects (highdicom), the form
PACS viewers, 3D Slicer and OHIF overlay on the source series; NIfTI on the series' grid where the
`dicom-seg` extra is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import SERIES_FOLDER, register_mask_writer, stored_labels
from sciconv.io.dicom import closest_canonical, series_files, series_grid

SEG_EXTRA = "sciconv[dicom-seg]"
PRIVATE_SCHEME = "99SCICONV"  # DICOM's form for a coding scheme of one's own (PS3.16 8.2): "99" + a name


def mask_on_series(mask: np.ndarray, grid: dict, datasets: list) -> tuple[np.ndarray, list]:
    """The class map resampled (nearest neighbour, through world coordinates) from the grid it was
    predicted on onto the series' own slices, as (slice, row, column) in slice-position order."""
    from scipy import ndimage

    from sciconv.io.nifti import resized_affine

    ordered, affine = series_grid(datasets)
    shape = (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns))
    mask_affine = grid.get("affine")
    if mask_affine is None:  # preprocessing resized the read (RAS) volume without giving an affine
        canonical, canonical_affine, _ = closest_canonical(np.zeros(shape, np.uint8), affine)
        mask_affine = resized_affine(canonical_affine, canonical.shape, mask.shape)
    to_mask = np.linalg.inv(np.asarray(mask_affine, float)) @ affine
    # grid-constant, not constant: a voxel centre a rounding error outside the edge keeps its edge value
    on_series = ndimage.affine_transform(mask.astype(np.uint8), to_mask[:3, :3], to_mask[:3, 3], output_shape=shape,
                                         order=0, mode="grid-constant", cval=0)
    return on_series, ordered


@register_mask_writer(SERIES_FOLDER, onto_source_grid=True)
def write_dicom_seg(mask: np.ndarray, source: Path, meta: dict, grid: dict, target_stem: Path,
                    values: list[int] | None = None, class_names: list[str] | None = None) -> Path:
    """A DICOM SEG (binary segments, one per foreground class, named by the class) referencing the
    source series' instances, in its frame of reference; segment numbers are the class indices."""
    import pydicom

    series = meta.get("SeriesInstanceUID") or grid.get("series")
    datasets = [pydicom.dcmread(f) for f in series_files(source, series)]
    on_series, ordered = mask_on_series(mask, grid, datasets)
    try:
        import highdicom as hd
    except ImportError:
        return _write_nifti_on_series(on_series, ordered, target_stem, values, source)
    from pydicom.sr.codedict import codes

    import sciconv

    n_classes = max(len(class_names or []), int(on_series.max()) + 1, 2)
    names = list(class_names or [f"class {i}" for i in range(n_classes)])
    algorithm = hd.AlgorithmIdentificationSequence(name="sciconv", family=codes.cid7162.ArtificialIntelligence,
                                                   version=sciconv.__version__)
    segments = [hd.seg.SegmentDescription(
        segment_number=index, segment_label=names[index][:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=hd.sr.CodedConcept(str(values[index] if values else index), PRIVATE_SCHEME,
                                                   names[index][:64]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for index in range(1, n_classes)]
    seg = hd.seg.Segmentation(
        source_images=ordered, pixel_array=on_series, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=9000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="sciconv", manufacturer_model_name="sciconv", software_versions=sciconv.__version__,
        device_serial_number="none", content_label="SCICONV", content_description="sciconv predicted labels",
        omit_empty_frames=bool(on_series.any()))  # a SEG needs one frame even when nothing was found
    target = target_stem.with_name(target_stem.name + ".dcm")
    seg.save_as(target)
    return target


def _write_nifti_on_series(on_series: np.ndarray, ordered: list, target_stem: Path, values, source: Path) -> Path:
    """Without highdicom: the mask as NIfTI on the series' grid (read as sciconv reads the series)."""
    import nibabel as nib

    from sciconv.runtime import log

    _, affine = series_grid(ordered)
    canonical, canonical_affine, _ = closest_canonical(stored_labels(on_series, values), affine)
    target = target_stem.with_name(target_stem.name + ".nii.gz")
    nib.save(nib.Nifti1Image(canonical, canonical_affine), str(target))
    log.warning("%s: wrote the mask as NIfTI on the series' grid; install %s to write a DICOM SEG that "
                "references the series", source, SEG_EXTRA)
    return target
