"""What a radio interferometer makes of the light-cone: thermal noise of a named array, the modes it
never measures, and the foreground wedge, applied together in Fourier space chunk by chunk along
the line of sight.

Thermal noise: each Fourier mode of a patch observed for t(u) seconds of baseline integration in
its uv cell carries noise power P_N = X^2 Y Omega T_sys^2 / (2 t(u)) (21cmSense's normalisation,
Pober et al. 2013), X^2 Y the comoving volume per steradian and MHz. The per-night t(u), T_sys and
the beam's solid angle come from 21cmSense (sciconv/domains/data/interferometers.json, regenerated
by tools/lightcone_noise_tables.py). A mode no baseline samples (beyond the longest baseline, or
k_perp = 0: no zero spacing) is not in the observed cone at all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from sciconv.domains._cosmology import C_KM_S, comoving_distance, hubble

TABLE = Path(__file__).parent / "data" / "interferometers.json"
NU_21_MHZ = 1420.405751768
TELESCOPES = ("SKA-Low", "HERA")


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(TABLE.read_text())


def _distance(z: float) -> float:
    return float(np.ravel(comoving_distance(np.array([z], float)))[0])


def x2y(z: float) -> float:
    """Comoving volume per steradian per MHz at redshift z (Mpc^3 / (sr MHz)): D_c^2 dD_c/dnu."""
    distance = _distance(z)
    per_mhz = C_KM_S * (1 + z) ** 2 / (float(hubble(z)) * NU_21_MHZ)
    return distance**2 * per_mhz


def wedge_slope(z) -> np.ndarray:
    """The horizon limit of the foreground wedge in (k_perp, k_par): D_c(z) H(z) / (c (1 + z)) (a source at
    the horizon; Parsons et al. 2012, Pober et al. 2014). About 3.5 at z = 8."""
    z = np.asarray(z, dtype=float)
    return comoving_distance(z).reshape(z.shape) * hubble(z) / (C_KM_S * (1 + z))


def noise_power(telescope: str, observing_hours: float, z: float, k_perp: np.ndarray,
                min_uv_coverage: float = 0.0) -> np.ndarray:
    """Thermal-noise power (mK^2 Mpc^3) of modes at k_perp (/Mpc) at redshift z; inf where unmeasured.

    Per-night integration, T_sys and beam are interpolated linearly in frequency between the
    tabulated ones; the nights are observing_hours / hours_per_night (6 h a night, 1000 h: 167 nights).
    Modes whose uv cells hold less than min_uv_coverage of the best-covered cells' time count as
    unmeasured: the sparse edge of the uv plane would otherwise carry most of the noise.
    """
    nights = table()["telescopes"][telescope]["nights"]
    frequencies = np.array([n["frequency_mhz"] for n in nights])
    nu = NU_21_MHZ / (1 + z)
    if not frequencies[0] <= nu <= frequencies[-1]:
        raise ValueError(f"z = {z:.2f} ({nu:.0f} MHz) is outside the {telescope} table's "
                         f"{frequencies[0]:g}-{frequencies[-1]:g} MHz; narrow source.z_min/z_max")
    i = min(int(np.searchsorted(frequencies, nu, side="right")) - 1, len(nights) - 2)
    w = (nu - frequencies[i]) / (frequencies[i + 1] - frequencies[i])
    u = np.asarray(k_perp) * _distance(z) / (2 * np.pi)  # wavelengths

    def seconds(night):
        edges, per_bin = np.asarray(night["u_edges"]), np.asarray(night["seconds_per_night"])
        which = np.digitize(u, edges) - 1
        inside = (which >= 0) & (which < len(per_bin))
        return np.where(inside, per_bin[np.clip(which, 0, len(per_bin) - 1)], 0.0)

    low, high = nights[i], nights[i + 1]
    t = ((1 - w) * seconds(low) + w * seconds(high)) * observing_hours / table()["hours_per_night"]
    best = max(max(low["seconds_per_night"]), max(high["seconds_per_night"])) * observing_hours / table()["hours_per_night"]
    t = np.where(t >= min_uv_coverage * best, t, 0.0)
    tsys_mk = 1000 * ((1 - w) * low["tsys_k"] + w * high["tsys_k"])
    omega = (1 - w) * low["beam_solid_angle_sr"] + w * high["beam_solid_angle_sr"]
    with np.errstate(divide="ignore"):
        power = x2y(z) * omega * tsys_mk**2 / (2 * t) * 1e-6  # MHz x s = 1e6
    return np.where((t > 0) & (np.asarray(k_perp) > 0), power, np.inf)


def observe(cone: np.ndarray, slice_z: np.ndarray, cell_mpc: float, rng: np.random.Generator,
            telescope: str | None = None, observing_hours: float = 1000.0, min_uv_coverage: float = 0.0,
            wedge_buffer_per_mpc: float | None = None) -> np.ndarray:
    """The cone as the array sees it, in chunks as long as the box is wide along the line of sight,
    each at its mean redshift: measured modes plus their thermal noise (telescope), then the modes
    inside the foreground wedge, k_par <= m k_perp + buffer, removed (wedge_buffer_per_mpc not None),
    which includes every k_par = 0 mode (each chunk's mean and smooth spectral structure)."""
    out = np.empty_like(cone, dtype=np.float64)
    n_sky, n_los = cone.shape[0], cone.shape[2]
    for start in range(0, n_los, n_sky):
        chunk = slice(start, min(start + n_sky, n_los))
        part = cone[:, :, chunk].astype(np.float64)
        z = float(np.mean(slice_z[chunk]))
        kx, ky, kz = (2 * np.pi * np.fft.fftfreq(n, d=cell_mpc) for n in part.shape)
        k_perp = np.hypot(kx[:, None, None], ky[None, :, None])
        modes = np.fft.fftn(part)
        if telescope:
            power = noise_power(telescope, observing_hours, z, k_perp, min_uv_coverage)
            measured = np.isfinite(power)
            # white noise of unit variance has |FFT|^2 = N per mode; a field of power P over cells of
            # volume dV has |FFT|^2 = N P / dV
            amplitude = np.sqrt(np.where(measured, power, 0.0) / cell_mpc**3)
            modes = (modes + np.fft.fftn(rng.standard_normal(part.shape)) * amplitude) * measured
        if wedge_buffer_per_mpc is not None:
            modes[np.abs(kz)[None, None, :] <= float(wedge_slope(z)) * k_perp + wedge_buffer_per_mpc] = 0
        out[:, :, chunk] = np.fft.ifftn(modes).real
    return out


def observed(cone: np.ndarray, slice_z: np.ndarray, src: dict, rng: np.random.Generator) -> np.ndarray:
    """The instrument and the analysis between the sky and the cone: white noise (noise_mk), a named
    array's thermal noise and unmeasured modes (telescope), the foreground wedge removed, each
    frequency slice's mean removed."""
    if src["noise_mk"] > 0:
        cone = cone + rng.normal(0, src["noise_mk"], cone.shape)
    telescope = None if src["telescope"] == "none" else src["telescope"]
    if telescope or src["wedge"] == "horizon":
        cone = observe(cone, slice_z, src["cell_mpc"], rng, telescope, src["observing_hours"], src["min_uv_coverage"],
                       src["wedge_buffer_per_mpc"] if src["wedge"] == "horizon" else None)
    if src["remove_slice_mean"]:
        cone = cone - cone.mean(axis=(0, 1), keepdims=True)
    return cone
