"""NIfTI (nibabel): volumes with their affine, reoriented to the closest canonical (RAS+) orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import ReadError, claim, register, register_mask_writer, stored_labels


@register(".nii", ".nii.gz")
def read_nifti(path: Path) -> tuple[np.ndarray, dict]:
    """(C, X, Y, Z): a 3D volume is one channel, the 4th dimension of a 4D file gives the channels.

    Scaling (scl_slope/scl_inter) is applied; the array is reoriented as nibabel's
    as_closest_canonical, and the metadata carry the new affine and the original orientation.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        original = nib.load(str(path))
        # nibabel maps or reads lazily, but get_fdata allocates float32 of the header's shape: check it first
        stored = None if str(path).lower().endswith(".gz") else path.stat().st_size - int(original.header["vox_offset"])
        claim(path, original.header.get_data_shape(), 4, None)
        claim(path, original.header.get_data_shape(), original.header.get_data_dtype().itemsize, stored)
        canonical = nib.as_closest_canonical(original)
        data = np.asarray(canonical.get_fdata(dtype=np.float32))
    except ReadError:  # already names the file and the reason (and is an OSError)
        raise
    except (ImageFileError, OSError, EOFError, ValueError) as err:
        raise ReadError(f"{path}: not a readable NIfTI file ({err})") from err
    if data.ndim == 3:
        image = data[None]
    elif data.ndim == 4:
        image = np.moveaxis(data, -1, 0)
    elif data.ndim == 2:
        image = data[None]
    else:
        raise ReadError(f"{path}: {data.ndim}D NIfTI data; expected 2D, 3D or 4D (channels last)")
    meta = {
        "affine": canonical.affine.tolist(),
        "spacing": [float(z) for z in canonical.header.get_zooms()[:3]],
        "original_orientation": "".join(nib.aff2axcodes(original.affine)),
        "orientation": "".join(nib.aff2axcodes(canonical.affine)),
        # the file's own affine and shape, so a mask predicted on this grid can be written back onto it
        "original_affine": original.affine.tolist(),
        "original_shape": [int(s) for s in original.shape[:3]],
    }
    description = original.header.get("descrip")
    if description is not None and description.size:
        meta["descrip"] = description.item().decode("ascii", errors="replace").strip()
    return np.ascontiguousarray(image), meta


def resized_affine(affine, shape, new_shape) -> np.ndarray:
    """The affine of a grid resampled from shape to new_shape over the same extent (voxel centres
    i' map to (i' + 0.5) * old/new - 0.5), for preprocessing that resizes without giving an affine."""
    scale = np.asarray(shape, float) / np.asarray(new_shape, float)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = (scale - 1) / 2
    return np.asarray(affine, float) @ index_map


@register_mask_writer(".nii", ".nii.gz", onto_source_grid=True)
def write_nifti_mask(mask: np.ndarray, source: Path, meta: dict, grid: dict, target_stem: Path,
                     values: list[int] | None = None, class_names: list[str] | None = None) -> Path:
    """The mask back on the source file's grid and affine, through the preprocessed grid's affine
    (grid['affine']) or, where preprocessing gave none, the read (canonical) grid resized to the mask."""
    affine = grid.get("affine")
    if affine is None:
        import nibabel as nib

        canonical = nib.as_closest_canonical(nib.load(str(source)))
        affine = resized_affine(canonical.affine, canonical.shape[:3], mask.shape)
    return write_mask_on_source(mask, affine, source, target_stem.with_name(target_stem.name + ".nii.gz"), values)


def write_mask_on_source(mask: np.ndarray, mask_affine, source: Path | str, target: Path | str,
                         values: list[int] | None = None) -> Path:
    """Write a class map on a grid with affine mask_affine (world mm) as NIfTI on the source file's own grid.

    The mask is resampled by nearest neighbour through world coordinates, so it lands where it was
    predicted whatever resampling, cropping or reorientation came between; the output has the source's
    affine and axis order, so it overlays the source in any viewer. values maps class index -> stored
    label value (e.g. BraTS 0, 1, 2, 4).
    """
    import nibabel as nib
    from scipy import ndimage

    source_img = nib.load(str(source))
    to_mask_voxels = np.linalg.inv(np.asarray(mask_affine, float)) @ source_img.affine
    # grid-constant, not constant: a voxel centre a rounding error outside the edge keeps its edge value
    on_source = ndimage.affine_transform(mask.astype(np.uint8), to_mask_voxels[:3, :3], to_mask_voxels[:3, 3],
                                         output_shape=source_img.shape[:3], order=0, mode="grid-constant", cval=0)
    on_source = stored_labels(on_source, values)
    out = nib.Nifti1Image(on_source.astype(np.uint8), source_img.affine)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = b"sciconv predicted labels"
    nib.save(out, str(target))
    return Path(target)
