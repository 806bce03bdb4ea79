"""NIfTI (nibabel): volumes with their affine, reoriented to the closest canonical (RAS+) orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import ReadError, register


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
        canonical = nib.as_closest_canonical(original)
        data = np.asarray(canonical.get_fdata(dtype=np.float32))
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
    }
    return np.ascontiguousarray(image), meta
