"""The classical analysis of a gamma-ray spectrum, the signals domain's `peaks` baseline: a SNIP
background, a peak search by window significance and a match of the peaks to the isotope library."""

from __future__ import annotations

import math

import numpy as np


def snip_background(counts: np.ndarray, iterations: int) -> np.ndarray:
    """The SNIP background (Morhac et al. 1997, NIM A 401:113) through the LLS transform
    log(log(sqrt(y + 1) + 1) + 1): each pass lowers a bin to the mean of its neighbours m bins away."""
    v = np.log(np.log(np.sqrt(np.maximum(counts, 0) + 1) + 1) + 1)
    for m in range(iterations, 0, -1):  # decreasing window: the clipping of Ryan et al. 1988
        shifted = 0.5 * (np.roll(v, m) + np.roll(v, -m))
        shifted[:m], shifted[-m:] = v[:m], v[-m:]
        v = np.minimum(v, shifted)
    return (np.exp(np.exp(v) - 1) - 1) ** 2 - 1


def peak_features(signal: np.ndarray, attrs: dict, cfg: dict) -> np.ndarray:
    """Per library line: the significance of the net counts in its window; per isotope: the share of
    its emission (intensity-weighted) in lines where a peak was found; the log of the total counts.

    The peak search: in a window of one FWHM around every bin (the width the resolution gives at that
    energy), net counts over the SNIP background against their Poisson error; a peak is a local
    maximum of that significance above 4 sigma, the usual second-difference-free search of
    scintillator spectra."""
    from scipy.signal import find_peaks

    from sciconv.domains._gamma_physics import ISOTOPES, fwhm_kev

    params, pre = cfg["baseline"], cfg["preprocess"]
    kev = params["kev_per_bin"] or attrs.get("kev_per_bin")
    if not kev:
        raise ValueError("baseline.method peaks needs an energy calibration: the files' KEVPERCH keyword, or "
                         "baseline.kev_per_bin")
    counts = inverse_transform(signal, pre)
    resolution = params["resolution_at_662"]
    # SNIP clips to the minimum of neighbours, which Poisson noise biases low: smooth first, by half the
    # resolution's sigma, and clip over one FWHM (the width of what counts as a peak)
    from scipy.ndimage import gaussian_filter1d

    width = fwhm_kev(662, resolution) / kev
    background = snip_background(gaussian_filter1d(counts, max(1.0, width / 2.3548 / 2)), max(4, int(width)))

    def window_sums(values, lo, hi):
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        return cumulative[hi] - cumulative[lo]

    energies = (np.arange(len(counts)) + 0.5) * kev
    half = np.maximum(1, np.round(fwhm_kev(np.maximum(energies, 1.0), resolution) / (2 * kev))).astype(int)
    lo, hi = np.clip(np.arange(len(counts)) - half, 0, len(counts)), np.clip(np.arange(len(counts)) + half + 1, 0, len(counts))
    net = window_sums(counts - background, lo, hi)
    significance = net / np.sqrt(np.maximum(window_sums(counts, lo, hi), 1.0))
    peaks, _ = find_peaks(significance, height=4.0)
    found = energies[peaks]
    features = []
    library = params["isotopes"] or list(ISOTOPES)
    for isotope in library:
        matched = total = 0.0
        for energy, per_decay in ISOTOPES[isotope]:
            index = int(energy / kev)
            if not 0 <= index < len(counts):
                continue
            features.append(significance[index])
            total += per_decay
            matched += per_decay * bool(np.any(np.abs(found - energy) < 0.5 * fwhm_kev(energy, resolution)))
        features.append(matched / total if total else 0.0)
    features.append(math.log10(max(counts.sum(), 1.0)))
    return np.asarray(features, dtype=np.float32)


def inverse_transform(signal: np.ndarray, pre: dict) -> np.ndarray:
    """Counts back from a preprocessed spectrum (the peak search works on counts)."""
    if pre["normalize"] != "none":
        raise ValueError("baseline.method peaks needs counts: set preprocess.normalize: none")
    value = np.asarray(signal, dtype=np.float64) / pre["scale"]
    if pre["transform"] == "log":
        return np.expm1(value)
    if pre["transform"] == "sqrt":
        return value**2
    if pre["transform"] == "anscombe":
        return np.maximum((value / 2) ** 2 - 3 / 8, 0)
    return value
