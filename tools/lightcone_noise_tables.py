"""Regenerate sciconv/domains/data/interferometers.json: the light-cone simulator's thermal-noise tables.

    pip install 21cmSense     # not a sciconv dependency (it pulls pyuvdata)
    python tools/lightcone_noise_tables.py

For each telescope and frequency, 21cmSense 3 (Pober et al. 2013, 2014; Murray et al. 2024) grids
the array's baselines over one night's observation of one patch (the track for a tracked array,
the beam crossing time for a drift scan) and gives the integration time per uv cell, the system
temperature (receiver 100 K plus sky 260 K (nu / 150 MHz)^-2.6, Mozdzen et al. 2017) and the beam's
effective solid angle. The table keeps, per frequency, the annulus mean of that time against |u|:
the simulator turns it into the noise power of each Fourier mode,
P_N(k_perp) = X^2 Y Omega T_sys^2 / (2 t(u)), for the nights a stated observing time gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FREQUENCIES_MHZ = [105, 120, 135, 150, 165, 180, 195, 210]  # z 12.5 to 5.8
HOURS_PER_NIGHT = 6.0


def telescopes():
    import astropy.units as un
    from py21cmsense import Observatory, antpos, beam

    return {
        # the SKA-Low core in 21cmSense's profile: 224 stations of 35 m, tracked for 6 h a night
        "SKA-Low": (Observatory.from_profile("SKA-LOW1-core"), {"track": HOURS_PER_NIGHT * un.hour}),
        # HERA's 320-dish split hexagonal core, 14 m dishes, 14.6 m apart, drift scanning
        "HERA": (Observatory(antpos=antpos.hera(hex_num=11, separation=14.6 * un.m, split_core=True),
                             beam=beam.GaussianBeam(dish_size=14 * un.m), latitude=-30.72 * un.deg,
                             Trcv=100 * un.K), {}),
    }


def one_night(observatory, frequency_mhz: float, extra: dict) -> dict:
    import astropy.units as un
    from py21cmsense import Observation

    obs = Observation(observatory=observatory, frequency=frequency_mhz * un.MHz, n_days=1,
                      time_per_day=HOURS_PER_NIGHT * un.hour, **extra)
    seconds = obs.total_integration_time.to_value("s")  # (u, v >= 0) grid, one night
    u, v = obs.ugrid, obs.vgrid if hasattr(obs, "vgrid") else obs.ugrid[len(obs.ugrid) // 2:]
    radius = np.hypot(u[:, None], v[None, : seconds.shape[1]])
    step = float(np.diff(u).mean())
    edges = np.arange(0, radius.max() + step, step)
    which = np.digitize(radius.ravel(), edges) - 1
    mean = np.bincount(which, weights=seconds.ravel(), minlength=len(edges) - 1)[: len(edges) - 1]
    count = np.bincount(which, minlength=len(edges) - 1)[: len(edges) - 1]
    from py21cmsense import conversions

    x2y = conversions.X2Y(obs.redshift, obs.cosmo, with_h=False).to_value("Mpc^3 / (sr MHz)")
    return {"frequency_mhz": frequency_mhz, "u_edges": edges.round(3).tolist(),
            # 21cmSense's own X^2 Y (Planck15), against which the simulator's cosmology is checked
            "x2y_mpc3_per_sr_mhz": float(x2y),
            "seconds_per_night": np.where(count > 0, mean / np.maximum(count, 1), 0).round(3).tolist(),
            "tsys_k": float(obs.Tsys.to_value("K")),
            "beam_solid_angle_sr": float(observatory.beam.b_eff(frequency_mhz * un.MHz).to_value("sr")),
            "patch_hours_per_night": float(obs.lst_bin_size.to_value("hour"))}


def main() -> None:
    import py21cmsense

    table = {"source": __doc__.strip().splitlines()[0], "generated_with": {"21cmSense": py21cmsense.__version__},
             "hours_per_night": HOURS_PER_NIGHT, "telescopes": {}}
    for name, (observatory, extra) in telescopes().items():
        table["telescopes"][name] = {"n_antennas": int(observatory.n_antennas),
                                     "nights": [one_night(observatory, f, extra) for f in FREQUENCIES_MHZ]}
        print(name, "done")
    out = Path(__file__).resolve().parents[1] / "sciconv/domains/data/interferometers.json"
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
