"""CCD detector frames: radioactive decays (tritium) among cosmic-ray tracks.

Everything CCD-specific lives here: the frame simulator, the preprocessing
(pedestal and gain), the augmentation defaults and the classical baseline.

The simulated device is a fully depleted, DAMIC-style scientific CCD.
Numbers and sources (see also shared/science.md):
  - 15 um square pixels, 675 um thick (DAMIC at SNOLAB).
  - 3.749 eV per electron-hole pair and Fano factor 0.119 in silicon at 123 K
    (Rodrigues et al. 2020, arXiv:2004.11499).
  - Lateral diffusion sigma^2 = -A ln|1 - b z| with z the drift distance; the
    DAMIC functional form (treated as unverified). A = 285 um^2, b = 8.2e-4 /um
    give sigma ~ 15 um (one pixel) at the back of a 675 um device.
  - Tritium: beta endpoint 18.6 keV, mean 5.7 keV; electron CSDA range in
    silicon of a few um (Katz-Penfold range-energy relation), far below a pixel,
    so tritium clusters are diffusion-limited points.
  - Muons: minimum ionising, ~80 e- per um of path in silicon, cos^2 zenith law per solid angle
    (cos^3 through the flat sensor).
  - Compton electrons: tens to hundreds of keV, multiple scattering (Highland)
    gives wandering "worms"; alphas: several MeV, round blobs broadened by the
    plasma effect (Estrada et al. 2011, arXiv:1105.3229).
Detector effects (Janesick, Scientific Charge-Coupled Devices, SPIE 2001; values approximate):
  - Charge-transfer inefficiency of about 1e-6 per transfer in a good scientific CCD: each transfer
    leaves that fraction behind, so a packet moved N times trails Poisson(N x CTI) pixels away from
    the readout, along columns (parallel) and rows (serial).
  - The pedestal wanders during readout; the serial overscan (pixels clocked past the last column,
    BIASSECn) holds it row by row, and preprocessing subtracts it row by row.
  - Full well of the order of 1e5 electrons per 15 um pixel; charge beyond it bleeds along the
    column (the channel stops keep it from neighbouring columns).
  - Particles crossing the serial register during readout leave streaks within one row.
"""

from __future__ import annotations

import math

import numpy as np

from sciconv.domains.base import Baseline
from astropy.io import fits
from skimage import filters, measure

from sciconv.domains._ccd_physics import (ALPHA, EV_PER_PAIR, FALLOUT_BETA, OTHER_POINT, TRACK, TRITIUM, sensor_defects,
                                          simulate_frame)

TASKS = ("segmentation",)
CLASS_NAMES = ["background", "tritium", "other_point", "track", "alpha"]
# a sample on the sensor (source.geometry: surface) adds the fallout isotopes' betas as a class of their own
SURFACE_CLASS_NAMES = CLASS_NAMES + ["fallout_beta"]


def class_names_for(cfg: dict, task: str) -> list[str]:
    """The classes this dataset's frames are labelled with: fallout betas only come from a surface sample."""
    return SURFACE_CLASS_NAMES if cfg["source"].get("geometry") == "surface" else CLASS_NAMES


_num = {"type": "number"}
_pos = {"type": "number", "exclusiveMinimum": 0}
_nonneg = {"type": "number", "minimum": 0}

SAMPLE_COUNT_KEY = "n_frames"  # the source key that says how many files the simulator writes

SCHEMAS = {
    "source": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["simulate"]},
            "n_frames": {"type": "integer", "minimum": 3, "default": 64},
            "frame_size": {"type": "array", "items": {"type": "integer", "minimum": 16},
                           "minItems": 2, "maxItems": 2, "default": [128, 128]},
            "pixel_size_um": {**_pos, "default": 15.0},
            "thickness_um": {**_pos, "default": 675.0},
            "gain_adu_per_e": {**_pos, "default": 2.0},
            "n_amplifiers": {"type": "integer", "minimum": 1, "maximum": 4, "default": 2},
            "pedestal_adu": {**_nonneg, "default": 1000.0,
                             "description": "mean pedestal; each amplifier is offset from it by up to 20%"},
            "readout_noise_e": {**_nonneg, "default": 2.0},
            "dark_current_e": {**_nonneg, "default": 0.05, "description": "mean dark electrons per pixel per exposure"},
            "n_hot_pixels": {"type": "integer", "minimum": 0, "default": 3},
            "hot_pixel_e": {**_nonneg, "default": 40.0},
            "hot_column_e": {**_nonneg, "default": 4.0, "description": "extra dark electrons per pixel in one hot column"},
            "fano_factor": {**_nonneg, "default": 0.119},
            "diffusion_a_um2": {**_nonneg, "default": 285.0},
            "diffusion_b_per_um": {**_nonneg, "default": 8.2e-4},
            "saturation_adu": {"type": "integer", "minimum": 255, "maximum": 65535, "default": 65535},
            "overscan_columns": {"type": "integer", "minimum": 0, "default": 16,
                                 "description": "serial overscan per amplifier: columns read past the pixels, holding "
                                                "the pedestal and noise only (BIASSECn); 0 writes none"},
            "pedestal_drift_adu": {**_nonneg, "default": 0.3,
                                   "description": "std of the pedestal's row-to-row random walk (the overscan follows it)"},
            "cti_parallel": {**_nonneg, "default": 1e-6,
                             "description": "charge-transfer inefficiency per parallel transfer (trails along columns)"},
            "cti_serial": {**_nonneg, "default": 1e-6,
                           "description": "charge-transfer inefficiency per serial transfer (trails along rows)"},
            "full_well_e": {**_pos, "default": 150000.0,
                            "description": "a pixel's capacity; charge beyond it bleeds along the column"},
            "serial_register_hits": {**_nonneg, "default": 0.2,
                                     "description": "Poisson mean of particles crossing the serial register per frame "
                                                    "(horizontal streaks in one row, unlabelled)"},
            "events_per_frame": {
                "type": "object", "additionalProperties": False,
                "description": "Poisson mean number of each event type per frame (rate x exposure x area)",
                "properties": {k: {**_nonneg, "default": v} for k, v in
                               {"tritium": 4.0, "xray": 3.0, "muon": 0.4, "electron": 1.0, "alpha": 0.15,
                                "cs137": 0.0, "sr90": 0.0}.items()},
            },
            "tritium_endpoint_kev": {**_pos, "default": 18.6},
            "geometry": {"type": "string", "enum": ["bulk", "surface"], "default": "bulk",
                         "description": "where the decays are: bulk (tritium through the silicon: internal or "
                                        "cosmogenic), or surface (a sample, such as fallout soil, on the back face: "
                                        "its betas enter through the dead layer; adds the class fallout_beta)"},
            "dead_layer_um": {**_nonneg, "default": 0.5,
                              "description": "surface: depth behind the back face where no charge is collected"},
            "partial_collection_um": {**_nonneg, "default": 2.0,
                                      "description": "surface: behind the dead layer, collection rises linearly to "
                                                     "full over this depth (a few um on an untreated back, under 1 "
                                                     "um on an optimised one: Fernandez-Moroni et al. 2020)"},
            "back_surface_collection": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
                                        "description": "surface: the share collected at the start of the partial "
                                                       "layer (0.21 over a 0.23 um implant measured by Stern et al. "
                                                       "1994: dead_layer_um 0, partial_collection_um 0.23)"},
            "xray_lines_kev": {"type": "array", "items": _pos, "minItems": 1, "default": [5.9]},
            "xray_attenuation_um": {**_pos, "default": 29.0,
                                    "description": "absorption length of the X-rays in Si (29 um at 5.9 keV); they enter from the back"},
            "muon_e_per_um": {**_pos, "default": 80.0},
            "electron_energy_kev": {"type": "array", "items": _pos, "minItems": 2, "maxItems": 2, "default": [30.0, 600.0]},
            "alpha_energy_mev": {"type": "array", "items": _pos, "minItems": 2, "maxItems": 2, "default": [4.0, 6.0]},
            "alpha_plasma_sigma_um": {**_nonneg, "default": 30.0},
            "label_threshold_e": {**_nonneg, "default": 5.0,
                                  "description": "a pixel belongs to an event when the event put at least this many electrons in it"},
        },
        "required": ["kind"],
    },
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "channels": {
                "type": "array", "minItems": 1,
                "description": "network input channels, each a view of the frame in electrons, like several "
                               "display windows in CT; the first must be asinh (the baseline reads charge from it)",
                "items": {
                    "type": "object", "additionalProperties": False, "required": ["kind", "scale_e", "max_e"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["asinh", "linear"]},
                        "scale_e": {**_pos, "description": "asinh: linear below this, logarithmic above; "
                                                           "linear: the unit (266.7 e- = 1 keV)"},
                        "max_e": {**_pos, "description": "charge per pixel is clipped here"},
                    },
                },
                # asinh(x / 20 e-) shows faint pixels near the noise and keeps alphas in range; a linear
                # channel in keV keeps cluster charge additive, so the energy of a cluster is a sum.
                "default": [{"kind": "asinh", "scale_e": 20.0, "max_e": 50000.0},
                            {"kind": "linear", "scale_e": 1000.0 / EV_PER_PAIR, "max_e": 20000.0 / EV_PER_PAIR}],
            },
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "flip": {"type": "boolean", "default": True},
            "rotate90": {"type": "boolean", "default": True},
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "baseline": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "low_sigma": {**_pos, "default": 3.0, "description": "hysteresis low threshold, in readout-noise sigmas"},
            "high_sigma": {**_pos, "default": 5.0},
            "point_max_length_px": {**_pos, "default": 8.0,
                                    "description": "longest point-like cluster; back-side X-rays (sigma ~1 px) reach ~7 px"},
            "min_energy_kev": {**_nonneg, "default": 0.25,
                               "description": "clusters below this are noise and hot pixels, not physics"},
            "xray_window_kev": {**_pos, "default": 0.6},
            "alpha_min_kev": {**_pos, "default": 1000.0},
            "xray_lines_kev": {"type": "array", "items": _pos, "default": [5.9]},
            "tritium_endpoint_kev": {**_pos, "default": 18.6},
            "straight_eccentricity": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.99,
                                      "description": "surface geometry: tracks at least this elongated are muons, "
                                                     "more winding ones the sample's betas"},
        },
    },
}

DEFAULTS = {
    # No feature normalisation: instance norm rescales every patch by its own statistics and so
    # erases the absolute charge scale, which is the energy; batch norm's running statistics,
    # gathered on event-centred patches, do not match whole frames at evaluation.
    # strides [1, 2, 2]: the first level stays at full resolution, where faint cluster edges
    # (single pixels a few electrons above the noise) are decided.
    "model": {"name": "unet", "channels": [16, 32, 64, 128], "strides": [1, 2, 2], "num_res_units": 1,
              "norm": "none"},
    "train": {"patch_size": [64, 64], "class_sampling_ratios": [1, 4, 2, 1, 1]},
}


def simulate(src: dict, out_dir, seed: int, progress=None) -> list[dict]:
    """Write n_frames FITS frames and their label masks under out_dir; return manifest rows."""
    from pathlib import Path

    out_dir = Path(out_dir)
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    defects = sensor_defects(src, rng)
    rows = []
    for i in range(src["n_frames"]):
        adu, mask, header = simulate_frame(src, rng, defects)
        name = f"frame_{i:05d}.fits"
        hdu = fits.PrimaryHDU(adu, header=fits.Header([(k, *v) for k, v in header.items()]))
        hdu.header["EXPNUM"] = (i, "exposure number")
        hdu.writeto(out_dir / "frames" / name, overwrite=True)
        fits.PrimaryHDU(mask).writeto(out_dir / "masks" / name, overwrite=True)
        rows.append({"image": f"frames/{name}", "mask": f"masks/{name}", "group": f"exposure{i:05d}"})
        if progress:
            progress(i + 1, src["n_frames"])
    return rows


# --------------------------------------------------------------------------- preprocessing
def amplifier_blocks(meta: dict, width: int) -> list[tuple[int, int]]:
    """Column ranges of each amplifier from the AMPSECn keywords (whole frame if absent)."""
    blocks = []
    for i in range(1, int(meta.get("NAMPS", 1)) + 1):
        section = meta.get(f"AMPSEC{i}")
        if not section:
            return [(0, width)]
        cols = section.strip("[]").split(",")[0].split(":")
        blocks.append((int(cols[0]) - 1, int(cols[1])))
    return blocks or [(0, width)]


def to_electrons(adu: np.ndarray, meta: dict) -> tuple[np.ndarray, float]:
    """Subtract each amplifier's pedestal and divide by its gain.

    The pedestal is the amplifier's overscan median row by row where the file has an overscan (the
    reader's OVERSCANn), so a pedestal that wanders during readout is followed; else the block's
    median (events cover well under 1% of pixels). Gains come from GAINn per amplifier (as an
    assembled multi-HDU file gives them), else GAIN. Returns electrons and the readout noise
    estimated from the MAD of the frame.
    """
    electrons = adu.astype(np.float64)
    for i, (c0, c1) in enumerate(amplifier_blocks(meta, electrons.shape[-1]), start=1):
        block = electrons[..., c0:c1]
        gain = float(meta.get(f"GAIN{i}", meta.get("GAIN", 1.0)))
        overscan = meta.get(f"OVERSCAN{i}", meta.get("OVERSCAN"))
        pedestal = overscan_pedestal(overscan)[:, None] if overscan is not None else np.median(block)
        electrons[..., c0:c1] = (block - pedestal) / gain
    noise = 1.4826 * np.median(np.abs(electrons - np.median(electrons)))
    return electrons, float(noise)


def overscan_pedestal(row_medians, rows: int = 5) -> np.ndarray:
    """Each row's pedestal: its overscan median averaged with its neighbours' over `rows` rows. One row's
    median of a few tens of overscan pixels is noisy (1.25 sigma / sqrt(n)); the pedestal wanders slowly,
    so a short running mean keeps the drift and cuts that noise by sqrt(rows)."""
    medians = np.asarray(row_medians, dtype=float)
    half = min(rows // 2, (len(medians) - 1) // 2)
    padded = np.pad(medians, half, mode="edge")
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def input_channels(cfg: dict) -> int:
    return len(cfg["preprocess"]["channels"])


def scale(electrons: np.ndarray, params: dict) -> np.ndarray:
    """(H, W) electrons -> (C, H, W) network input, one channel per configured view."""
    views = []
    for channel in params["channels"]:
        clipped = np.minimum(electrons, channel["max_e"]) / channel["scale_e"]
        if channel["kind"] == "asinh":
            views.append(np.arcsinh(clipped) / math.asinh(channel["max_e"] / channel["scale_e"]))
        else:
            views.append(clipped)
    return np.stack(views)


def unscale(scaled: np.ndarray, params: dict) -> np.ndarray:
    """Electrons back from the first channel of the network input (the baseline cuts on energy)."""
    first = params["channels"][0]
    value = scaled[0] * (math.asinh(first["max_e"] / first["scale_e"]) if first["kind"] == "asinh" else 1.0)
    return (np.sinh(value) if first["kind"] == "asinh" else value) * first["scale_e"]


# what the planner reports: charge has an absolute unit, so no per-image rescaling
NORMALISATION = "fixed physical scaling of charge in electrons (preprocess.channels: asinh and linear views), no per-image rescaling"


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    """(channels, mask unchanged, attrs): no geometry changes, so the mask stays as it is."""
    electrons, noise = to_electrons(image[0], meta)
    return scale(electrons, params).astype(np.float32), mask, {"noise_e": noise}


def augment_specs(params: dict) -> list[dict]:
    """Flips and 90-degree turns only: a CCD's pixels are square and its physics isotropic in the plane.

    No intensity jitter: the deposited charge is the energy, the cue that tells
    tritium from the 5.9 keV line; rescaling it would teach the net to ignore it.
    """
    out = []
    if params["flip"]:
        out += [{"kind": "flip", "prob": params["prob"], "axis": axis} for axis in (0, 1)]
    if params["rotate90"]:
        out.append({"kind": "rot90", "prob": params["prob"], "axes": [0, 1]})
    return out


# --------------------------------------------------------------------------- baseline
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    """Classical segmentation: hysteresis threshold, connected components, cuts on size, shape and energy.

    The usual hand-made analysis of CCD images: clusters above the noise; long
    ones are tracks, very energetic round ones alphas, point-like ones near an
    X-ray line are X-rays, remaining point-like ones below the tritium endpoint
    are tritium.
    """
    params = cfg["baseline"]
    electrons = unscale(image, cfg["preprocess"])
    noise = max(float(attrs.get("noise_e", 1.0)), 1e-3)
    mask = filters.apply_hysteresis_threshold(electrons, params["low_sigma"] * noise, params["high_sigma"] * noise)
    labels = measure.label(mask, connectivity=2)
    out = np.zeros(electrons.shape, dtype=np.uint8)
    lines = np.asarray(params["xray_lines_kev"], dtype=float)
    surface = cfg["source"].get("geometry") == "surface"
    for region in measure.regionprops(labels, intensity_image=electrons):
        energy_kev = region.image_intensity[region.image].sum() * EV_PER_PAIR / 1000.0
        length = region.axis_major_length if region.area > 1 else 1.0
        if energy_kev < params["min_energy_kev"]:
            continue
        if energy_kev >= params["alpha_min_kev"] and region.eccentricity < 0.9:
            cls = ALPHA
        elif length > params["point_max_length_px"]:
            # with a sample on the sensor, a winding track is taken for one of its betas; a straight one
            # (a muon) is not (the classical cut cannot tell a bulk Compton electron from a beta)
            cls = FALLOUT_BETA if surface and region.eccentricity < params["straight_eccentricity"] else TRACK
        elif np.min(np.abs(lines - energy_kev)) <= params["xray_window_kev"]:
            cls = OTHER_POINT
        elif energy_kev <= params["tritium_endpoint_kev"] * 1.1:  # 10%: the Fano and noise spread
            cls = TRITIUM
        else:
            cls = TRACK
        out[labels == region.label] = cls
    return Baseline(mask=out)
