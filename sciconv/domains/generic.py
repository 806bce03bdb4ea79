"""Any instrument: neutral preprocessing for images sciconv has no physics for.

Intensities are scaled per image and channel between two percentiles to [0, 1] (robust to
hot pixels and outliers), optionally resized; augmentation is geometric plus a mild intensity
jitter; the classical baseline is (multi-)Otsu thresholding, the usual first segmentation of
an unknown modality. There is no simulator: sources are the user's files.
"""

from __future__ import annotations

import numpy as np

from sciconv.domains.base import Baseline

TASKS = ("classification", "segmentation", "regression")
CLASS_NAMES = None  # declared per dataset under `classes:`

SCHEMAS = {
    "source": {"type": "object", "properties": {"kind": {"type": "string", "enum": ["files"]}}, "required": ["kind"]},
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "percentiles": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 100},
                            "minItems": 2, "maxItems": 2, "default": [0.5, 99.5]},
            "size": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 4}, "default": None,
                     "description": "resize every image (and its mask, nearest neighbour) to this spatial size"},
            "spacing_mm": {"type": ["array", "null"], "items": {"type": "number", "exclusiveMinimum": 0},
                           "minItems": 2, "maxItems": 3, "default": None,
                           "description": "resample images that carry a spacing (NIfTI, DICOM) to this voxel size; "
                                          "null = the plan's: the median spacing (nnU-Net's rule for anisotropic "
                                          "data); images without one are left on their grid"},
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "flip": {"type": "boolean", "default": True},
            "rotate90": {"type": "boolean", "default": True},
            "intensity": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                          "description": "scale and shift intensities by up to this fraction"},
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "baseline": {"type": "object", "additionalProperties": False, "properties": {}},
}

DEFAULTS = {"train": {"patch_size": [64, 64]}}


def input_channels(cfg: dict) -> int:
    return 1  # unknown until files are read; `sciconv inspect` assumes one channel


NORMALISATION = "per image and channel, clipped between preprocess.percentiles and scaled to [0, 1]"
SPACING_KEY = "spacing_mm"  # null: the planner's target spacing, where the files carry a spacing


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    from skimage.transform import resize

    image = image.astype(np.float32)
    lo, hi = params["percentiles"]
    out = np.empty_like(image)
    for c, channel in enumerate(image):
        low, high = np.percentile(channel, [lo, hi])
        out[c] = np.clip((channel - low) / max(high - low, 1e-6), 0.0, 1.0)
    spacing = meta.get("spacing")
    if params.get("spacing_mm") and spacing and len(spacing) >= out.ndim - 1:
        out, mask = resample(out, mask, spacing[: out.ndim - 1], params["spacing_mm"])
    if params["size"]:
        out = np.stack([resize(channel, params["size"], order=1, preserve_range=True, anti_aliasing=True)
                        for channel in out]).astype(np.float32)
        if mask is not None:
            # nearest neighbour: classes stay classes
            mask = resize(mask, params["size"], order=0, preserve_range=True, anti_aliasing=False).astype(mask.dtype)
    return out, mask, {}


def resample(image: np.ndarray, mask: np.ndarray | None, spacing, target) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (linear) and mask (nearest) from voxels of `spacing` to voxels of `target` (same units)."""
    from skimage.transform import resize

    shape = [max(1, int(round(n * s / t))) for n, s, t in zip(image.shape[1:], spacing, target)]
    if shape == list(image.shape[1:]):
        return image, mask
    image = np.stack([resize(c, shape, order=1, preserve_range=True, anti_aliasing=True) for c in image])
    if mask is not None:
        mask = resize(mask, shape, order=0, preserve_range=True, anti_aliasing=False).astype(mask.dtype)
    return image.astype(np.float32), mask


def augment_specs(params: dict) -> list[dict]:
    out = []
    if params["flip"]:
        out += [{"kind": "flip", "prob": params["prob"], "axis": axis} for axis in (0, 1)]
    if params["rotate90"]:
        out.append({"kind": "rot90", "prob": params["prob"], "axes": [0, 1]})
    if params["intensity"] > 0:
        out += [{"kind": "scale_intensity", "prob": params["prob"], "factor": params["intensity"]},
                {"kind": "shift_intensity", "prob": params["prob"], "offset": params["intensity"]}]
    return out


def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    """Otsu (two classes) or multi-Otsu (more) on the first channel: classes in order of brightness; the
    mask is also the feature vector an image-level task fits its classical model on."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    n_classes = len(cfg.get("classes") or ("below", "above"))  # regression: two brightness classes
    channel = image[0]
    if n_classes == 2:
        mask = (channel > threshold_otsu(channel)).astype(np.uint8)
    else:
        mask = np.digitize(channel, threshold_multiotsu(channel, classes=n_classes)).astype(np.uint8)
    return Baseline(mask=mask, features=mask.ravel().astype(np.float32))
