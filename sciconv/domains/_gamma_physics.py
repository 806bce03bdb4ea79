"""Gamma-ray spectra in a scintillation detector (NaI(Tl) by default): the physics of the signals
domain's `gamma_spectra` generator, kept apart so that its numbers can be tested on their own.

One spectrum is the expected counts per channel of every emitted line's detector response, plus an
environmental background, drawn as Poisson counts. Numbers and sources (docs/science.md):
  - Line energies and emission probabilities per decay: NNDC NuDat 3 / LNHB recommended data
    (Cs-137 661.657 keV 85.1 %, Co-60 1173.228 and 1332.492 keV, Am-241 59.541 keV 35.9 %,
    Ba-133 356.013 keV 62.1 % and its 81, 276, 303, 384 keV lines, Co-57 122.061 keV 85.6 %,
    Na-22 1274.537 keV and 511 keV annihilation photons 180.7 %, K-40 1460.820 keV 10.66 %,
    the medical I-131 364.490 keV 81.5 % (8 keV from Ba-133's 356 keV line) and Tc-99m 140.511 keV
    88.5 % (4 keV from Co-57's 136 keV line): at NaI's resolution those pairs overlap).
  - Energy resolution of NaI(Tl): about 7 % FWHM at 662 keV, scaling as sqrt(662 / E) (photo-
    electron statistics; Knoll, Radiation Detection and Measurement, 4th ed., ch. 10).
  - Compton continuum: the Klein-Nishina distribution of the recoil electron's energy T for a
    photon of energy E, dsigma/dT ~ 2 + s^2 / (alpha^2 (1 - s)^2) + s / (1 - s) (s - 2 / alpha),
    s = T / E, alpha = E / m_e c^2, up to the Compton edge T_max = 2 E^2 / (m_e c^2 + 2 E)
    (477.3 keV for 662 keV); single scattering only, so the valley between edge and peak stays
    emptier than in a large crystal where photons scatter twice.
  - Backscatter peak at E / (1 + 2 alpha) (184 keV for 662 keV): photons scattered back into the
    crystal by the shield and the floor.
  - Interaction probability 1 - exp(-mu t) through the crystal's thickness t, mu from the mass
    attenuation of NaI (NIST XCOM, total with coherent, density 3.67 g/cm^3), and the photopeak's
    share of those interactions (peak-to-total), an approximate fit to Knoll's 3"x3" NaI curve:
    P/T = 1 / (1 + (E / 712 keV)^1.13) (0.52 at 662 keV, 0.33 at 1332 keV).
  - Point source on the detector axis at distance d from a crystal face of radius r: solid-angle
    fraction (1 - d / sqrt(d^2 + r^2)) / 2.
  - Environmental background: a continuum falling with energy plus the K-40 (1461 keV), Bi-214
    (609 keV) and Tl-208 (2614 keV) lines of soil and concrete, at a rate an unshielded 3"x3" crystal
    sees (tens of counts per second; approximate).
  - Below the lower-level discriminator (about 25 keV) nothing is counted; the gain drifts between
    spectra by a fraction of a percent (photomultiplier gain with temperature).
"""

from __future__ import annotations

import math

import numpy as np

ELECTRON_MASS_KEV = 510.999

# (energy keV, photons per decay): NNDC NuDat 3 / LNHB
ISOTOPES: dict[str, list[tuple[float, float]]] = {
    "Am241": [(59.541, 0.359)],
    "Ba133": [(80.998, 0.333), (276.399, 0.0716), (302.851, 0.1834), (356.013, 0.6205), (383.848, 0.0894)],
    "Co57": [(122.061, 0.856), (136.474, 0.1068)],
    "Co60": [(1173.228, 0.9985), (1332.492, 0.9998)],
    "Cs137": [(661.657, 0.851)],
    "I131": [(364.490, 0.815), (636.989, 0.0716), (284.305, 0.0612), (80.185, 0.0262)],
    "Na22": [(511.0, 1.807), (1274.537, 0.9994)],
    "K40": [(1460.820, 0.1066)],
    "Tc99m": [(140.511, 0.885)],
}

# the environment's lines, as shares of the background's counts (soil and concrete: K-40, the U and
# Th chains' Bi-214 and Tl-208); approximate
BACKGROUND_LINES = [(1460.820, 0.03), (609.312, 0.015), (2614.511, 0.01), (351.932, 0.01)]

# NaI mass attenuation (cm^2/g, total with coherent scattering), NIST XCOM
_NAI_ENERGY_KEV = np.array([30, 40, 50, 60, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 3000])
_NAI_MU_RHO = np.array([8.6, 18.2, 10.4, 6.1, 2.8, 1.59, 0.56, 0.30, 0.155, 0.111, 0.0915, 0.0805, 0.0675, 0.0590,
                        0.0525, 0.0480, 0.0425, 0.0370])
NAI_DENSITY = 3.67


def fwhm_kev(energy_kev, resolution_at_662: float = 0.07) -> np.ndarray:
    """Photopeak FWHM in keV: resolution_at_662 x 662 keV x sqrt(E / 662) (so the relative width falls
    as 1 / sqrt(E))."""
    energy = np.asarray(energy_kev, dtype=float)
    return resolution_at_662 * np.sqrt(661.657 * energy)


def compton_edge_kev(energy_kev: float) -> float:
    """The largest energy a Compton electron takes: 2 E^2 / (m c^2 + 2 E)."""
    return 2 * energy_kev**2 / (ELECTRON_MASS_KEV + 2 * energy_kev)


def backscatter_kev(energy_kev: float) -> float:
    """The energy of a photon scattered through 180 degrees: E / (1 + 2 E / m c^2)."""
    return energy_kev / (1 + 2 * energy_kev / ELECTRON_MASS_KEV)


def klein_nishina_electron(energy_kev: float, electron_kev: np.ndarray) -> np.ndarray:
    """dsigma/dT of the recoil electron (arbitrary units), zero above the Compton edge."""
    alpha = energy_kev / ELECTRON_MASS_KEV
    s = np.clip(np.asarray(electron_kev, dtype=float) / energy_kev, 0, 1 - 1e-9)
    shape = 2 + s**2 / (alpha**2 * (1 - s) ** 2) + s / (1 - s) * (s - 2 / alpha)
    return np.where(electron_kev <= compton_edge_kev(energy_kev), np.maximum(shape, 0), 0.0)


def interaction_probability(energy_kev: float, thickness_cm: float) -> float:
    mu = math.exp(np.interp(math.log(energy_kev), np.log(_NAI_ENERGY_KEV), np.log(_NAI_MU_RHO))) * NAI_DENSITY
    return 1 - math.exp(-mu * thickness_cm)


def peak_to_total(energy_kev: float) -> float:
    return 1 / (1 + (energy_kev / 712.0) ** 1.13)


def solid_angle_fraction(distance_cm: float, radius_cm: float) -> float:
    return 0.5 * (1 - distance_cm / math.hypot(distance_cm, radius_cm))


def _gaussian_bins(edges: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """The share of a normal distribution in each bin between edges (exact, through erf)."""
    from scipy.special import erf

    cdf = 0.5 * (1 + erf((edges - centre) / (sigma * math.sqrt(2))))
    return np.diff(cdf)


def smear(values: np.ndarray, energies: np.ndarray, resolution: float) -> np.ndarray:
    """A spectrum in fine energy bins convolved with the detector's energy-dependent resolution."""
    sigma = np.maximum(fwhm_kev(np.maximum(energies, 1.0), resolution) / 2.3548, 1e-6)
    step = energies[1] - energies[0]
    out = np.zeros_like(values)
    nonzero = np.flatnonzero(values > 0)
    for i in nonzero:  # each fine bin spread with its own width: the resolution varies along the spectrum
        half = int(5 * sigma[i] / step) + 1
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        kernel = np.exp(-0.5 * ((energies[lo:hi] - energies[i]) / sigma[i]) ** 2)
        out[lo:hi] += values[i] * kernel / kernel.sum()
    return out


class Detector:
    """A scintillation crystal, its electronics and its geometry, from the generator's settings."""

    def __init__(self, src: dict):
        self.channels = int(src["n_channels"])
        self.max_kev = float(src["max_energy_kev"])
        self.resolution = float(src["resolution_at_662"])
        self.thickness_cm = float(src["crystal_thickness_cm"])
        self.solid_angle = solid_angle_fraction(float(src["distance_cm"]), float(src["crystal_radius_cm"]))
        self.threshold_kev = float(src["threshold_kev"])
        self.backscatter = float(src["backscatter_fraction"])
        # the response is built on a grid 4x finer than the channels, then summed into channels
        self.fine = np.linspace(0, self.max_kev, 4 * self.channels + 1)
        self.fine_centres = 0.5 * (self.fine[1:] + self.fine[:-1])
        self._responses: dict[float, np.ndarray] = {}

    def line_response(self, energy_kev: float) -> np.ndarray:
        """line_response_uncached, kept per line: every spectrum of a data set reuses a few lines."""
        if energy_kev not in self._responses:
            self._responses[energy_kev] = self.line_response_uncached(energy_kev)
        return self._responses[energy_kev]

    def line_response_uncached(self, energy_kev: float) -> np.ndarray:
        """Expected counts per fine bin for one photon of energy E emitted towards the crystal (before the
        solid angle): photopeak, Compton continuum and backscatter peak, before resolution smearing for
        the continuum (the peaks are exact Gaussians)."""
        interacting = interaction_probability(energy_kev, self.thickness_cm)
        peak = interacting * peak_to_total(energy_kev)
        compton = interacting - peak
        sigma = fwhm_kev(energy_kev, self.resolution) / 2.3548
        response = peak * _gaussian_bins(self.fine, energy_kev, sigma)
        shape = klein_nishina_electron(energy_kev, self.fine_centres)
        if shape.sum() > 0:
            response += smear(compton * shape / shape.sum(), self.fine_centres, self.resolution)
        back = backscatter_kev(energy_kev)
        # backscattered photons come off a wide range of angles near 180 degrees: a broader peak
        response += self.backscatter * peak * _gaussian_bins(self.fine, back, 1.5 * fwhm_kev(back, self.resolution) / 2.3548)
        return response

    def background(self, counts: float, rng: np.random.Generator) -> np.ndarray:
        """Expected background counts per fine bin: a continuum falling with energy and the
        environment's lines, `counts` in all."""
        e = self.fine_centres
        continuum = np.exp(-e / float(rng.uniform(250, 400))) + 0.02 * np.exp(-e / 2000.0)
        continuum /= continuum.sum()
        out = (1 - sum(share for _, share in BACKGROUND_LINES)) * continuum
        for energy, share in BACKGROUND_LINES:
            if energy < self.max_kev:
                out += share * _gaussian_bins(self.fine, energy, fwhm_kev(energy, self.resolution) / 2.3548)
        return counts * out

    def to_channels(self, fine_counts: np.ndarray, gain: float) -> np.ndarray:
        """Fine bins summed into channels of width max_kev / channels x gain (a drifting gain stretches the
        spectrum), with nothing counted below the discriminator threshold."""
        fine_counts = np.where(self.fine_centres < self.threshold_kev, 0.0, fine_counts)
        channel_of = np.floor(self.fine_centres / (self.max_kev / self.channels) * gain).astype(int)
        keep = (channel_of >= 0) & (channel_of < self.channels)
        return np.bincount(channel_of[keep], fine_counts[keep], minlength=self.channels)


def expected_spectrum(detector: Detector, isotope: str | None, activity_bq: float, live_time_s: float,
                      background_cps: float, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Expected counts per channel of one measurement: the isotope's lines and the background."""
    fine = detector.background(background_cps * live_time_s, rng)
    for energy, per_decay in ISOTOPES.get(isotope, []) if isotope else []:
        emitted = activity_bq * per_decay * live_time_s * detector.solid_angle
        fine = fine + emitted * detector.line_response(energy)
    return detector.to_channels(fine, gain)
