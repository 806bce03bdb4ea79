"""Regenerate sciconv/domains/data/mammo_xray.json: the mammography simulator's X-ray tables.

    pip install spekpy xraydb        # not sciconv dependencies: SpekPy's wheel is 160 MB
    python tools/mammo_xray_tables.py

Spectra: SpekPy 2 (Poludniowski et al. 2021, Med Phys 48:3630), the tube's photon fluence per
keV for each target/filter at 24-35 kVp, behind a 1 mm beryllium window, the added filter and a
2 mm polycarbonate compression paddle, anode angle 16 degrees. Attenuation: each material's
mass attenuation coefficient (total, with coherent scattering) from the elements' Elam tables
(xraydb), mixed by weight fraction, times its density.

The simulator reads the file; it never needs either package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TARGET_FILTERS = {"Mo/Mo": ("Mo", "Mo", 0.030), "Mo/Rh": ("Mo", "Rh", 0.025), "W/Rh": ("W", "Rh", 0.050)}
KVPS = list(range(24, 36))
BIN_KEV = 0.5
EDGES = np.arange(5.0, 35.0 + BIN_KEV / 2, BIN_KEV)

# weight fractions (%) and densities (g/cm^3)
MATERIALS = {
    # Hammerstein et al. 1979, Radiology 130:485, the compositions breast dosimetry uses
    "adipose": ({"H": 11.2, "C": 61.9, "N": 1.7, "O": 25.1, "S": 0.025, "P": 0.025, "K": 0.025, "Ca": 0.025}, 0.93),
    "glandular": ({"H": 10.2, "C": 18.4, "N": 3.2, "O": 67.7, "S": 0.125, "P": 0.125, "K": 0.125, "Ca": 0.125}, 1.04),
    # ICRU Report 44
    "skin": ({"H": 10.0, "C": 20.4, "N": 4.2, "O": 64.5, "Na": 0.2, "P": 0.1, "S": 0.2, "Cl": 0.3, "K": 0.1}, 1.09),
    "muscle": ({"H": 10.2, "C": 14.3, "N": 3.4, "O": 71.0, "Na": 0.1, "P": 0.2, "S": 0.3, "Cl": 0.1, "K": 0.4}, 1.05),
    # hydroxyapatite Ca10(PO4)6(OH)2, the mineral of type II (malignancy-associated) calcifications
    "calcification": ({"Ca": 39.89, "P": 18.50, "O": 41.41, "H": 0.20}, 3.06),
    "aluminium": ({"Al": 100.0}, 2.699),
    "a-Se": ({"Se": 100.0}, 4.28),
    "CsI": ({"Cs": 51.15, "I": 48.85}, 4.51),
}


def mu_per_cm(composition: dict, density: float, energies_kev: np.ndarray) -> np.ndarray:
    import xraydb

    total = sum(composition.values())
    mass = sum(w / total * xraydb.mu_elam(z, energies_kev * 1000.0) for z, w in composition.items())
    return mass * density


def spectrum(target: str, filter_material: str, filter_mm: float, kvp: int) -> np.ndarray:
    """Fluence in each EDGES bin (photons per mAs per cm^2 at 1 m), from a 0.05 keV SpekPy grid."""
    import spekpy

    s = spekpy.Spek(kvp=kvp, th=16, targ=target, dk=0.05)
    s.multi_filter([("Be", 1.0), (filter_material, filter_mm), ("Polycarbonate (Makrolon or Lexan)", 2.0)])
    k, fluence = s.get_spectrum()
    return np.array([fluence[(k >= lo) & (k < hi)].sum() * 0.05 for lo, hi in zip(EDGES[:-1], EDGES[1:])])


def main() -> None:
    import spekpy
    import xraydb

    # attenuation at a bin's mean energy: the bins are narrow next to the K edges they straddle
    centres = (EDGES[:-1] + EDGES[1:]) / 2
    table = {
        "source": __doc__.strip().splitlines()[0],
        "generated_with": {"spekpy": spekpy.__version__, "xraydb": xraydb.__version__},
        "bin_edges_kev": EDGES.round(3).tolist(),
        "kvp": KVPS,
        "spectra": {name: {"target": t, "filter": f"{fm} {mm * 1000:g} um", "window": "Be 1 mm",
                           "paddle": "polycarbonate 2 mm",
                           "fluence": [spectrum(t, fm, mm, kvp).tolist() for kvp in KVPS]}
                    for name, (t, fm, mm) in TARGET_FILTERS.items()},
        "materials": {name: {"composition_wt_percent": comp, "density_g_cm3": rho,
                             "mu_per_cm": mu_per_cm(comp, rho, centres).round(6).tolist()}
                      for name, (comp, rho) in MATERIALS.items()},
        "hvl_mm_al_spekpy": {},
    }
    for name, (t, fm, mm) in TARGET_FILTERS.items():
        hvls = []
        for kvp in KVPS:
            s = spekpy.Spek(kvp=kvp, th=16, targ=t, dk=0.05)
            s.multi_filter([("Be", 1.0), (fm, mm), ("Polycarbonate (Makrolon or Lexan)", 2.0)])
            hvls.append(round(float(s.get_hvl1()), 4))
        table["hvl_mm_al_spekpy"][name] = hvls
    out = Path(__file__).resolve().parents[1] / "sciconv/domains/data/mammo_xray.json"
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
