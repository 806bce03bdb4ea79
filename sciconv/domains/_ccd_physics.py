"""The CCD simulator's physics: charge yield, diffusion, beta spectra, electron ranges, tracks and the frame.

Sources are in sciconv/domains/ccd.py's docstring and shared/science.md.
"""

from __future__ import annotations

import math

import numpy as np

TRITIUM, OTHER_POINT, TRACK, ALPHA, FALLOUT_BETA = 1, 2, 3, 4, 5

# Beta emitters of fallout soil, per decay: (endpoint keV, branching, daughter Z), and conversion
# electrons (keV, per decay). NNDC NuDat 3: Cs-137 -> Ba-137m 514.0 keV 94.4 %, -> Ba-137 1175.6 keV
# 5.6 %, the 661.7 keV transition's K conversion electron 624.2 keV 7.7 % (its gamma rarely stops in
# a thin sensor and is left out); Sr-90 546.0 keV -> Y-90 2280.1 keV, in secular equilibrium (one
# Y-90 decay per Sr-90 decay).
FALLOUT = {
    "cs137": {"betas": [(514.0, 0.944, 56), (1175.6, 0.056, 56)], "electrons": [(624.2, 0.077)]},
    "sr90": {"betas": [(546.0, 1.0, 39), (2280.1, 1.0, 40)], "electrons": []},
}
EV_PER_PAIR = 3.749  # eV per electron-hole pair in Si, Rodrigues et al. 2020
ELECTRON_MASS_KEV = 510.999
FINE_STRUCTURE = 1 / 137.036
SILICON_DENSITY = 2.33  # g/cm^3
SILICON_RADIATION_LENGTH_UM = 93_700.0  # X0 = 9.37 cm (PDG)
# Electrons of a few to tens of keV on silicon: about 17% backscatter, taking away about 60% of their
# energy (Tabata et al. 1971; Everhart 1960; approximate). Under SHORT_RANGE_UM an electron's path is
# shorter than a third of a pixel and is treated as a straight line (_Frame.short_track).
BACKSCATTER_SI, BACKSCATTER_KEPT, SHORT_RANGE_UM = 0.17, 0.4, 5.0


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


def sample_beta_energies(rng: np.random.Generator, n: int, endpoint_kev: float, daughter_z: int = 2) -> np.ndarray:
    grid = np.linspace(0, endpoint_kev, 4001)
    cdf = np.cumsum(beta_spectrum(grid, endpoint_kev, daughter_z))
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


def muon_cos_zenith(rng: np.random.Generator) -> float:
    """cos(zenith) of a cosmic-ray muon crossing a flat, horizontal sensor.

    The flux per solid angle goes as cos^2(theta) at sea level (PDG, "Cosmic rays", sec. 30.3); a
    horizontal surface sees it through its projected area, one more cos(theta), so the rate per unit
    cos(theta) goes as cos^3 and its inverse CDF is cos(theta) = U^(1/4) (mean 4/5). Zenith angles
    beyond 85 degrees, whose tracks would leave any frame, are clipped.
    """
    return min(max(rng.random() ** (1 / 4), math.cos(math.radians(85))), 1.0)


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
        """Straight track through the full thickness at a zenith angle drawn by muon_cos_zenith."""
        thick = self.src["thickness_um"]
        cos_t = muon_cos_zenith(self.rng)
        horizontal = thick * math.sqrt(1 - cos_t**2) / cos_t
        phi = self.rng.uniform(0, 2 * math.pi)
        x0, y0 = self.random_xy(margin_px=horizontal / self.pixel / 2)
        length = thick / cos_t
        n_steps = max(int(length / 2.0), 1)  # 2 um steps: finer than any diffusion scale
        t = (np.arange(n_steps) + 0.5) / n_steps
        n = self.rng.poisson(self.src["muon_e_per_um"] * length / n_steps, n_steps)
        self.deposit(x0 + t * horizontal * math.cos(phi), y0 + t * horizontal * math.sin(phi), t * thick, n, TRACK)

    def add_electron(self):
        """A Compton electron, starting anywhere in the bulk in any direction."""
        lo, hi = self.src["electron_energy_kev"]
        energy = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
        pos = np.array([*self.random_xy(), self.rng.uniform(0, self.src["thickness_um"])])
        direction = self.rng.normal(size=3)
        self.transport(energy, pos, direction / np.linalg.norm(direction), TRACK)

    def add_surface_electron(self, energy: float, label: int):
        """An electron from a decay in a layer on the back (illuminated) face: emitted isotropically, it
        enters the silicon when it heads inwards (half do; the rest leave into the sample), through the
        dead layer and the partially collecting one behind it."""
        direction = self.rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        direction[2] = -abs(direction[2])  # into the sensor from the back face at z = thickness
        pos = np.array([*self.random_xy(), self.src["thickness_um"]])
        if electron_range_um(energy) < SHORT_RANGE_UM:
            self.short_track(energy, pos, direction, label)
        else:
            self.transport(energy, pos, direction, label, collected=self.collection_efficiency)

    def short_track(self, energy: float, pos: np.ndarray, direction: np.ndarray, label: int):
        """An electron whose range is well under a pixel (tritium's betas: a few um): what matters is how
        deep its charge is freed, not its path, and multiple scattering on so short a path is beyond
        Highland's formula. Its energy is spent along a straight line into the silicon (more of it near
        the end, from the range-energy relation); with the backscattering probability of silicon it
        turns back out first, leaving BACKSCATTER_KEPT of its energy in half its range."""
        if energy < 0.2:  # 53 electrons at most: under any threshold, and below the range table
            return
        grid = np.geomspace(0.1, energy * 1.01, 256)
        ranges = electron_range_um(grid)
        total = float(np.interp(energy, grid, ranges))
        share = 1.0
        if self.rng.random() < BACKSCATTER_SI:
            total, share = total / 2, BACKSCATTER_KEPT
        along = np.linspace(total, 0, 11)
        spent = -np.diff(np.interp(along, ranges, grid)) * share
        middle = (along[:-1] + along[1:]) / 2
        points = pos[None] + (total - middle)[:, None] * direction[None]
        n = self.rng.binomial(ionisation_electrons(self.rng, spent, self.src["fano_factor"]),
                              self.collection_efficiency(points[:, 2]))
        self.deposit(points[:, 0], points[:, 1], points[:, 2], n, label)

    def collection_efficiency(self, z_um: np.ndarray) -> np.ndarray:
        """The share of the charge freed at z that reaches the gates: none in the back's dead layer,
        then rising linearly from back_surface_collection to full through the partial-charge-collection
        layer (the differential-CCE profile of Stern et al. 1994), all beyond."""
        depth = self.src["thickness_um"] - np.asarray(z_um, dtype=float)
        dead, partial = self.src["dead_layer_um"], self.src["partial_collection_um"]
        start = self.src["back_surface_collection"]
        rising = start + (1 - start) * np.clip((depth - dead) / max(partial, 1e-9), 0.0, 1.0)
        return np.where(depth < dead, 0.0, rising)

    def transport(self, energy: float, pos: np.ndarray, direction: np.ndarray, label: int, collected=None):
        """CSDA path with Highland multiple scattering, energy from the range table; steps of 5 um, or a
        tenth of the range for electrons of a few keV. It ends where the electron stops or leaves the
        sensor; `collected(z)` scales the charge each step frees."""
        grid = np.geomspace(0.1, max(self.src["electron_energy_kev"][1], energy) * 1.01, 512)
        ranges = electron_range_um(grid)
        residual = float(np.interp(energy, grid, ranges))
        step = min(5.0, residual / 10)
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
        if residual > 0 and 0 <= pos[2] <= self.src["thickness_um"]:  # the last part of a step stops here
            points.append(pos.copy())
            deposits.append(float(np.interp(residual, ranges, grid)))
        if points:
            pts = np.clip(np.array(points), [-1e9, -1e9, 0], [1e9, 1e9, self.src["thickness_um"]])
            n = ionisation_electrons(self.rng, np.array(deposits), self.src["fano_factor"])
            if collected is not None:
                n = self.rng.binomial(n, collected(pts[:, 2]))
            self.deposit(pts[:, 0], pts[:, 1], pts[:, 2], n, label)


def simulate_frame(src: dict, rng: np.random.Generator, defects: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One exposure: events, dark current, defects, readout noise, pedestals, gain and saturation.

    Returns (ADU frame as uint16, label mask, header keywords).
    """
    frame = _Frame(src, rng)
    add_events(frame, src, rng)
    adu, header = read_out(frame, src, rng, defects)
    return adu, frame.label, header


def add_events(frame: "_Frame", src: dict, rng: np.random.Generator) -> None:
    """Every event of one exposure, Poisson in number at events_per_frame."""
    rates = src["events_per_frame"]
    thick = src["thickness_um"]
    surface = src["geometry"] == "surface"
    for energy in sample_beta_energies(rng, rng.poisson(rates["tritium"]), src["tritium_endpoint_kev"]):
        if surface:  # tritium in the sample on the back face: its betas enter through the dead layer
            frame.add_surface_electron(energy, TRITIUM)
        else:
            frame.add_point(energy, rng.uniform(0, thick), TRITIUM)  # tritium is spread through the bulk
    for isotope, emissions in FALLOUT.items():
        for _ in range(rng.poisson(rates.get(isotope, 0.0))):
            # each decay chain's betas, and its conversion electrons by their probability
            for endpoint, branching, daughter_z in emissions["betas"]:
                if rng.random() < branching:
                    frame.add_surface_electron(float(sample_beta_energies(rng, 1, endpoint, daughter_z)[0]),
                                               FALLOUT_BETA)
            for energy, per_decay in emissions["electrons"]:
                if rng.random() < per_decay:
                    frame.add_surface_electron(energy, FALLOUT_BETA)
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


def read_out(frame: "_Frame", src: dict, rng: np.random.Generator, defects: dict) -> tuple[np.ndarray, dict]:
    """The exposed charge as the electronics deliver it: bleeding, transfer trails, serial-register hits,
    dark current, readout noise, the overscan, gain, pedestals and saturation; (ADU, header keywords)."""
    charge = bleed(frame.charge, src["full_well_e"], frame.label)
    charge = transfer_inefficiency(charge, src["cti_parallel"], src["cti_serial"], defects["amp_columns"])
    add_serial_register_hits(charge, rng, rng.poisson(src["serial_register_hits"]), src["muon_e_per_um"] * frame.pixel)
    dark = defects["dark_map"]
    electrons = charge + rng.poisson(dark) + rng.normal(0, src["readout_noise_e"], frame.shape)
    overscan = rng.normal(0, src["readout_noise_e"], (frame.shape[0], src["overscan_columns"] * len(defects["pedestals"])))
    # the electronics' pedestal wanders from row to row (a random walk): the same in a row's pixels and
    # in its overscan, which is why the overscan, not the frame's median, is the pedestal to subtract
    drift = np.cumsum(rng.normal(0, src["pedestal_drift_adu"], frame.shape[0]))[:, None]
    adu = electrons * src["gain_adu_per_e"]
    overscan_adu = overscan * src["gain_adu_per_e"]
    width = frame.shape[1]
    header = {
        "GAIN": (src["gain_adu_per_e"], "ADU per electron"),
        "RDNOISE": (src["readout_noise_e"], "readout noise [e-]"),
        "PIXSIZE": (src["pixel_size_um"], "pixel size [um]"),
        "THICK": (src["thickness_um"], "device thickness [um]"),
        "SATURATE": (src["saturation_adu"], "saturation level [ADU]"),
        "NAMPS": (len(defects["amp_columns"]), "amplifiers, each reading a block of columns"),
    }
    n_over = src["overscan_columns"]
    for i, ((c0, c1), pedestal) in enumerate(zip(defects["amp_columns"], defects["pedestals"]), start=1):
        offset = pedestal + rng.normal(0, 0.5) + drift  # and a small frame-to-frame pedestal step
        adu[:, c0:c1] += offset
        overscan_adu[:, (i - 1) * n_over: i * n_over] += offset
        header[f"AMPSEC{i}"] = (f"[{c0 + 1}:{c1},1:{frame.shape[0]}]", "FITS section read by amplifier")
        if n_over:
            first = width + (i - 1) * n_over
            header[f"BIASSEC{i}"] = (f"[{first + 1}:{first + n_over},1:{frame.shape[0]}]", f"overscan of amplifier {i}")
    if n_over:
        header["DATASEC"] = (f"[1:{width},1:{frame.shape[0]}]", "the exposed pixels; overscan beyond")
        adu = np.concatenate([adu, overscan_adu], axis=1)
    adu = np.clip(np.rint(adu), 0, src["saturation_adu"]).astype(np.uint16)
    return adu, header


def bleed(charge: np.ndarray, full_well_e: float, label: np.ndarray) -> np.ndarray:
    """Charge over a pixel's full well spills into its neighbours along the column (the channel stops
    hold it across columns), half up and half down, until every pixel holds at most the full well; the
    pixels it fills take the label of the pixel it came from."""
    out = charge.copy()
    for _ in range(10_000):
        rows, cols = np.nonzero(out > full_well_e)
        if not len(rows):
            return out
        for r, c in zip(rows, cols):
            excess = out[r, c] - full_well_e
            out[r, c] = full_well_e
            for neighbour in (r - 1, r + 1):
                if 0 <= neighbour < out.shape[0]:
                    out[neighbour, c] += excess / 2  # charge pushed past the frame's edge is lost
                    if label[neighbour, c] == 0:
                        label[neighbour, c] = label[r, c]
    return out


def transfer_inefficiency(charge: np.ndarray, parallel: float, serial: float, amp_columns) -> np.ndarray:
    """Charge-transfer inefficiency: every transfer leaves a fraction behind, which joins later packets,
    so charge trails away from the readout. After N transfers at inefficiency e the packet is spread over
    the following pixels as Poisson(N e) (the small-e limit of Binomial(N, e)). Rows move to the serial
    register at row 0 (N = row + 1), then each amplifier shifts its block of columns towards its outer
    edge (N = distance + 1)."""
    out = _trail(charge, parallel, np.arange(1, charge.shape[0] + 1), axis=0) if parallel > 0 else charge
    if serial <= 0:
        return out
    centre = charge.shape[1] / 2
    for c0, c1 in amp_columns:
        block = out[:, c0:c1]
        towards_left = (c0 + c1) / 2 < centre or len(amp_columns) == 1
        oriented = block if towards_left else block[:, ::-1]
        trailed = _trail(oriented, serial, np.arange(1, oriented.shape[1] + 1), axis=1)
        out[:, c0:c1] = trailed if towards_left else trailed[:, ::-1]
    return out


def _trail(charge: np.ndarray, inefficiency: float, transfers: np.ndarray, axis: int) -> np.ndarray:
    """Each pixel's charge spread to the pixels after it along `axis` (away from index 0, the readout)
    by Poisson(transfers x inefficiency) weights."""
    from scipy.stats import poisson

    moved = np.moveaxis(charge, axis, 0)
    lam = (transfers * inefficiency)[:, None]
    out = np.zeros_like(moved)
    for k in range(int(poisson.ppf(1 - 1e-9, lam.max())) + 1):
        share = poisson.pmf(k, lam) * moved
        out[k:] += share[: len(moved) - k] if k else share
    return np.moveaxis(out, 0, axis)


def add_serial_register_hits(charge: np.ndarray, rng: np.random.Generator, n_hits: int, e_per_pixel: float) -> None:
    """Particles crossing the serial register during readout: their charge is clocked out with one row,
    a horizontal streak of a few to tens of pixels. Not an event in the sensor: left unlabelled."""
    for _ in range(n_hits):
        row = rng.integers(0, charge.shape[0])
        length = int(rng.integers(3, 31))
        start = int(rng.integers(0, max(charge.shape[1] - length, 1)))
        charge[row, start:start + length] += rng.poisson(e_per_pixel, min(length, charge.shape[1] - start))


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
