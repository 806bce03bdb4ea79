"""Mammograms: rare lesions (masses, microcalcification clusters) in screening views, from DICOM.

Everything mammography-specific lives here: the DICOM simulator, the preprocessing
(VOI window, standard laterality, crop to the breast), the augmentation defaults and
the classical baseline (a multi-scale Laplacian-of-Gaussian blob detector).

The simulator is a projection model. For every pixel it forms the attenuation line
integral A = sum(mu_i * t_i) through a compressed breast at about 20 keV, draws quantum
noise on the transmitted photons N0 exp(-A), and stores the log signal, dense tissue
bright, as a "for presentation" digital mammogram. Numbers and sources (see also
shared/science.md):
  - Linear attenuation at 20 keV: adipose 0.456 /cm, fibroglandular 0.802 /cm, infiltrating
    ductal carcinoma 0.844 /cm (Johns & Yaffe 1987, Phys Med Biol 32:675). A lesion displaces
    the local tissue mix, so a mass's contrast, (0.844 - mu_local) /cm times its depth, is a few
    percent in dense tissue (2-8 % for 0.5-2 cm in pure glandular tissue) and more in fat. Calcifications (hydroxyapatite): about
    25 /cm at 20 keV, an estimate from its elements' mass attenuation (NIST XCOM), approximate.
  - Compressed thickness 3.5-6 cm (FDA VICTRE in-silico trial); the edge of a compressed breast
    is roughly a half cylinder of radius thickness/2, so the path length falls to zero there;
    a skin layer of 1.5 mm is seen edge-on as a bright line.
  - Fibroglandular texture: a Gaussian random field with power spectrum 1/f^beta, beta 3.17 (CC)
    and 3.30 (MLO) measured on mammograms (Chen et al. 2012, Med Phys), mapped to a glandular
    fraction whose mean is the breast density.
  - Quantum noise: Poisson, with about 1e4 quanta per mm^2 behind the breast (the order of
    magnitude of a screening exposure; approximate), so 0.1 mm specks drown and 0.5 mm ones show.
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
from scipy import ndimage, special

TASKS = ("classification",)
CLASS_NAMES = ["normal", "lesion"]

MU_ADIPOSE, MU_GLANDULAR, MU_CARCINOMA = 0.456, 0.802, 0.844  # /cm at 20 keV, Johns & Yaffe 1987
MU_CALCIFICATION = 25.0  # /cm, hydroxyapatite at 20 keV (approximate, from NIST XCOM elements)
MU_MUSCLE = 0.85  # /cm, pectoralis, close to glandular tissue
SKIN_MM = 1.5
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation

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
            "detector_quanta_per_mm2": {**_pos, "default": 10000.0,
                                        "description": "mean quanta reaching the detector behind the breast, per "
                                                       "mm^2 (automatic exposure control sets the exposure for this)"},
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
def power_law_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with power spectrum ~ 1/f^beta."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf  # no mean component
    amplitude = f ** (-beta / 2)
    noise = rng.standard_normal(shape)
    field = np.fft.irfft2(np.fft.rfft2(noise) * amplitude, s=shape)
    return (field - field.mean()) / field.std()


def glandular_fraction(field: np.ndarray, density: float, steepness: float = 1.5) -> np.ndarray:
    """Phi(k z + q) in [0, 1] with mean exactly `density` over z ~ N(0, 1): Phi's Gaussian identity."""
    q = special.ndtri(density) * math.sqrt(1 + steepness**2)
    return special.ndtr(steepness * field + q)


def path_length_cm(distance_mm: np.ndarray, thickness_cm: float) -> np.ndarray:
    """Chord through a half-cylinder edge of radius T/2: 2 sqrt(2 R d - d^2) inside R of the edge, T beyond."""
    radius = thickness_cm * 10 / 2
    d = np.clip(distance_mm, 0, radius)
    return np.where(distance_mm <= 0, 0.0, 2 * np.sqrt(np.maximum(2 * radius * d - d**2, 0))) / 10


def breast_geometry(rng: np.random.Generator, shape: tuple[int, int], view: str) -> tuple[np.ndarray, np.ndarray]:
    """(breast mask, pectoral mask), chest wall at column 0: a half ellipse; MLO adds the pectoral triangle."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    depth = rng.uniform(0.6, 0.85) * shape[1]  # chest wall to nipple
    half_height = rng.uniform(0.36, 0.46) * shape[0]
    centre = shape[0] * (0.5 if view == "CC" else rng.uniform(0.52, 0.6))
    breast = (cols / depth) ** 2 + ((rows - centre) / half_height) ** 2 <= 1
    pectoral = np.zeros(shape, bool)
    if view == "MLO":
        # the muscle runs from the top of the chest wall diagonally into the breast
        top_width, height = rng.uniform(0.25, 0.4) * shape[1], rng.uniform(0.45, 0.65) * shape[0]
        pectoral = cols / top_width + rows / height <= 1
        breast |= pectoral & (rows < centre)
    return breast, pectoral


def lesion_centre(rng, breast: np.ndarray, gland: np.ndarray, margin_px: int) -> tuple[int, int]:
    """Where a lesion sits: anywhere in the breast interior.

    Uniform, not weighted by glandular tissue: weighting would make "dense here" itself a cue
    for "lesion here", which a classifier learns instead of the lesion.
    """
    inside = np.argwhere(ndimage.binary_erosion(breast, iterations=margin_px))
    while not len(inside) and margin_px > 0:  # a small breast: move in less far from the skin
        margin_px //= 2
        inside = np.argwhere(ndimage.binary_erosion(breast, iterations=margin_px) if margin_px else breast)
    if not len(inside):
        raise ValueError("the simulated breast is empty; increase source.image_size")
    cy, cx = inside[rng.integers(len(inside))]
    return int(cy), int(cx)


def add_mass(rng, shape, spacing_mm, breast, gland, mu_local, src) -> tuple[np.ndarray, np.ndarray]:
    """Extra attenuation (line integral) of a mass displacing the local tissue, and its mask.

    Round, oval or spiculated. Its contrast is (mu_carcinoma - mu_local) times its depth: a few
    percent where the tissue is dense, tens of percent in fat, as in real mammograms.
    """
    cy, cx = lesion_centre(rng, breast, gland, int(12 / spacing_mm))
    excess = MU_CARCINOMA - mu_local[cy, cx]
    diameter = rng.uniform(*src["mass_diameter_mm"]) / spacing_mm
    shape_kind = rng.choice(["round", "oval", "spiculated"])
    aspect = 1.0 if shape_kind == "round" else rng.uniform(1.3, 1.8)
    angle = rng.uniform(0, np.pi)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    dy, dx = rows - cy, cols - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / (diameter / 2 * math.sqrt(aspect))
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (diameter / 2 / math.sqrt(aspect))
    r2 = u**2 + v**2
    depth_cm = diameter * spacing_mm / 10 * np.sqrt(np.clip(1 - r2, 0, None))  # chord through an ellipsoid
    extra = excess * depth_cm
    mask = r2 <= 1
    if shape_kind == "spiculated":
        for _ in range(rng.integers(6, 14)):  # thin radiating strands of tumour tissue
            theta, length = rng.uniform(0, 2 * np.pi), diameter * rng.uniform(0.6, 1.2)
            t = np.linspace(diameter / 2 * 0.8, diameter / 2 + length, 64)
            ys, xs = (cy + t * np.sin(theta)).astype(int), (cx + t * np.cos(theta)).astype(int)
            keep = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
            strand = np.zeros(shape, bool)
            strand[ys[keep], xs[keep]] = True
            extra += excess * 0.3 * strand  # ~3 mm deep strands
            mask |= ndimage.binary_dilation(strand)
    return extra, mask & breast


def add_calcifications(rng, shape, spacing_mm, breast, gland, mu_local, src) -> tuple[np.ndarray, np.ndarray]:
    """Extra attenuation of a cluster of specks, area-averaged onto pixels, and the cluster outline."""
    cy, cx = lesion_centre(rng, breast, gland, int(10 / spacing_mm))
    n = rng.integers(src["calcifications_per_cluster"][0], src["calcifications_per_cluster"][1] + 1)
    spread = rng.uniform(2.0, 5.0) / spacing_mm  # cluster sd: a cluster spans about a centimetre
    ys = np.clip(cy + rng.normal(0, spread, n), 0, shape[0] - 1)
    xs = np.clip(cx + rng.normal(0, spread, n), 0, shape[1] - 1)
    diameters_cm = rng.uniform(*src["calcification_diameter_mm"], n) / 10
    pixel_area_cm2 = (spacing_mm / 10) ** 2
    extra = np.zeros(shape)
    for y, x, d in zip(ys, xs, diameters_cm):
        # integral of the extra line integral over the image = delta-mu x speck volume
        volume = math.pi / 6 * d**3
        iy, ix = int(round(y)), int(round(x))
        extra[iy, ix] += (MU_CALCIFICATION - mu_local[iy, ix]) * volume / pixel_area_cm2
    from skimage.morphology import convex_hull_image

    points = np.zeros(shape, bool)
    points[ys.round().astype(int), xs.round().astype(int)] = True
    outline = ndimage.binary_dilation(convex_hull_image(points), iterations=max(1, int(1.0 / spacing_mm)))
    return extra, outline & breast


def simulate_view(rng: np.random.Generator, src: dict, view: str, patient: dict,
                  lesion: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(log-attenuation image, lesion mask, thickness in mm), chest wall at column 0."""
    shape = tuple(src["image_size"])
    spacing = src["pixel_spacing_mm"]
    breast, pectoral = breast_geometry(rng, shape, view)
    distance_mm = ndimage.distance_transform_edt(breast) * spacing
    thickness = patient["thickness_cm"]
    path = path_length_cm(distance_mm, thickness)
    skin = path - path_length_cm(distance_mm - SKIN_MM, thickness)
    beta = patient["beta"] + (0.13 if view == "MLO" else 0.0)  # Chen et al.: MLO about 0.13 steeper than CC
    gland = glandular_fraction(power_law_field(rng, shape, beta), patient["density"])
    gland *= np.clip(distance_mm / 8.0, 0, 1)  # subcutaneous fat: no glandular tissue under the skin
    interior = path - skin
    mu_local = MU_ADIPOSE * (1 - gland) + MU_GLANDULAR * gland
    attenuation = skin * MU_GLANDULAR + interior * mu_local
    if pectoral.any():
        attenuation = np.where(pectoral, path * MU_MUSCLE, attenuation)
    mask = np.zeros(shape, bool)
    if lesion == "mass":
        extra, mask = add_mass(rng, shape, spacing, breast & ~pectoral, gland, mu_local, src)
        attenuation += extra
    elif lesion == "calcifications":
        extra, mask = add_calcifications(rng, shape, spacing, breast & ~pectoral, gland, mu_local, src)
        attenuation += extra
    attenuation = ndimage.gaussian_filter(attenuation, 0.5)  # detector blur (a pixel-sized point spread)
    # exposure set so that the mean fluence behind the breast is the configured one
    behind = src["detector_quanta_per_mm2"] * spacing**2
    unattenuated = behind * np.exp(attenuation[breast].mean()) if breast.any() else behind
    counts = rng.poisson(unattenuated * np.exp(-attenuation))
    measured = -np.log(np.maximum(counts, 0.5) / unattenuated)
    return np.where(breast, for_presentation(measured, breast, spacing, src), 0.0), mask, thickness * 10


def for_presentation(log_signal: np.ndarray, breast: np.ndarray, spacing_mm: float, src: dict) -> np.ndarray:
    """Vendor-style processing of a For Presentation image: thickness equalisation.

    Units display images after removing part of the large-scale signal (the fall of thickness
    towards the skin line and broad density variations), which would otherwise use up the
    display range and hide small structures; this subtracts `equalisation` times the signal
    smoothed over `equalisation_scale_mm` (normalised convolution inside the breast), keeping
    the breast's mean level.
    """
    weight = src["equalisation"]
    if weight <= 0:
        return log_signal
    sigma = src["equalisation_scale_mm"] / spacing_mm
    inside = breast.astype(float)
    smooth = ndimage.gaussian_filter(log_signal * inside, sigma) / np.maximum(ndimage.gaussian_filter(inside, sigma), 1e-6)
    level = log_signal[breast].mean() if breast.any() else 0.0
    return log_signal - weight * (smooth - level)


def presentation_values(attenuation: np.ndarray) -> np.ndarray:
    """The rescaled (modality LUT) pixel values the simulator stores: dense = bright."""
    return 100.0 + 2000.0 * attenuation


def write_dicom(path: Path, image: np.ndarray, meta: dict) -> None:
    """A For Presentation MG image: log signal in `bits_stored` bits, with a modality LUT and a VOI window.

    meta: patient_id, laterality, view, thickness_mm, pixel_spacing_mm, bits_stored,
    rescale (slope, intercept) and monochrome1 (store inverted, "bright = low").
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    bits = meta["bits_stored"]
    top = 2**bits - 1
    slope, intercept = meta["rescale"]
    values = presentation_values(image)
    stored = np.clip(np.round((values - intercept) / slope), 0, top).astype(np.uint16)
    monochrome1 = meta["monochrome1"]
    if monochrome1:
        stored = (top - stored).astype(np.uint16)
    breast = image > 0
    lo, hi = np.percentile(values[breast], [0.5, 99.5]) if breast.any() else (0.0, float(top))
    uid = lambda *parts: generate_uid(entropy_srcs=[str(p) for p in parts])  # noqa: E731  deterministic UIDs

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    file_meta.MediaStorageSOPInstanceUID = uid(meta["patient_id"], meta["laterality"], meta["view"])
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID, ds.SOPInstanceUID = MG_FOR_PRESENTATION, file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(meta["patient_id"], "study")
    ds.SeriesInstanceUID = uid(meta["patient_id"], meta["laterality"], meta["view"], "series")
    ds.PatientID, ds.PatientName = meta["patient_id"], f"SIM^{meta['patient_id']}"
    ds.Modality, ds.BodyPartExamined, ds.PresentationIntentType = "MG", "BREAST", "FOR PRESENTATION"
    ds.ImageLaterality, ds.Laterality, ds.ViewPosition = meta["laterality"], meta["laterality"], meta["view"]
    ds.PatientOrientation = ["P", "L"] if meta["laterality"] == "R" else ["A", "R"]
    ds.BodyPartThickness = f"{meta['thickness_mm']:.1f}"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [meta["pixel_spacing_mm"]] * 2
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, bits, bits - 1, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
    ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.1f}", f"{max(hi - lo, 1):.1f}"
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


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
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> float:
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
    return best if np.isfinite(best) else 0.0
