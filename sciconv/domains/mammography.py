"""Mammograms: rare lesions (masses, microcalcification clusters) in screening views, from DICOM.

Everything mammography-specific lives here: the DICOM simulator, the preprocessing
(VOI window, standard laterality, crop to the breast), the augmentation defaults and
the classical baseline (a multi-scale Laplacian-of-Gaussian blob detector).

The simulator is a projection model. For every pixel it sums the thickness of each material
(adipose, fibroglandular, skin, pectoral muscle, carcinoma, hydroxyapatite) along the ray,
transmits a tube spectrum through them, adds scatter, weighs what an energy-integrating detector
absorbs, draws its noise, and stores the flat-field-corrected log signal, dense tissue bright, as
a "for presentation" digital mammogram. Numbers and sources (see also docs/science.md):
  - Linear attenuation: energy dependence from the elements' Elam tables mixed by weight
    (Hammerstein et al. 1979 tissue compositions, ICRU 44 skin and muscle, hydroxyapatite at
    3.06 g/cm^3), levels at 20 keV as measured by Johns & Yaffe 1987 (Phys Med Biol 32:675):
    adipose 0.456 /cm, fibroglandular 0.802 /cm, infiltrating ductal carcinoma 0.844 /cm. A lesion
    displaces the local tissue mix, so a mass's contrast is a few percent in dense tissue and more
    in fat; a 0.2 mm speck is about 20 /cm against 0.8.
  - Beam: SpekPy 2 spectra (Mo/Mo, Mo/Rh, W/Rh; 24-35 kVp; 1 mm Be window, 2 mm polycarbonate
    paddle), 0.5 keV bins, so beam hardening follows from the transmission itself (first HVLs
    within 2 % of SpekPy's and inside the ACR's range); `spectrum: monochromatic` keeps one energy.
  - Scatter: a smooth field (the primary under the breast spread by a Gaussian of 20 mm sd) with a
    scatter-to-primary ratio of 0.12 per cm of breast without a grid (0.42-0.72 at 3.5-6 cm; 40-85 %
    measured, Barnes & Brezovich 1978), behind a grid passing 73 % of the primary and 13 % of the
    scatter (Xia et al. 2005).
  - Detector: a-Se (200 um, blur from K-fluorescence, Zhao et al. 2003) or CsI (150 um, light spread
    as a Lorentzian fitted to Vedantham et al. 2000's presampling MTF); absorbed energy per photon
    E (1 - exp(-mu t)); quantum noise Gaussian with each pixel's compound-Poisson variance, at the
    fluence that gives the detector's air kerma behind the breast (default 50 uGy; 5.79e6 photons
    per mm^2 per mGy at 20 keV from air's mu_en/rho, NIST); electronic noise equal to the quantum
    noise at 1 uGy (an assumption, not fitted to a published detector).
  - Compressed thickness 3.5-6 cm (FDA VICTRE in-silico trial); the edge of a compressed breast
    is roughly a half cylinder of radius thickness/2, so the path length falls to zero there;
    a skin layer of 1.5 mm is seen edge-on as a bright line.
  - Fibroglandular texture: a Gaussian random field with power spectrum 1/f^beta, beta 3.17 (CC)
    and 3.30 (MLO) measured on mammograms (Chen et al. 2012, Med Phys), mapped to a glandular
    fraction whose mean is the breast density.
  - For Presentation images are processed by the unit; the simulator equalises thickness
    and broad density (subtracting a share of the signal smoothed over ~2.5 cm), as vendors'
    peripheral equalisation does, so small structures keep the display range.
  - Microcalcification clusters: a few to ~20 specks of 0.1-0.5 mm within about a centimetre;
    masses round, oval or spiculated, a few mm to ~2 cm (BI-RADS lexicon descriptors).
  - Screening finds about 5 cancers per 1,000 exams; the demo uses ~10 % positive images to
    train in minutes, a screening config ~1 %.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sciconv.domains.base import Baseline
from scipy import ndimage

from sciconv.domains._mammo_physics import simulate_view, write_dicom

TASKS = ("classification",)
CLASS_NAMES = ["normal", "lesion"]


_pos = {"type": "number", "exclusiveMinimum": 0}
_range = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}

SAMPLE_COUNT_KEY = "n_patients"  # the source key that says how many files the simulator writes

SCHEMAS = {
    "source": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["simulate"]},
            "n_patients": {"type": "integer", "minimum": 2, "default": 60,
                           "description": "each has four views: CC and MLO of both breasts"},
            "prevalence": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.1,
                           "description": "fraction of positive images; a positive patient shows a lesion in both "
                                          "views of one breast"},
            "image_size": {"type": "array", "items": {"type": "integer", "minimum": 64}, "minItems": 2,
                           "maxItems": 2, "default": [256, 208], "description": "rows, columns"},
            "pixel_spacing_mm": {**_pos, "default": 0.6},
            "thickness_cm": {**_range, "default": [3.5, 6.0]},
            "density": {**_range, "default": [0.1, 0.5], "description": "mean fibroglandular fraction per patient"},
            "beta": {**_range, "default": [3.0, 3.3], "description": "texture power-law exponent range"},
            "spectrum": {"type": "string", "enum": ["W/Rh", "Mo/Rh", "Mo/Mo", "monochromatic"], "default": "W/Rh",
                         "description": "the tube's target/filter (SpekPy spectra, beam hardening included), or one "
                                        "energy: effective_energy_kev"},
            "kvp": {"type": "number", "minimum": 24, "maximum": 35, "default": 29.0,
                    "description": "tube voltage (clinical: 26-32 kVp, higher for thicker breasts)"},
            "detector_air_kerma_ugy": {**_pos, "default": 50.0,
                                       "description": "mean air kerma at the detector behind the breast (primary and "
                                                      "scatter, after the grid), in uGy, which automatic exposure "
                                                      "control holds (tens of uGy clinically); the fluence follows"},
            "effective_energy_kev": {"type": "number", "minimum": 10, "maximum": 35, "default": 20.0,
                                     "description": "the single energy of spectrum: monochromatic"},
            "detector_quanta_per_mm2": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                                        "description": "mean quanta reaching the detector behind the breast, per mm^2; "
                                                       "null derives them from detector_air_kerma_ugy (5.8e6 per mm^2 "
                                                       "per mGy at 20 keV)"},
            "detector": {"type": "string", "enum": ["a-Se", "CsI"], "default": "a-Se",
                         "description": "a-Se: direct conversion, blur from K-fluorescence only; CsI: a scintillator "
                                        "whose light spread blurs signal and quantum noise alike"},
            "detector_thickness_um": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                                      "description": "converter thickness; null: 200 um a-Se or 150 um CsI"},
            "electronic_noise_ugy": {"type": "number", "minimum": 0, "default": 1.0,
                                     "description": "additive electronic noise, stated as the detector air kerma at "
                                                    "which it equals the quantum noise; 0 turns it off"},
            "scatter_to_primary_per_cm": {"type": "number", "minimum": 0, "default": 0.12,
                                          "description": "scatter-to-primary ratio without a grid per cm of "
                                                         "compressed breast (0.42-0.72 for 3.5-6 cm; measured "
                                                         "0.4-0.85 clinically); 0 turns scatter off"},
            "scatter_radius_mm": {**_pos, "default": 20.0,
                                  "description": "sd of the Gaussian spreading the scatter field"},
            "grid": {"type": "boolean", "default": True, "description": "an anti-scatter grid in the beam"},
            "grid_primary_transmission": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.73},
            "grid_scatter_transmission": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.13},
            "mass_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                              "description": "share of lesions that are masses (the rest are calcification clusters)"},
            "mass_diameter_mm": {**_range, "default": [6.0, 20.0]},
            "calcification_diameter_mm": {**_range, "default": [0.15, 0.5]},
            "calcifications_per_cluster": {"type": "array", "items": {"type": "integer", "minimum": 1},
                                           "minItems": 2, "maxItems": 2, "default": [5, 20]},
            "equalisation": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8,
                             "description": "For Presentation processing: share of the large-scale signal removed"},
            "equalisation_scale_mm": {**_pos, "default": 25.0},
            "bits_stored": {"type": "integer", "minimum": 12, "maximum": 16, "default": 14},
            "monochrome1_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "window": {"type": "string", "enum": ["voi", "percentile"], "default": "voi",
                       "description": "voi: the file's WindowCenter/Width; percentile: 0.5-99.5 % of the breast"},
            "crop_to_breast": {"type": "boolean", "default": True},
            "size": {"type": "array", "items": {"type": "integer", "minimum": 32}, "minItems": 2, "maxItems": 2,
                     "default": [128, 128]},
            "normalize": {"type": "string", "enum": ["zscore", "none"], "default": "zscore",
                          "description": "zscore: zero mean, unit variance over the breast"},
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "flip_vertical": {"type": "boolean", "default": True},
            "rotate_degrees": {"type": "number", "minimum": 0, "maximum": 30, "default": 8.0},
            "scale": {"type": "number", "minimum": 0, "maximum": 0.3, "default": 0.08},
            "contrast_gamma": {**_range, "default": [0.85, 1.2]},
            "intensity": {"type": "number", "minimum": 0, "maximum": 0.5, "default": 0.08},
            "noise_std": {"type": "number", "minimum": 0, "maximum": 0.5, "default": 0.03},
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "baseline": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "calcification_sigmas_px": {**_range, "default": [0.7, 1.5]},
            "mass_sigmas_px": {**_range, "default": [2.5, 6.0]},
        },
    },
}

DEFAULTS = {
    "model": {"name": "densenet"},
    "train": {"epochs": 20, "batch_size": 16, "learning_rate": 0.001, "imbalance": "weighted_ce"},
    "split": {"val_fraction": 0.2, "test_fraction": 0.25},
    # behind max pooling HiResCAM localises where Grad-CAM's averaged gradients smear (saliency.hirescam)
    "explain": {"n_samples": 3, "method": "hirescam"},
}


# --------------------------------------------------------------------------- simulator
def simulate(src: dict, out_dir, seed: int, progress=None) -> list[dict]:
    """Four views per patient; a positive patient has one lesion seen in both views of one breast."""
    from skimage.io import imsave

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_patients = src["n_patients"]
    n_positive = max(1, int(round(src["prevalence"] * 4 * n_patients / 2)))  # two positive views each
    positive = set(rng.choice(n_patients, size=min(n_positive, n_patients), replace=False).tolist())
    rows = []
    for p in range(n_patients):
        patient = {"thickness_cm": rng.uniform(*src["thickness_cm"]), "density": rng.uniform(*src["density"]),
                   "beta": rng.uniform(*src["beta"])}
        pid = f"P{p:05d}"
        lesion_side = rng.choice(["L", "R"]) if p in positive else None
        lesion_kind = ("mass" if rng.random() < src["mass_fraction"] else "calcifications") if lesion_side else None
        for side in ("L", "R"):
            for view in ("CC", "MLO"):
                lesion = lesion_kind if side == lesion_side else None
                image, mask, thickness_mm = simulate_view(rng, src, view, patient, lesion)
                if side == "R":  # acquired with the chest wall on the right for a right breast
                    image, mask = image[:, ::-1], mask[:, ::-1]
                name = f"{pid}_{side}_{view}"
                write_dicom(out_dir / f"{name}.dcm", image, {
                    "patient_id": pid, "laterality": side, "view": view, "thickness_mm": thickness_mm,
                    "pixel_spacing_mm": src["pixel_spacing_mm"], "bits_stored": src["bits_stored"],
                    # both modality LUTs and both photometric conventions occur in real archives
                    "rescale": (1.0, 0.0) if rng.random() < 0.5 else (0.5, -100.0),
                    "monochrome1": bool(rng.random() < src["monochrome1_fraction"])})
                mask_name = ""
                if lesion:
                    mask_name = f"{name}_mask.png"
                    imsave(out_dir / mask_name, mask.astype(np.uint8), check_contrast=False)
                rows.append({"image": f"{name}.dcm", "label": int(lesion is not None), "group": pid,
                             "mask": mask_name, "lesion": lesion or "", "view": view, "laterality": side})
        if progress:
            progress(p + 1)  # the step's total is the number of patients
    return rows


# --------------------------------------------------------------------------- preprocessing
def input_channels(cfg: dict) -> int:
    return 1


def voi_window(image: np.ndarray, meta: dict, breast: np.ndarray, how: str) -> np.ndarray:
    """Linear VOI LUT (DICOM PS3.3 C.11.2.1.2) to [0, 1]; the file's window, or breast percentiles."""
    centre, width = meta.get("WindowCenter"), meta.get("WindowWidth")
    if how == "voi" and centre is not None and width is not None:
        centre = float(centre[0] if isinstance(centre, list) else centre)
        width = float(width[0] if isinstance(width, list) else width)
        return np.clip((image - (centre - 0.5)) / max(width - 1, 1) + 0.5, 0, 1)
    lo, hi = np.percentile(image[breast] if breast.any() else image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def breast_region(image: np.ndarray) -> np.ndarray:
    """The largest bright component above Otsu's threshold, holes filled: the breast."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    foreground = image > threshold_otsu(image)
    labels = label(foreground)
    if labels.max() == 0:
        return np.ones_like(foreground)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(largest)


NORMALISATION = "detector window, then z-score inside the breast (preprocess.normalize)"


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    """Window, chest wall to the left, crop to the breast, pad to the target aspect, resize, normalise.

    The reader has already applied the modality LUT and turned MONOCHROME1 into MONOCHROME2.
    """
    from skimage.transform import resize

    plane = image[0].astype(np.float32)
    breast = breast_region(plane)
    plane = voi_window(plane, meta, breast, params["window"])
    if meta.get("ImageLaterality", meta.get("Laterality")) == "R":  # standard orientation: chest wall left
        plane, breast = plane[:, ::-1], breast[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    if params["crop_to_breast"] and breast.any():
        rows, cols = np.flatnonzero(breast.any(1)), np.flatnonzero(breast.any(0))
        box = (slice(rows[0], rows[-1] + 1), slice(0, cols[-1] + 1))  # keep the chest wall edge
        plane, breast = plane[box], breast[box]
        mask = mask[box] if mask is not None else None
    target = params["size"]
    # pad (not stretch) to the target aspect ratio, so lesions keep their shape
    height, width = plane.shape
    scale = max(height / target[0], width / target[1])
    pad = ((0, int(round(target[0] * scale)) - height), (0, int(round(target[1] * scale)) - width))
    pad = tuple((0, max(0, p[1])) for p in pad)
    plane, breast = np.pad(plane, pad), np.pad(breast, pad)
    out = resize(plane, target, order=1, preserve_range=True, anti_aliasing=True).astype(np.float32)
    inside = resize(breast.astype(np.float32), target, order=1) > 0.5
    if params["normalize"] == "zscore" and inside.any():
        out = (out - out[inside].mean()) / max(out[inside].std(), 1e-6)
        out[~inside] = out[inside].min()
    if mask is not None:
        # any lesion pixel under a coarse pixel keeps it: nearest neighbour would drop small clusters
        mask = (resize(np.pad(mask.astype(np.float32), pad), target, order=1, anti_aliasing=True) > 0.1)
        mask = mask.astype(np.int64)
    return out[None], mask, {"breast_fraction": float(inside.mean())}


def augment_specs(params: dict) -> list[dict]:
    """Geometric and intensity jitter that keeps microcalcifications intact.

    Never: blurring or smoothing, zooming out, elastic deformation, cutout/erasing or lossy
    compression. Specks of 0.1-0.5 mm span a pixel or less; each of these erases them or
    moves them off the lesion, turning a positive image into a negative one that is still
    labelled positive. Rotations and scalings are small and bilinear.
    """
    prob = params["prob"]
    out = []
    if params["flip_vertical"]:  # top-bottom: the chest wall stays on the left
        out.append({"kind": "flip", "prob": prob, "axis": 0})
    if params["rotate_degrees"] > 0 or params["scale"] > 0:
        out.append({"kind": "affine", "prob": prob, "rotate": math.radians(params["rotate_degrees"]),
                    "scale": params["scale"], "padding": "border"})
    if params["contrast_gamma"][1] > params["contrast_gamma"][0]:
        out.append({"kind": "gamma", "prob": prob, "gamma": list(params["contrast_gamma"])})
    if params["intensity"] > 0:
        out += [{"kind": "scale_intensity", "prob": prob, "factor": params["intensity"]},
                {"kind": "shift_intensity", "prob": prob, "offset": params["intensity"]}]
    if params["noise_std"] > 0:
        out.append({"kind": "noise", "prob": prob, "std": params["noise_std"]})
    return out


# --------------------------------------------------------------------------- baseline
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    """Suspicion score of a classical detector: the strongest scale-normalised LoG blob response in the breast.

    Bright specks (calcifications) and bright blobs (masses) give a strongly negative
    Laplacian of Gaussian; each scale's response is scored in units of its own robust spread
    over the breast (median absolute deviation), and the image's score is the largest.
    """
    params = cfg["baseline"]
    plane = image[0].astype(np.float64)
    tissue = plane > plane.min()
    sigmas = [*np.geomspace(*params["calcification_sigmas_px"], 3), *np.geomspace(*params["mass_sigmas_px"], 4)]
    best = -np.inf
    for sigma in sigmas:
        # the skin line is the strongest edge in the image: stay 2 sigma inside it at each scale
        breast = ndimage.binary_erosion(tissue, iterations=max(1, int(np.ceil(2 * sigma))))
        if not breast.any():
            continue
        response = -sigma**2 * ndimage.gaussian_laplace(plane, sigma)
        values = response[breast]
        spread = 1.4826 * np.median(np.abs(values - np.median(values))) + 1e-9
        best = max(best, float((values.max() - np.median(values)) / spread))
    return Baseline(score=float(best) if np.isfinite(best) else 0.0)
