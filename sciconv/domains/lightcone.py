"""21cm light-cones: reionization parameters from brightness-temperature light-cones in HDF5.

Everything light-cone-specific lives here: a small semi-numerical simulator with the
recipe of 21cmFAST, the preprocessing (clip and scale dTb, optional per-slice mean
removal, line-of-sight downsampling), augmentation that respects the line of sight, and
the classical baseline (the spherically averaged power spectrum in line-of-sight chunks).

Simulator, in order (numbers and sources; see also shared/science.md):
  - Planck-like cosmology h 0.678, Omega_m 0.31, Omega_b 0.049, sigma_8 0.81, n_s 0.965.
  - Linear matter power spectrum: BBKS transfer function (Bardeen et al. 1986) with shape
    Gamma = Omega_m h, normalised to sigma_8; a Gaussian random density field in a periodic box,
    grown with the linear growth factor D(z) (Carroll, Press & Turner 1992 approximation).
  - Excursion-set ionisation (Furlanetto et al. 2004; 21cmFAST, Mesinger et al. 2011): a cell
    is ionised when zeta f_coll(R) >= 1 at any top-hat scale R from R_max down to the cell,
    f_coll = erfc((delta_c - delta_R) / sqrt(2 (sigma_min^2 - sigma_R^2))) (extended
    Press-Schechter), partially ionised with x_HII = zeta f_coll at the cell scale otherwise.
    sigma_min belongs to the minimum halo mass of virial temperature T_vir (Barkana & Loeb 2001,
    in 21cmFAST's form).
    As in 21cmFAST, f_coll is normalised to the Sheth-Tormen mass function's global collapsed
    fraction (_cosmology.sheth_tormen_boost); without it reionization ran up to 8x later than 21cmFAST's.
    Compared with 21cmFAST in docs/science.md: x_HI within a factor 1.6; power near the grid's
    Nyquist wavenumber is higher here (no finer grid averaged down).
  - dTb = 27 x_HI (1 + delta) (Omega_b h^2 / 0.023) sqrt((0.15 / (Omega_m h^2)) (1 + z) / 10) mK,
    the spin-temperature-saturated limit.
  - Light-cone: coeval boxes at a ladder of redshifts, each line-of-sight slice taken at its
    comoving distance's redshift by interpolating the two boxes that bracket it; sky axes periodic.
  - Optional instrument (_interferometer.py): white noise per cell, or a named array's thermal
    noise per Fourier mode from its 21cmSense uv coverage with the modes it never samples removed;
    removal of the foreground wedge (the horizon limit k_par <= D_c H / (c (1 + z)) k_perp plus a
    buffer, in line-of-sight chunks; Parsons et al. 2012, Pober et al. 2014); removal of each
    frequency slice's mean.
  - With generator 21cmfast and spin_temperature: 21cmFAST's X-ray heating (L_X, E_0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sciconv.domains import _interferometer as interferometer
from sciconv.domains._interferometer import observed, wedge_slope  # noqa: F401  (wedge_slope: for the tests)
from sciconv.domains._lightcone_21cmfast import simulate_21cmfast
from sciconv.domains.base import Baseline
from scipy import special

# the cosmology lives in _cosmology.py; these names are re-exported for the physics tests
from sciconv.domains._cosmology import (  # noqa: F401
    DELTA_C, H, N_S, OMEGA_B, OMEGA_M, SIGMA_8, comoving_distance, growth_factor, lagrangian_radius,
    linear_power, minimum_halo_mass, redshift_at, sheth_tormen_boost, sigma_r, tophat_window,
)

TASKS = ("regression", "classification")
CLASS_NAMES = {"classification": ["late", "early"]}
TARGETS = ["zeta", "log10_tvir", "r_max"]
HEATING_TARGETS = ("log10_lx", "e0_ev")  # with source.spin_temperature (21cmFAST)

_pos = {"type": "number", "exclusiveMinimum": 0}
_prior = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}

SAMPLE_COUNT_KEY = "n_samples"  # the source key that says how many files the simulator writes

SCHEMAS = {
    "source": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["simulate"]},
            "generator": {"type": "string", "enum": ["builtin", "21cmfast"], "default": "builtin",
                          "description": "builtin: the numpy simulator here; 21cmfast: py21cmfast 4.x "
                                         "(pip install 'sciconv[cosmo]'), same priors and HDF5 layout"},
            "n_samples": {"type": "integer", "minimum": 3, "default": 120},
            "sky_cells": {"type": "integer", "minimum": 8, "default": 32},
            "cell_mpc": {**_pos, "default": 10.0, "description": "comoving cell size"},
            "z_min": {**_pos, "default": 6.0},
            "z_max": {**_pos, "default": 12.0},
            "n_coeval": {"type": "integer", "minimum": 2, "default": 10, "description": "coeval boxes along z"},
            "n_filter_scales": {"type": "integer", "minimum": 2, "default": 10},
            "zeta": {**_prior, "default": [10.0, 60.0]},
            "log10_tvir": {**_prior, "default": [4.0, 5.3]},
            "r_max": {**_prior, "default": [5.0, 25.0], "description": "ionising mean free path, Mpc"},
            "spin_temperature": {"type": "boolean", "default": False,
                                 "description": "generator 21cmfast: fluctuating spin temperature from X-ray heating "
                                                "(USE_TS_FLUCT), drawing log10_lx and e0_ev too; false: T_S >> T_CMB"},
            "log10_lx": {**_prior, "default": [38.0, 42.0],
                         "description": "log10 soft-band (< 2 keV) X-ray luminosity per star formation rate, "
                                        "erg/s per Msun/yr (21cmFAST's L_X; Greig & Mesinger 2017's prior)"},
            "e0_ev": {**_prior, "default": [100.0, 1500.0],
                      "description": "X-ray energy threshold for escaping the host galaxy, eV (21cmFAST's NU_X_THRESH)"},
            "noise_mk": {"type": "number", "minimum": 0, "default": 0.0,
                         "description": "white Gaussian noise per cell, mK (telescope gives an array's thermal noise)"},
            "telescope": {"type": "string", "enum": ["none", *interferometer.TELESCOPES], "default": "none",
                          "description": "thermal noise of a named array from 21cmSense (SKA-Low: its 224-station "
                                         "core tracking 6 h a night; HERA: its 320-dish core drift scanning), with "
                                         "the modes it never measures removed"},
            "observing_hours": {**_pos, "default": 1000.0,
                                "description": "total observing time at 6 h a night (telescope)"},
            "min_uv_coverage": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.05,
                                "description": "Fourier modes whose uv cells hold less than this fraction of the "
                                               "best-covered cells' integration time are left out, as an imaging "
                                               "taper would (telescope); 0 keeps every sampled mode"},
            "remove_slice_mean": {"type": "boolean", "default": False},
            "wedge": {"type": "string", "enum": ["none", "horizon"], "default": "none",
                      "description": "horizon: the Fourier modes inside the foreground wedge, k_par <= m(z) k_perp + "
                                     "wedge_buffer_per_mpc with the horizon slope m(z) = D_c H / (c (1 + z)), are "
                                     "removed in line-of-sight chunks as long as the box is wide, as foreground "
                                     "avoidance leaves a light-cone"},
            "wedge_buffer_per_mpc": {"type": "number", "minimum": 0, "default": 0.1,
                                     "description": "modes this much above the wedge are removed too (spectral leakage "
                                                    "of the foregrounds beyond the horizon)"},
            "early_if_neutral_below": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                                       "description": "classification: 'early' when the neutral fraction at "
                                                      "split_redshift is below this"},
            "split_redshift": {**_pos, "default": 8.0},
        },
    },
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "clip_mk": {**_prior, "default": [-250.0, 50.0]},
            "remove_slice_mean": {"type": "boolean", "default": False},
            "los_downsample": {"type": "integer", "minimum": 1, "default": 2},
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "flip": {"type": "boolean", "default": True},
            "rotate90": {"type": "boolean", "default": True},
            "roll": {"type": "boolean", "default": True, "description": "periodic shifts along the sky axes"},
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "baseline": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "los_chunks": {"type": "integer", "minimum": 1, "default": 4},
            "k_bins": {"type": "integer", "minimum": 2, "default": 6},
        },
    },
}

DEFAULTS = {
    "model": {"name": "densenet", "init_features": 16, "growth_rate": 8, "block_config": [2, 4, 4]},
    "train": {"epochs": 30, "batch_size": 8, "learning_rate": 0.001},
    "explain": {"n_samples": 2, "method": "hirescam"},
    "split": {"val_fraction": 0.15, "test_fraction": 0.2},
}


# --------------------------------------------------------------------------- fields
def wavenumbers(shape: tuple[int, ...], cell_mpc: float) -> np.ndarray:
    axes = [2 * np.pi * np.fft.fftfreq(n, d=cell_mpc) for n in shape[:-1]]
    axes.append(2 * np.pi * np.fft.rfftfreq(shape[-1], d=cell_mpc))
    grids = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def gaussian_density(rng: np.random.Generator, shape: tuple[int, ...], cell_mpc: float) -> np.ndarray:
    """Linear density contrast at z = 0 with power spectrum P(k), periodic box (Fourier-space draw)."""
    k = wavenumbers(shape, cell_mpc)
    volume = np.prod(shape) * cell_mpc ** len(shape)
    amplitude = np.sqrt(np.where(k > 0, linear_power(np.maximum(k, 1e-6)), 0.0) * volume) / cell_mpc ** len(shape)
    white = np.fft.rfftn(rng.standard_normal(shape)) / np.sqrt(np.prod(shape))
    return np.fft.irfftn(white * amplitude, s=shape, axes=range(len(shape)))


def smoothed_fields(delta_k: np.ndarray, k: np.ndarray, shape, cell_mpc: float, r_max: float,
                    n_scales: int) -> list[tuple[float, np.ndarray]]:
    """(R, z = 0 density smoothed with a top-hat of radius R) from R_max down to the cell, once per light-cone:
    linear growth only rescales them, so every coeval box reuses them."""
    cell_radius = cell_mpc * (3 / (4 * np.pi)) ** (1 / 3)  # the sphere of the cell's volume
    radii = np.geomspace(max(r_max, cell_radius * 1.01), cell_radius, n_scales)
    return [(float(r), np.fft.irfftn(delta_k * tophat_window(k * r), s=shape, axes=range(len(shape))).astype(np.float32)) for r in radii]


def ionised_fraction(smoothed: list[tuple[float, np.ndarray]], growth: float, zeta: float, t_vir: float,
                     z: float) -> np.ndarray:
    """x_HII of one coeval box (excursion set over the smoothed fields, largest scale first)."""
    sigma_min = sigma_r(lagrangian_radius(minimum_halo_mass(t_vir, z)))[0] * growth
    efficiency = zeta * sheth_tormen_boost(DELTA_C / sigma_min)  # normalised to the Sheth-Tormen mass function
    ionised = np.zeros(smoothed[0][1].shape, dtype=bool)
    x_cell = None
    for radius, delta_r in smoothed:
        spread = np.sqrt(2 * max(sigma_min**2 - (sigma_r(radius)[0] * growth) ** 2, 1e-8))
        f_coll = special.erfc(np.clip(DELTA_C - delta_r * growth, 0, None) / spread)
        ionised |= efficiency * f_coll >= 1
        x_cell = np.clip(efficiency * f_coll, 0, 1)
    return np.where(ionised, 1.0, x_cell)


def brightness_temperature(x_hi: np.ndarray, delta: np.ndarray, z: float) -> np.ndarray:
    """dTb in mK, spin temperature saturated (T_S >> T_CMB)."""
    return (27 * x_hi * (1 + delta) * (OMEGA_B * H**2 / 0.023)
            * np.sqrt(0.15 / (OMEGA_M * H**2) * (1 + z) / 10))


def simulate_lightcone(rng: np.random.Generator, src: dict, params: dict) -> tuple[np.ndarray, dict]:
    """(dTb light-cone (x, y, line of sight) in mK, attributes incl. slice redshifts and x_HI history)."""
    n, cell = src["sky_cells"], src["cell_mpc"]
    d_min, d_max = comoving_distance([src["z_min"], src["z_max"]])
    n_los = int((d_max - d_min) // cell)
    slice_z = redshift_at(d_min + cell * np.arange(n_los))
    shape = (n, n, n_los)
    delta0 = gaussian_density(rng, shape, cell)
    smoothed = smoothed_fields(np.fft.rfftn(delta0), wavenumbers(shape, cell), shape, cell, params["r_max"],
                               src["n_filter_scales"])
    coeval_z = np.linspace(src["z_min"], src["z_max"], src["n_coeval"])
    boxes, history = [], []
    for z in coeval_z:
        growth = float(growth_factor(z))
        x_hii = ionised_fraction(smoothed, growth, params["zeta"], 10 ** params["log10_tvir"], z)
        # the density a cell holds is its average over the cell (the cell-sized top-hat), as on a
        # grid averaged down from a finer one; the raw field would carry power up to Nyquist
        delta = np.clip(smoothed[-1][1] * growth, -0.99, None)
        boxes.append(brightness_temperature(1 - x_hii, delta, z))
        history.append(float(1 - x_hii.mean()))
    boxes = np.stack(boxes)  # (coeval, x, y, los)
    # each slice from the two coeval boxes around its redshift, weighted linearly in z
    upper = np.clip(np.searchsorted(coeval_z, slice_z), 1, len(coeval_z) - 1)
    weight = (slice_z - coeval_z[upper - 1]) / (coeval_z[upper] - coeval_z[upper - 1])
    cols = np.arange(n_los)
    cone = (1 - weight) * boxes[upper - 1, :, :, cols].transpose(1, 2, 0) + weight * boxes[upper, :, :, cols].transpose(1, 2, 0)
    cone = observed(cone, slice_z, src, rng)
    neutral_at_split = float(np.interp(src["split_redshift"], coeval_z, history))
    attrs = {"redshifts": slice_z.tolist(), "box_length_mpc": n * cell, "cell_mpc": cell,
             "cosmology": {"h": H, "omega_m": OMEGA_M, "omega_b": OMEGA_B, "sigma_8": SIGMA_8, "n_s": N_S},
             "coeval_redshifts": coeval_z.tolist(), "neutral_fraction": history,
             "neutral_fraction_at_split": neutral_at_split, **params}
    return cone.astype(np.float32), attrs


def write_lightcone(path: Path, cone: np.ndarray, attrs: dict) -> None:
    import h5py

    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        dataset = f.create_dataset("lightcone", data=cone, compression="gzip", shuffle=True)
        dataset.attrs["axes"] = "x, y, line of sight"
        for key, value in attrs.items():
            dataset.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    tmp.replace(path)


def sampled_parameters(src: dict) -> list[str]:
    """The parameters each light-cone is drawn with (and can be regressed on)."""
    return TARGETS + (list(HEATING_TARGETS) if src.get("spin_temperature") else [])


def check_config(cfg: dict) -> list[tuple[str, str]]:
    """(key, problem) pairs of settings that contradict each other or the generator's parameters."""
    problems = []
    src = cfg["source"]
    if src.get("kind") != "simulate":
        return problems
    if src["spin_temperature"] and src["generator"] != "21cmfast":
        problems.append(("source.spin_temperature", "the built-in generator has no X-ray heating (it assumes "
                                                    "T_S >> T_CMB): set source.generator: 21cmfast or drop the key"))
    if cfg["task"] == "regression":
        known = sampled_parameters(src)
        unknown = [t for t in cfg.get("targets") or [] if t not in known]
        if unknown:
            hint = (" (log10_lx and e0_ev need source.spin_temperature: true)"
                    if set(unknown) & set(HEATING_TARGETS) else "")
            problems.append(("targets", f"{', '.join(unknown)} not drawn by the simulator, which draws "
                                        f"{', '.join(known)}{hint}"))
    return problems


def simulate(src: dict, out_dir, seed: int, progress=None) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(src["n_samples"]):
        params = {name: float(rng.uniform(*src[name])) for name in sampled_parameters(src)}
        if src["generator"] == "21cmfast":
            cone, attrs = simulate_21cmfast(int(rng.integers(2**31)), src, params, out_dir / ".21cmfast-cache")
        else:
            cone, attrs = simulate_lightcone(rng, src, params)
        name = f"lightcone_{i:05d}.h5"
        write_lightcone(out_dir / name, cone, attrs)
        early = int(attrs["neutral_fraction_at_split"] < src["early_if_neutral_below"])
        rows.append({"image": name, "target": json.dumps(params), "label": early})
        if progress:
            progress(i + 1)
    return rows


# --------------------------------------------------------------------------- preprocessing
def input_channels(cfg: dict) -> int:
    return 1


NORMALISATION = "brightness temperature clipped to preprocess.clip_mk and scaled to [0, 1], one scale for all samples"


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    """Clip dTb to clip_mk and scale to [0, 1]; optionally remove each slice's mean; downsample the LOS."""
    cone = image[0].astype(np.float32)
    if params["remove_slice_mean"]:
        cone = cone - cone.mean(axis=(0, 1), keepdims=True)
    lo, hi = params["clip_mk"]
    cone = (np.clip(cone, lo, hi) - lo) / (hi - lo)
    step = params["los_downsample"]
    if step > 1:  # mean over consecutive slices: a coarser frequency channel
        n = cone.shape[2] // step * step
        cone = cone[:, :, :n].reshape(cone.shape[0], cone.shape[1], n // step, step).mean(-1)
    return cone[None], mask, {}


def augment_specs(params: dict) -> list[dict]:
    """Flips, 90-degree turns and periodic rolls in the sky plane only.

    The line of sight (the last axis) is also time: flipping or rotating it would run
    reionization backwards, so every transform here acts on axes 0 and 1 of (x, y, los).
    The sky plane of a simulation box is periodic, so a roll is a new, equally valid cone.
    """
    prob = params["prob"]
    out = []
    if params["flip"]:
        out += [{"kind": "flip", "prob": prob, "axis": axis} for axis in (0, 1)]
    if params["rotate90"]:
        out.append({"kind": "rot90", "prob": prob, "axes": [0, 1]})
    if params["roll"]:
        out.append({"kind": "roll", "prob": prob, "axes": [0, 1]})
    return out


# --------------------------------------------------------------------------- baseline
def power_spectrum_features(cone: np.ndarray, chunks: int, k_bins: int) -> np.ndarray:
    """log10 of the spherically averaged power spectrum in `chunks` line-of-sight chunks, `k_bins` each."""
    features = []
    for part in np.array_split(cone, chunks, axis=2):
        field = part - part.mean()
        power = np.abs(np.fft.fftn(field)) ** 2 / field.size
        k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n) for n in part.shape], indexing="ij")))
        edges = np.geomspace(1.0 / max(part.shape), 0.5, k_bins + 1)
        which = np.digitize(k.ravel(), edges) - 1
        sums = np.bincount(which[(which >= 0) & (which < k_bins)], power.ravel()[(which >= 0) & (which < k_bins)],
                           minlength=k_bins)
        counts = np.bincount(which[(which >= 0) & (which < k_bins)], minlength=k_bins)
        features.append(np.log10(sums / np.maximum(counts, 1) + 1e-12))
    return np.concatenate(features)


def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    """The power-spectrum feature vector: a regression fits a ridge on it, a classification a logistic
    regression (its mean amplitude is no score of its own)."""
    params = cfg["baseline"]
    return Baseline(features=power_spectrum_features(image[0], params["los_chunks"], params["k_bins"]))
