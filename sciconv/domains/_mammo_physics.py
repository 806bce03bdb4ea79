"""The mammography simulator's anatomy (tissue texture, breast geometry, lesions as material
thicknesses), the unit's processing and its DICOM writer; the X-ray chain is in _mammo_xray.py.

Sources are in sciconv/domains/mammography.py's docstring and shared/science.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from sciconv.domains import _mammo_xray as xray

SKIN_MM = 1.5
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


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


def lesion_centre(rng, breast: np.ndarray, margin_px: int) -> tuple[int, int]:
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


def add_mass(rng, shape, spacing_mm, breast, src) -> tuple[np.ndarray, np.ndarray]:
    """Carcinoma thickness (cm) of a mass displacing the local tissue, and its mask.

    Round, oval or spiculated. Its contrast follows from carcinoma's attenuation against the
    tissue it displaces: a few percent where the tissue is dense, tens of percent in fat.
    """
    cy, cx = lesion_centre(rng, breast, int(12 / spacing_mm))
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
    mask = r2 <= 1
    if shape_kind == "spiculated":
        for _ in range(rng.integers(6, 14)):  # thin radiating strands of tumour tissue
            theta, length = rng.uniform(0, 2 * np.pi), diameter * rng.uniform(0.6, 1.2)
            t = np.linspace(diameter / 2 * 0.8, diameter / 2 + length, 64)
            ys, xs = (cy + t * np.sin(theta)).astype(int), (cx + t * np.cos(theta)).astype(int)
            keep = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
            strand = np.zeros(shape, bool)
            strand[ys[keep], xs[keep]] = True
            depth_cm = np.maximum(depth_cm, 0.3 * strand)  # ~3 mm deep strands
            mask |= ndimage.binary_dilation(strand)
    return depth_cm, mask & breast


def speck_thickness(shape, spacing_mm: float, ys, xs, diameters_cm) -> np.ndarray:
    """Chord length (cm) through each spherical speck, averaged over each pixel's area.

    Supersampled within the pixels a speck covers and rescaled so that the map integrates to
    the speck's exact volume: a 0.15 mm speck on a 0.3 mm pixel lands in one or a few pixels,
    a 0.5 mm one on 0.07 mm pixels is a disc seven pixels across.
    """
    thickness = np.zeros(shape)
    pixel_cm = spacing_mm / 10
    for y, x, d in zip(ys, xs, diameters_cm):
        radius_px = d / 2 / pixel_cm
        sub = int(np.clip(np.ceil(6 / max(2 * radius_px, 1e-3)), 3, 15))  # samples per pixel side
        reach = int(np.ceil(radius_px + 1))
        y0, x0 = max(int(y) - reach, 0), max(int(x) - reach, 0)
        y1, x1 = min(int(y) + reach + 1, shape[0]), min(int(x) + reach + 1, shape[1])
        if y1 <= y0 or x1 <= x0:
            continue
        offsets = (np.arange(sub) + 0.5) / sub - 0.5
        gy = (np.arange(y0, y1)[:, None] + offsets[None, :]).ravel()
        gx = (np.arange(x0, x1)[:, None] + offsets[None, :]).ravel()
        rho2 = (gy[:, None] - y) ** 2 + (gx[None, :] - x) ** 2
        chord = 2 * np.sqrt(np.clip(radius_px**2 - rho2, 0, None))
        local = chord.reshape(y1 - y0, sub, x1 - x0, sub).mean(axis=(1, 3))
        volume_px = math.pi / 6 * (2 * radius_px) ** 3  # in pixel units
        if local.sum() > 0:
            local *= volume_px / local.sum()
        else:  # smaller than the sampling: all of it in the pixel it sits in
            local[int(y) - y0, int(x) - x0] = volume_px
        thickness[y0:y1, x0:x1] += local * pixel_cm
    return thickness


def add_calcifications(rng, shape, spacing_mm, breast, src) -> tuple[np.ndarray, np.ndarray]:
    """Hydroxyapatite thickness (cm) of a cluster of specks, and the cluster outline."""
    cy, cx = lesion_centre(rng, breast, int(10 / spacing_mm))
    n = rng.integers(src["calcifications_per_cluster"][0], src["calcifications_per_cluster"][1] + 1)
    spread = rng.uniform(2.0, 5.0) / spacing_mm  # cluster sd: a cluster spans about a centimetre
    ys = np.clip(cy + rng.normal(0, spread, n), 0, shape[0] - 1)
    xs = np.clip(cx + rng.normal(0, spread, n), 0, shape[1] - 1)
    diameters_cm = rng.uniform(*src["calcification_diameter_mm"], n) / 10
    thickness = speck_thickness(shape, spacing_mm, ys, xs, diameters_cm)
    from skimage.morphology import convex_hull_image

    points = np.zeros(shape, bool)
    points[ys.round().astype(int), xs.round().astype(int)] = True
    outline = ndimage.binary_dilation(convex_hull_image(points), iterations=max(1, int(1.0 / spacing_mm)))
    return thickness, outline & breast


def simulate_view(rng: np.random.Generator, src: dict, view: str, patient: dict,
                  lesion: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(log signal image, lesion mask, thickness in mm), chest wall at column 0."""
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
    # thickness of each material along each ray, in xray.MATERIALS order
    layers = {"adipose": interior * (1 - gland), "glandular": interior * gland, "skin": skin,
              "muscle": np.where(pectoral, path, 0.0), "carcinoma": np.zeros(shape), "calcification": np.zeros(shape)}
    if pectoral.any():
        for name in ("adipose", "glandular", "skin"):
            layers[name] = np.where(pectoral, 0.0, layers[name])
    mask = np.zeros(shape, bool)
    if lesion:
        kind = "carcinoma" if lesion == "mass" else "calcification"
        add = add_mass if lesion == "mass" else add_calcifications
        depth, mask = add(rng, shape, spacing, breast & ~pectoral, src)
        depth = np.minimum(depth, interior)  # a lesion displaces the tissue it sits in
        layers[kind] = depth
        layers["adipose"] = np.clip(layers["adipose"] - depth * (1 - gland), 0, None)
        layers["glandular"] = np.clip(layers["glandular"] - depth * gland, 0, None)
    measured = xray.expose(rng, np.stack([layers[m] for m in xray.MATERIALS]), breast, src, thickness)
    return np.where(breast, for_presentation(measured, breast, spacing, src), 0.0), mask, thickness * 10


def detector_fluence_per_mm2(src: dict) -> float:
    """The mean quanta per mm^2 behind the breast at the given air kerma, at the effective energy."""
    if src.get("detector_quanta_per_mm2"):
        return float(src["detector_quanta_per_mm2"])
    return src["detector_air_kerma_ugy"] / 1000.0 * float(xray.fluence_per_air_kerma(src["effective_energy_kev"]))


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
    numerator, weight_sum = xray.wide_gaussian(np.stack([log_signal * inside, inside]), sigma)
    smooth = numerator / np.maximum(weight_sum, 1e-6)
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
