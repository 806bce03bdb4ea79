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
  - Muons: minimum ionising, ~80 e- per um of path in silicon, cos^2 zenith law.
  - Compton electrons: tens to hundreds of keV, multiple scattering (Highland)
    gives wandering "worms"; alphas: several MeV, round blobs broadened by the
    plasma effect (Estrada et al. 2011, arXiv:1105.3229).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from skimage import filters, measure

TASKS = ("segmentation",)
CLASS_NAMES = ["background", "tritium", "other_point", "track", "alpha"]
TRITIUM, OTHER_POINT, TRACK, ALPHA = 1, 2, 3, 4

EV_PER_PAIR = 3.749  # eV per electron-hole pair in Si, Rodrigues et al. 2020
ELECTRON_MASS_KEV = 510.999
FINE_STRUCTURE = 1 / 137.036
SILICON_DENSITY = 2.33  # g/cm^3
SILICON_RADIATION_LENGTH_UM = 93_700.0  # X0 = 9.37 cm (PDG)

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
            "events_per_frame": {
                "type": "object", "additionalProperties": False,
                "description": "Poisson mean number of each event type per frame (rate x exposure x area)",
                "properties": {k: {**_nonneg, "default": v} for k, v in
                               {"tritium": 4.0, "xray": 3.0, "muon": 0.4, "electron": 1.0, "alpha": 0.15}.items()},
            },
            "tritium_endpoint_kev": {**_pos, "default": 18.6},
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


# --------------------------------------------------------------------------- physics
def diffusion_sigma_um(depth_um: np.ndarray, a_um2: float, b_per_um: float) -> np.ndarray:
    """Lateral diffusion after drifting depth_um to the gates: sigma^2 = -A ln|1 - b z| (DAMIC)."""
    return np.sqrt(-a_um2 * np.log(np.abs(1.0 - b_per_um * np.asarray(depth_um, dtype=float))))


def beta_spectrum(energy_kev: np.ndarray, endpoint_kev: float, daughter_z: int = 2) -> np.ndarray:
    """Allowed beta spectrum N(T) ~ F(Z, T) p E (Q - T)^2 with the non-relativistic Fermi function.

    For tritium the daughter is He-3 (Z = 2); this shape gives the measured mean of 5.7 keV.
    """
    t = np.asarray(energy_kev, dtype=float)
    e_total = t + ELECTRON_MASS_KEV
    p = np.sqrt(np.maximum(e_total**2 - ELECTRON_MASS_KEV**2, 1e-12))
    eta = FINE_STRUCTURE * daughter_z * e_total / p
    fermi = 2 * np.pi * eta / (1 - np.exp(-2 * np.pi * eta))
    return np.where((t > 0) & (t < endpoint_kev), fermi * p * e_total * (endpoint_kev - t) ** 2, 0.0)


def sample_beta_energies(rng: np.random.Generator, n: int, endpoint_kev: float) -> np.ndarray:
    grid = np.linspace(0, endpoint_kev, 4001)
    cdf = np.cumsum(beta_spectrum(grid, endpoint_kev))
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def electron_range_um(energy_kev: np.ndarray) -> np.ndarray:
    """CSDA range in silicon from the Katz-Penfold relation R = 0.412 T^(1.265 - 0.0954 ln T) g/cm^2 (T in MeV)."""
    t_mev = np.maximum(np.asarray(energy_kev, dtype=float) / 1000.0, 1e-4)
    grams_per_cm2 = 0.412 * t_mev ** (1.265 - 0.0954 * np.log(t_mev))
    return grams_per_cm2 / SILICON_DENSITY * 1e4


def ionisation_electrons(rng: np.random.Generator, energy_kev: np.ndarray, fano: float) -> np.ndarray:
    """Electron-hole pairs for a deposit: mean E / 3.749 eV, variance F x mean (Fano)."""
    mean = np.asarray(energy_kev) * 1000.0 / EV_PER_PAIR
    return np.maximum(np.rint(rng.normal(mean, np.sqrt(fano * mean + 1e-12))), 0).astype(np.int64)


class _Frame:
    """Accumulates events on a frame and the per-pixel label of the dominant event."""

    def __init__(self, src: dict, rng: np.random.Generator):
        self.src, self.rng = src, rng
        self.shape = tuple(src["frame_size"])
        self.pixel = src["pixel_size_um"]
        self.charge = np.zeros(self.shape, dtype=np.float64)
        self.label = np.zeros(self.shape, dtype=np.uint8)
        self.dominant = np.zeros(self.shape, dtype=np.float64)

    def deposit(self, x_um, y_um, z_um, n_electrons, label, extra_sigma_um=0.0):
        """Drift each packet of electrons to the gates, diffusing it by its depth, and bin into pixels."""
        n_electrons = np.asarray(n_electrons, dtype=np.int64)
        if n_electrons.sum() == 0:
            return
        sigma = np.hypot(diffusion_sigma_um(z_um, self.src["diffusion_a_um2"], self.src["diffusion_b_per_um"]),
                         extra_sigma_um)
        ex = np.repeat(np.asarray(x_um, dtype=float) * np.ones_like(sigma), n_electrons)
        ey = np.repeat(np.asarray(y_um, dtype=float) * np.ones_like(sigma), n_electrons)
        es = np.repeat(sigma, n_electrons)
        col = np.floor((ex + self.rng.normal(0, 1, ex.size) * es) / self.pixel).astype(np.int64)
        row = np.floor((ey + self.rng.normal(0, 1, ey.size) * es) / self.pixel).astype(np.int64)
        inside = (row >= 0) & (row < self.shape[0]) & (col >= 0) & (col < self.shape[1])
        event = np.bincount(row[inside] * self.shape[1] + col[inside],
                            minlength=self.shape[0] * self.shape[1]).reshape(self.shape)
        self.charge += event
        owns = (event >= self.src["label_threshold_e"]) & (event > self.dominant)
        self.label[owns] = label
        self.dominant = np.maximum(self.dominant, event)

    def random_xy(self, margin_px=0.0):
        h, w = self.shape
        return (self.rng.uniform(-margin_px, w + margin_px) * self.pixel,
                self.rng.uniform(-margin_px, h + margin_px) * self.pixel)

    def add_point(self, energy_kev, depth_um, label, extra_sigma_um=0.0):
        x, y = self.random_xy()
        n = ionisation_electrons(self.rng, np.array([energy_kev]), self.src["fano_factor"])
        self.deposit(np.array([x]), np.array([y]), np.array([depth_um]), n, label, extra_sigma_um)

    def add_muon(self):
        """Straight track through the full thickness; zenith angle from the cos^2 law (cos(theta) = U^(1/3))."""
        thick = self.src["thickness_um"]
        cos_t = min(max(self.rng.random() ** (1 / 3), math.cos(math.radians(85))), 1.0)
        horizontal = thick * math.sqrt(1 - cos_t**2) / cos_t
        phi = self.rng.uniform(0, 2 * math.pi)
        x0, y0 = self.random_xy(margin_px=horizontal / self.pixel / 2)
        length = thick / cos_t
        n_steps = max(int(length / 2.0), 1)  # 2 um steps: finer than any diffusion scale
        t = (np.arange(n_steps) + 0.5) / n_steps
        n = self.rng.poisson(self.src["muon_e_per_um"] * length / n_steps, n_steps)
        self.deposit(x0 + t * horizontal * math.cos(phi), y0 + t * horizontal * math.sin(phi), t * thick, n, TRACK)

    def add_electron(self):
        """A Compton electron: CSDA path with Highland multiple scattering, energy from the range table."""
        lo, hi = self.src["electron_energy_kev"]
        energy = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
        grid = np.geomspace(1.0, max(hi, energy) * 1.01, 512)
        ranges = electron_range_um(grid)
        residual = float(np.interp(energy, grid, ranges))
        step = 5.0
        pos = np.array([*self.random_xy(), self.rng.uniform(0, self.src["thickness_um"])])
        direction = self.rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        points, deposits = [], []
        while residual > step and 0 <= pos[2] <= self.src["thickness_um"]:
            e_now = float(np.interp(residual, ranges, grid))
            e_next = float(np.interp(residual - step, ranges, grid))
            pc = math.sqrt(e_now**2 + 2 * e_now * ELECTRON_MASS_KEV)
            beta = pc / (e_now + ELECTRON_MASS_KEV)
            theta0 = 13.6e3 / (beta * pc) * math.sqrt(step / SILICON_RADIATION_LENGTH_UM)
            direction = direction + self.rng.normal(0, theta0, 3)
            direction /= np.linalg.norm(direction)
            pos = pos + step * direction
            points.append(pos.copy())
            deposits.append(e_now - e_next)
            residual -= step
        if points:
            pts = np.clip(np.array(points), [-1e9, -1e9, 0], [1e9, 1e9, self.src["thickness_um"]])
            n = ionisation_electrons(self.rng, np.array(deposits), self.src["fano_factor"])
            self.deposit(pts[:, 0], pts[:, 1], pts[:, 2], n, TRACK)


def simulate_frame(src: dict, rng: np.random.Generator, defects: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One exposure: events, dark current, defects, readout noise, pedestals, gain and saturation.

    Returns (ADU frame as uint16, label mask, header keywords).
    """
    frame = _Frame(src, rng)
    rates = src["events_per_frame"]
    thick = src["thickness_um"]
    for energy in sample_beta_energies(rng, rng.poisson(rates["tritium"]), src["tritium_endpoint_kev"]):
        frame.add_point(energy, rng.uniform(0, thick), TRITIUM)  # tritium is spread through the bulk
    for _ in range(rng.poisson(rates["xray"])):
        line = rng.choice(src["xray_lines_kev"])
        depth = thick - min(rng.exponential(src["xray_attenuation_um"]), thick)  # absorbed near the back
        frame.add_point(line, depth, OTHER_POINT)
    for _ in range(rng.poisson(rates["muon"])):
        frame.add_muon()
    for _ in range(rng.poisson(rates["electron"])):
        frame.add_electron()
    for _ in range(rng.poisson(rates["alpha"])):
        # surface contamination on the back: the deposit sits at the back and diffuses most
        frame.add_point(rng.uniform(*src["alpha_energy_mev"]) * 1000.0, thick - 10.0, ALPHA,
                        extra_sigma_um=src["alpha_plasma_sigma_um"])

    dark = defects["dark_map"]
    electrons = frame.charge + rng.poisson(dark) + rng.normal(0, src["readout_noise_e"], frame.shape)
    adu = electrons * src["gain_adu_per_e"]
    for (c0, c1), pedestal in zip(defects["amp_columns"], defects["pedestals"]):
        adu[:, c0:c1] += pedestal + rng.normal(0, 0.5)  # small frame-to-frame pedestal drift
    adu = np.clip(np.rint(adu), 0, src["saturation_adu"]).astype(np.uint16)
    header = {
        "GAIN": (src["gain_adu_per_e"], "ADU per electron"),
        "RDNOISE": (src["readout_noise_e"], "readout noise [e-]"),
        "PIXSIZE": (src["pixel_size_um"], "pixel size [um]"),
        "THICK": (thick, "device thickness [um]"),
        "SATURATE": (src["saturation_adu"], "saturation level [ADU]"),
        "NAMPS": (len(defects["amp_columns"]), "amplifiers, each reading a block of columns"),
    }
    for i, (c0, c1) in enumerate(defects["amp_columns"], start=1):
        header[f"AMPSEC{i}"] = (f"[{c0 + 1}:{c1},1:{frame.shape[0]}]", "FITS section read by amplifier")
    return adu, frame.label, header


def sensor_defects(src: dict, rng: np.random.Generator) -> dict:
    """Properties of the device, the same in every frame: pedestals, hot pixels, a hot column."""
    h, w = src["frame_size"]
    edges = np.linspace(0, w, src["n_amplifiers"] + 1).astype(int)
    dark = np.full((h, w), src["dark_current_e"])
    dark[rng.integers(0, h, src["n_hot_pixels"]), rng.integers(0, w, src["n_hot_pixels"])] += src["hot_pixel_e"]
    dark[:, rng.integers(0, w)] += src["hot_column_e"]
    return {
        "amp_columns": list(zip(edges[:-1], edges[1:])),
        "pedestals": src["pedestal_adu"] * (1 + rng.uniform(-0.2, 0.2, src["n_amplifiers"])),
        "dark_map": dark,
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
    """Subtract each amplifier's pedestal (its median: events cover well under 1% of pixels) and divide by its gain.

    Gains come from GAINn per amplifier (as an assembled multi-HDU file gives them), else GAIN.
    Returns electrons and the readout noise estimated from the MAD of the frame.
    """
    electrons = adu.astype(np.float64)
    for i, (c0, c1) in enumerate(amplifier_blocks(meta, electrons.shape[-1]), start=1):
        block = electrons[..., c0:c1]
        gain = float(meta.get(f"GAIN{i}", meta.get("GAIN", 1.0)))
        electrons[..., c0:c1] = (block - np.median(block)) / gain
    noise = 1.4826 * np.median(np.abs(electrons - np.median(electrons)))
    return electrons, float(noise)


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
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> np.ndarray:
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
    for region in measure.regionprops(labels, intensity_image=electrons):
        energy_kev = region.image_intensity[region.image].sum() * EV_PER_PAIR / 1000.0
        length = region.axis_major_length if region.area > 1 else 1.0
        if energy_kev < params["min_energy_kev"]:
            continue
        if energy_kev >= params["alpha_min_kev"] and region.eccentricity < 0.9:
            cls = ALPHA
        elif length > params["point_max_length_px"]:
            cls = TRACK
        elif np.min(np.abs(lines - energy_kev)) <= params["xray_window_kev"]:
            cls = OTHER_POINT
        elif energy_kev <= params["tritium_endpoint_kev"] * 1.1:  # 10%: the Fano and noise spread
            cls = TRITIUM
        else:
            cls = TRACK
        out[labels == region.label] = cls
    return out
