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


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    from skimage.transform import resize

    image = image.astype(np.float32)
    lo, hi = params["percentiles"]
    out = np.empty_like(image)
    for c, channel in enumerate(image):
        low, high = np.percentile(channel, [lo, hi])
        out[c] = np.clip((channel - low) / max(high - low, 1e-6), 0.0, 1.0)
    if params["size"]:
        out = np.stack([resize(channel, params["size"], order=1, preserve_range=True, anti_aliasing=True)
                        for channel in out]).astype(np.float32)
        if mask is not None:
            # nearest neighbour: classes stay classes
            mask = resize(mask, params["size"], order=0, preserve_range=True, anti_aliasing=False).astype(mask.dtype)
    return out, mask, {}


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
